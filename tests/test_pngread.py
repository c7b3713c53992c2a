"""The fast PNG reader (attnviz.pngread) gives PIL's pixels, bit for bit, or leaves the file to
PIL: load_image's result and errors are the same whichever reads it."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

import attnviz.pngread as pngread
from attnviz.errors import ImageError
from attnviz.images import load_image, load_pil

RNG = np.random.default_rng(7)


def png(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def pil_pixels(source: object, size: int | None = None) -> torch.Tensor:
    """What PIL alone makes of ``source``: load_pil, PIL's resize, /255."""
    img = load_pil(source)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float() / 255


@pytest.fixture
def decodes(monkeypatch):
    """How many images the fast reader decoded."""
    calls = []
    real = pngread.decode

    def spy(data):
        out = real(data)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(pngread, "decode", spy)
    return calls


def with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with a chunk inserted after IHDR."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body))
    return data[:33] + chunk + data[33:]


def plain_files(tmp_path: Path) -> dict[str, Path]:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "made by a test")
    images = {
        "rgb": (Image.fromarray(RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)), {}),
        "grey": (Image.fromarray(RNG.integers(0, 256, (17, 23), dtype=np.uint8)), {}),
        "many IDAT chunks": (Image.fromarray(RNG.integers(0, 256, (300, 280, 3),
                                                          dtype=np.uint8)), {}),
        "with a text chunk": (Image.fromarray(RNG.integers(0, 256, (16, 16, 3),
                                                           dtype=np.uint8)), {"pnginfo": text}),
    }
    out = {}
    for name, (img, kw) in images.items():
        out[name] = tmp_path / f"{name}.png"
        out[name].write_bytes(png(img, **kw))
    return out


def test_plain_pngs_are_read_fast_with_pils_pixels(tmp_path, decodes):
    files = plain_files(tmp_path)
    data = files["many IDAT chunks"].read_bytes()
    assert data.count(b"IDAT") > 1
    for name, path in files.items():
        for size in (None, 24):  # also resized: PIL's resize of the same pixels
            got = load_image(path, size)
            assert got.is_contiguous() and got.dtype == torch.float32
            assert torch.equal(got, pil_pixels(path, size)), name
        assert torch.equal(load_image(path.read_bytes()), pil_pixels(path)), name
    assert decodes == [True] * (3 * len(files))


def test_pngs_pil_converts_are_left_to_pil(tmp_path, decodes):
    rgb = Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    rgb.putpixel((3, 3), (10, 20, 30))
    upright = Image.new("RGB", (16, 24), (0, 0, 0))
    upright.paste((255, 0, 0), (0, 0, 16, 4))  # red top band
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show upright
    xmp = (b'XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta><rdf:Description tiff:Orientation="3"/>'
           b'</x:xmpmeta>')
    cases = {
        "transparent colour": png(rgb, transparency=(10, 20, 30)),
        "EXIF orientation": png(upright, exif=exif.tobytes()),
        "XMP orientation": with_chunk(png(upright), b"iTXt", xmp),
        "16-bit": png(Image.new("I;16", (12, 12), 300)),
        "palette": png(rgb.convert("P")),
        "animated": png(rgb, save_all=True, append_images=[upright.resize((16, 16))]),
    }
    bad_crc = bytearray(with_chunk(png(rgb), b"tEXt", b"Comment\0hi"))
    bad_crc[33 + 8 + 9] ^= 1  # a changed byte of the text: its CRC no longer matches
    cases["bad CRC in a text chunk"] = bytes(bad_crc)
    for name, data in cases.items():
        assert pngread.plain_png(bytes(data)) is None, name
        path = tmp_path / f"{name}.png"
        path.write_bytes(bytes(data))
        try:
            want = pil_pixels(path)
        except ImageError as e:
            with pytest.raises(ImageError) as got:
                load_image(path)
            assert str(got.value) == str(e), name
            continue
        assert torch.equal(load_image(path), want), name
    assert decodes == []
    # the colour PIL composites on white is white, not (10, 20, 30)
    t = load_image(tmp_path / "transparent colour.png")
    assert t[:, 3, 3].tolist() == [1.0, 1.0, 1.0]


def test_damaged_plain_png_gets_pils_error(tmp_path):
    data = png(Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    idat = data.index(b"IDAT")
    damaged = bytearray(data)
    damaged[idat + 40] ^= 0xFF  # image data changed: its CRC no longer matches
    for name, bad in {"truncated": data[:idat + 200], "changed": bytes(damaged)}.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(bad)
        with pytest.raises(ImageError) as pil:
            load_pil(path)
        with pytest.raises(ImageError) as got:
            load_image(path)
        assert str(got.value) == str(pil.value) and name in str(got.value)


@pytest.mark.parametrize("missing", ["_decoder", "_POSIX_READS"])
def test_without_torchcodec_or_posix_reads_pil_reads_every_png(tmp_path, monkeypatch, decodes,
                                                                missing):
    monkeypatch.setattr(pngread, missing, None)
    for name, path in plain_files(tmp_path).items():
        assert torch.equal(load_image(path), pil_pixels(path)), name
    assert not any(decodes)


def _with_good_crcs(data: bytes) -> bytes:
    """``data`` with every whole chunk's CRC recomputed (damage only the decoders can see)."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        end = pos + 12 + int.from_bytes(out[pos:pos + 4], "big")
        if end > len(out):
            break
        out[end - 4:end] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4:end - 4])))
        pos = end
    return bytes(out)


SAMPLES = [png(Image.fromarray(RNG.integers(0, 256, (12, 12, 3), dtype=np.uint8))),
           png(Image.fromarray((np.arange(32 * 32 * 3) % 7).astype(np.uint8).reshape(32, 32, 3))),
           png(Image.fromarray(RNG.integers(0, 256, (16, 9), dtype=np.uint8)))]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SAMPLES))), st.data())
def test_damaged_image_data_same_outcome_as_pil(sample, draw):
    """Bytes of the image data changed (or cut), the chunks' CRCs made good again: the file
    still looks plain, so the fast reader decodes it; the outcome (the pixels, or an
    ImageError) is what PIL alone makes of it."""
    data = bytearray(SAMPLES[sample])
    for pos, value in draw.draw(st.lists(st.tuples(st.integers(33, len(data) - 13),
                                                   st.integers(0, 255)), min_size=1, max_size=4)):
        data[pos] = value
    if draw.draw(st.booleans()):  # cut short, too (then it is no longer plain: no IEND)
        data = data[:draw.draw(st.integers(40, len(data)))]
    data = _with_good_crcs(bytes(data))

    def outcome(fast: bool) -> torch.Tensor | str:
        real = pngread._load_decoder()
        pngread._decoder = real if fast else None
        try:
            return load_image(data)
        except ImageError:
            return "refused"
        finally:
            pngread._decoder = real

    fast, pil = outcome(True), outcome(False)
    if isinstance(fast, str) or isinstance(pil, str):
        assert fast == pil
    else:
        assert torch.equal(fast, pil)

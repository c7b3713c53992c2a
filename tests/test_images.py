"""attnviz.images: every supported mode converts correctly, every bad input is an ImageError.

The whole corpus is generated here (in memory or in tmp_path); no binary fixtures.
"""
from __future__ import annotations

import importlib.util
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

import attnviz.images as images
from attnviz.errors import ImageError, ParameterError
from attnviz.images import (
    MAX_BYTES,
    MAX_PIXELS,
    MIN_SIDE,
    check_upload,
    load_image,
    load_pil,
    to_numpy_image,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
PALETTE = [*RED, *BLUE] + [0] * (768 - 6)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def px(t: torch.Tensor, y: int = 0, x: int = 0) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in t[:, y, x].tolist())


def check_outcome(data: bytes) -> None:
    """Random input gives an ImageError or a valid image; nothing else escapes."""
    try:
        t = load_image(data)
    except ImageError as e:
        assert "<bytes>" in str(e)
        return
    assert t.dtype == torch.float32 and t.ndim == 3 and t.shape[0] == 3
    assert min(t.shape[1:]) >= MIN_SIDE
    assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1


def png_with_size(w: int, h: int) -> bytes:
    """A valid 8x8 PNG whose header claims w x h (what a decompression bomb looks like)."""
    data = bytearray(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def palette_image(size: tuple[int, int] = (16, 16)) -> Image.Image:
    """Left half index 1 (blue), right half index 0 (red)."""
    p = Image.new("P", size, 0)
    p.putpalette(PALETTE)
    p.paste(1, (0, 0, size[0] // 2, size[1]))
    return p


# -- conversions -----------------------------------------------------------------------------


def test_rgb_roundtrip_exact_and_shape(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    p = write(tmp_path, "rgb.png", encode(Image.fromarray(arr), "PNG"))
    for src in (p, str(p), p.read_bytes(), bytearray(p.read_bytes()), memoryview(p.read_bytes())):
        t = load_image(src)
        assert t.dtype == torch.float32 and t.shape == (3, 20, 30) and t.is_contiguous()
        assert torch.equal(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert load_pil(p).mode == "RGB" and load_pil(p).size == (30, 20)


def test_palette_pure_red_and_blue(tmp_path):
    t = load_image(write(tmp_path, "pal.png", encode(palette_image(), "PNG")))
    assert px(t, 0, 15) == (1.0, 0.0, 0.0)
    assert px(t, 0, 0) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_on_white(tmp_path, fmt):
    data = encode(palette_image(), fmt, transparency=0)  # red index transparent
    t = load_image(write(tmp_path, f"palt.{fmt.lower()}", data))
    assert px(t, 0, 15) == (1.0, 1.0, 1.0)
    assert px(t, 0, 0) == (0.0, 0.0, 1.0)


def test_grey_l_and_l_with_transparent_colour(tmp_path):
    t = load_image(write(tmp_path, "l.png", encode(Image.new("L", (16, 16), 128), "PNG")))
    assert torch.allclose(t, torch.full_like(t, 128 / 255))
    img = Image.new("L", (16, 16), 50)
    img.paste(0, (0, 0, 8, 16))
    t = load_image(write(tmp_path, "ltrns.png", encode(img, "PNG", transparency=50)))
    assert px(t, 0, 15) == (1.0, 1.0, 1.0) and px(t, 0, 0) == (0.0, 0.0, 0.0)


def test_la_composited_on_white(tmp_path):
    img = Image.new("LA", (16, 16), (0, 0))
    img.paste((0, 255), (0, 0, 8, 8))
    img.paste((0, 128), (8, 8, 16, 16))
    t = load_image(write(tmp_path, "la.png", encode(img, "PNG")))
    assert px(t, 15, 0) == (1.0, 1.0, 1.0)  # alpha 0 -> white
    assert px(t, 0, 0) == (0.0, 0.0, 0.0)  # opaque black
    assert abs(t[0, 15, 15].item() - 127 / 255) < 0.01  # half alpha -> half grey


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 8, 16))
    img.paste((0, 0, 255, 128), (8, 0, 16, 8))
    t = load_image(write(tmp_path, "rgba.png", encode(img, "PNG")))
    assert px(t, 0, 0) == (1.0, 0.0, 0.0)
    assert px(t, 15, 15) == (1.0, 1.0, 1.0)
    r, g, b = t[:, 0, 15].tolist()
    assert abs(r - 0.5) < 0.01 and abs(g - 0.5) < 0.01 and b == 1.0


def test_pa_and_premultiplied_from_pil():
    img = Image.new("PA", (16, 16), (1, 255))
    img.putpalette(PALETTE)
    img.paste((0, 0), (0, 0, 8, 16))
    t = load_image(img)
    assert px(t, 0, 0) == (1.0, 1.0, 1.0) and px(t, 0, 15) == (0.0, 0.0, 1.0)
    t = load_image(Image.new("RGBa", (16, 16), (0, 255, 0, 255)))
    assert px(t) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16B", "TIFF"), ("I;16", "TIFF")])
def test_16_bit_scaled(tmp_path, mode, fmt):
    arr = np.zeros((16, 16), np.uint16)
    arr[:, :8] = 65535
    arr[:8, 8:] = 32768
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (16, 16), arr.astype(dtype).tobytes())
    p = write(tmp_path, f"g16.{fmt.lower()}", encode(img, fmt))
    assert Image.open(p).mode == mode
    t = load_image(p)
    assert px(t, 0, 0) == (1.0, 1.0, 1.0)
    assert px(t, 15, 15) == (0.0, 0.0, 0.0)
    assert t[0, 0, 15].item() == pytest.approx(128 / 255)


def test_i_mode_16_bit_range_and_stretched(tmp_path):
    img = Image.new("I", (16, 16), 0)
    img.paste(65535, (0, 0, 8, 16))
    t = load_image(write(tmp_path, "i.tif", encode(img, "TIFF")))
    assert px(t, 0, 0) == (1.0, 1.0, 1.0) and px(t, 0, 15) == (0.0, 0.0, 0.0)
    img = Image.new("I", (16, 16), -1000)
    img.paste(200_000, (0, 0, 8, 16))
    t = load_image(write(tmp_path, "iwide.tif", encode(img, "TIFF")))
    assert px(t, 0, 0) == (1.0, 1.0, 1.0) and px(t, 0, 15) == (0.0, 0.0, 0.0)


def test_f_mode_ranges_and_nan(tmp_path):
    t = load_image(write(tmp_path, "f01.tif", encode(Image.new("F", (16, 16), 0.5), "TIFF")))
    assert t[0, 0, 0].item() == pytest.approx(128 / 255)
    t = load_image(Image.new("F", (16, 16), 255.0))
    assert px(t) == (1.0, 1.0, 1.0)
    arr = np.linspace(-5, 5, 256, dtype=np.float32).reshape(16, 16)
    arr[0, 0] = np.nan
    t = load_image(Image.fromarray(arr))  # mode F
    assert px(t) == (0.0, 0.0, 0.0) and px(t, 15, 15) == (1.0, 1.0, 1.0)
    assert torch.isfinite(t).all()


def test_cmyk(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    img.paste((0, 255, 255, 0), (0, 0, 8, 16))
    t = load_image(write(tmp_path, "cmyk.tif", encode(img, "TIFF")))
    assert px(t, 0, 0) == (1.0, 0.0, 0.0) and px(t, 0, 15) == (1.0, 1.0, 1.0)
    p = write(tmp_path, "cmyk.jpg", encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    assert Image.open(p).mode == "CMYK"
    r, g, b = load_image(p)[:, 8, 8].tolist()
    assert r > 0.95 and g < 0.05 and b < 0.05


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_one_bit(tmp_path, fmt):
    img = Image.new("1", (16, 16), 0)
    img.paste(1, (0, 0, 8, 16))
    t = load_image(write(tmp_path, f"bw.{fmt.lower()}", encode(img, fmt)))
    assert px(t, 0, 0) == (1.0, 1.0, 1.0) and px(t, 0, 15) == (0.0, 0.0, 0.0)
    assert set(t.unique().tolist()) == {0.0, 1.0}


def test_lab_ycbcr_hsv():
    assert min(px(load_image(Image.new("LAB", (16, 16), (255, 128, 128))))) > 0.98
    assert px(load_image(Image.new("HSV", (16, 16), (0, 255, 255)))) == (1.0, 0.0, 0.0)
    assert px(load_image(Image.new("YCbCr", (16, 16), (255, 128, 128)))) == (1.0, 1.0, 1.0)


def test_exif_orientation_6_rotates(tmp_path):
    img = Image.new("RGB", (48, 24), RED)  # stored: left half red, right half blue
    img.paste(BLUE, (24, 0, 48, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    p = write(tmp_path, "phone.jpg", encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    t = load_image(p)
    assert t.shape == (3, 48, 24)  # width and height swapped
    assert t[0, :20].mean() > 0.9 and t[2, :20].mean() < 0.1  # 90° clockwise: top is red
    assert t[2, 28:].mean() > 0.9 and t[0, 28:].mean() < 0.1
    assert load_pil(p).size == (24, 48)
    exif[0x0112] = 1
    assert load_image(encode(img, "JPEG", exif=exif.tobytes())).shape == (3, 24, 48)


@pytest.mark.parametrize(("fmt", "kw"), [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True}),
                                         ("TIFF", {})])
def test_multi_frame_gives_first_frame(tmp_path, fmt, kw):
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)
    p = write(tmp_path, f"anim.{fmt.lower()}", data)
    assert getattr(Image.open(p), "n_frames", 1) == 3
    assert px(load_image(p)) == (1.0, 0.0, 0.0)


def test_resize_and_pil_source_untouched():
    img = Image.new("RGBA", (40, 20), (0, 0, 255, 255))
    t = load_image(img, size=32)
    assert t.shape == (3, 32, 32) and px(t, 16, 16) == (0.0, 0.0, 1.0)
    assert img.mode == "RGBA" and img.size == (40, 20)
    out = load_pil(img)
    assert out is not img and out.mode == "RGB"
    rgb = Image.new("RGB", (16, 16), RED)
    assert load_pil(rgb) is not rgb
    assert load_image(rgb, size=16).shape == (3, 16, 16)
    t = load_image(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (64, 1))),
                   size=16)
    assert t.shape == (3, 16, 16) and 0 <= t.min() and t.max() <= 1


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "64", 100_000])
def test_bad_size(size):
    with pytest.raises(ParameterError):
        load_image(Image.new("RGB", (16, 16)), size=size)


def test_min_side_ok_and_bad_source_type():
    assert load_image(Image.new("RGB", (MIN_SIDE, MIN_SIDE))).shape == (3, MIN_SIDE, MIN_SIDE)
    for bad in (42, None, torch.zeros(3, 8, 8), [b"x"]):
        with pytest.raises(ParameterError):
            load_image(bad)


def test_to_numpy_image():
    t = torch.rand(3, 5, 7) * 1.4 - 0.2
    a = to_numpy_image(t)
    assert a.shape == (5, 7, 3) and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert np.allclose(a, t.clamp(0, 1).permute(1, 2, 0).numpy())
    assert to_numpy_image(t[None]).shape == (5, 7, 3)
    assert to_numpy_image(torch.rand(1, 5, 7)).shape == (5, 7, 3)
    assert to_numpy_image(torch.rand(5, 7, requires_grad=True)).shape == (5, 7, 3)
    for bad in (torch.rand(2, 3, 4, 4), torch.rand(4, 5, 5), np.zeros((5, 5, 3))):
        with pytest.raises(ParameterError):
            to_numpy_image(bad)


# -- failures: each an ImageError naming the file ---------------------------------------------


def raises_naming(source, name: str, *words: str) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source)
    msg = str(info.value)
    assert name in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


def test_missing_directory_empty(tmp_path):
    raises_naming(tmp_path / "nope.jpg", "nope.jpg", "no such file")
    raises_naming(str(tmp_path / "nope.jpg"), "nope.jpg", "no such file")
    (tmp_path / "folder.png").mkdir()
    raises_naming(tmp_path / "folder.png", "folder.png", "folder")
    raises_naming(write(tmp_path, "empty.jpg", b""), "empty.jpg", "empty")
    raises_naming(b"", "<bytes>", "empty")
    with pytest.raises(ImageError, match="empty"):
        load_image("")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "BMP"])
def test_truncated(tmp_path, fmt):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr), fmt)
    name = f"cut.{fmt.lower()}"
    raises_naming(write(tmp_path, name, data[: len(data) * 2 // 3]), name, "truncated")
    raises_naming(data[: len(data) // 2], "<bytes>", "truncated")


def test_not_an_image(tmp_path):
    raises_naming(write(tmp_path, "notes.png", b"just some text\n" * 20), "notes.png",
                  "not an image")
    page = b"\n  <!DOCTYPE html>\n<html><head><title>cat</title></head><body></body></html>"
    raises_naming(write(tmp_path, "saved.jpg", page), "saved.jpg", "HTML")
    raises_naming(page, "<bytes>", "HTML")
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    raises_naming(write(tmp_path, "logo.png", svg), "logo.png", "SVG")
    lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"
    raises_naming(write(tmp_path, "lfs.jpg", lfs), "lfs.jpg", "LFS")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" + b"0" * 100
    raises_naming(write(tmp_path, "draw.eps", eps), "draw.eps", "not an image")


@pytest.mark.parametrize(
    ("w", "h", "words"),
    [(8001, 8000, ("8001x8000", "64.01 megapixels")),  # just over: no "64 over 64"
     (9000, 9000, ("81.0 megapixels",)),  # over MAX_PIXELS, under PIL's warning level
     (10_000, 10_000, ("100.0 megapixels",)),  # PIL's DecompressionBombWarning, as an error
     (20_000, 20_000, ("400.0 megapixels",)),  # PIL's DecompressionBombError
     (65_535, 65_535, ("4294.8 megapixels",))],
)
def test_decompression_bomb(tmp_path, w, h, words):
    before_limit, before_filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    data = png_with_size(w, h)
    words = (*words, "is over the limit of 64 megapixels")  # our limit, never PIL's
    for msg in (raises_naming(write(tmp_path, "bomb.png", data), "bomb.png", *words),
                raises_naming(data, "<bytes>", *words)):
        text = msg.replace(str(tmp_path), "")  # pytest's folder number may hold any digits
        assert "89" not in text and "178" not in text, msg
    assert Image.MAX_IMAGE_PIXELS == before_limit and warnings.filters == before_filters
    assert w * h > MAX_PIXELS


def test_too_small(tmp_path):
    raises_naming(write(tmp_path, "dot.png", encode(Image.new("RGB", (1, 1)), "PNG")), "dot.png",
                  "too small", f"{MIN_SIDE}x{MIN_SIDE}")
    raises_naming(write(tmp_path, "thin.gif", encode(Image.new("L", (100, 7)), "GIF")),
                  "thin.gif", "too small")
    raises_naming(Image.new("RGB", (1, 1)), "<PIL image>", "too small")


def test_unsupported_mode(tmp_path):
    msg = raises_naming(Image.new("La", (16, 16)), "<PIL image>", "mode", "'La'")
    assert "supported" in msg
    with pytest.raises(ImageError, match="my.png"):
        load_image(Image.new("La", (16, 16)), name="my.png")


def test_bytes_over_limit_and_check_upload():
    big = b"\xff\xd8\xff" + b"\0" * MAX_BYTES
    raises_naming(big, "<bytes>", "20.000003 MB is over the limit of 20 MB")
    with pytest.raises(ImageError, match=r"holiday\.jpg: 20\.000003 MB is over the limit of 20 MB"):
        check_upload(big, "holiday.jpg")
    with pytest.raises(ImageError, match=r"x\.png.*empty"):
        check_upload(b"", "x.png")
    with pytest.raises(ImageError, match=r"page\.jpg.*HTML"):
        check_upload(b"<html><body></body></html>", "page.jpg")
    ok = encode(Image.new("RGB", (16, 16)), "PNG")
    assert check_upload(ok, "ok.png") is None
    assert check_upload(memoryview(ok), "ok.png") is None
    with pytest.raises(ImageError, match="upload.png"):
        load_image(ok[:40], name="upload.png")


def test_globals_untouched_by_import_and_use(tmp_path):
    state = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    spec = importlib.util.spec_from_file_location("attnviz._images_probe", images.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a fresh import of the module's code
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)) \
        == state
    with pytest.raises(ImageError):
        module.load_image(png_with_size(10_000, 10_000))
    module.load_image(encode(Image.new("RGB", (16, 16)), "PNG"))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)) \
        == state


# -- random input: only ImageError or a valid image ------------------------------------------

def _valid_samples() -> dict[str, bytes]:
    arr = np.random.default_rng(2).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    return {
        "png": encode(img, "PNG"),
        "jpeg": encode(img, "JPEG", quality=80),
        "gif": encode(img, "GIF"),
        "webp": encode(img, "WEBP"),
        "tiff": encode(img, "TIFF"),
        "bmp": encode(img, "BMP"),
        "png16": encode(Image.new("I;16", (12, 12), 300), "PNG"),
        "pal": encode(palette_image((12, 12)), "PNG", transparency=0),
    }


SAMPLES = _valid_samples()
HEADERS = [
    b"\x89PNG\r\n\x1a\n",
    SAMPLES["png"][:33],  # signature + a valid IHDR
    b"\xff\xd8\xff\xe0",
    SAMPLES["jpeg"][:200],
    b"GIF89a",
    b"GIF87a",
    SAMPLES["gif"][:13],
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"RIFF\x00\x01\x00\x00WEBPVP8 ",
    b"P6\n16 16\n255\n",
]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
PIL_NOISE = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")  # "Corrupt EXIF data" etc.


@PIL_NOISE
@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check_outcome(data)


@PIL_NOISE
@FUZZ
@given(st.sampled_from(HEADERS), st.binary(max_size=2048))
def test_random_bytes_after_real_header(header, data):
    check_outcome(header + data)


@PIL_NOISE
@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_real_images(kind, draw):
    data = bytearray(SAMPLES[kind])
    edits = draw.draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                               min_size=1, max_size=6))
    for pos, value in edits:
        data[pos] = value
    cut = draw.draw(st.integers(1, len(data)))
    check_outcome(bytes(data[:cut]))


def test_valid_samples_load():
    for data in SAMPLES.values():
        assert load_image(data).shape == (3, 12, 12)


def test_bundled_photos_load():
    from attnviz.samples import sample_images

    photos = sample_images("photos")
    assert len(photos) >= 4
    for p in photos:
        assert p.suffix == ".jpg" and p.stat().st_size < 150_000
        t = load_image(p, size=64)
        assert t.shape == (3, 64, 64) and max(load_pil(p).size) <= 512

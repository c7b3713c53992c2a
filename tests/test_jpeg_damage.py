"""A JPEG whose compressed data was changed decodes in PIL without a word; attnviz refuses it
(one readable error naming the file, libjpeg's reason), lists it among the items it could not
read in a batch and finishes the rest, and accepts every valid JPEG: the bundled photos and
PIL-saved ones of every quality, subsampling, progressive, grey, CMYK, with EXIF or restart
markers (no false positive)."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

import attnviz
from attnviz import report
from attnviz.errors import ImageError
from attnviz.images import check_jpeg, load_image, load_pil

PHOTOS = attnviz.data_dir() / "images"


def corrupt(data: bytes, seed: int, where: float, n: int = 200) -> bytes:
    """``data`` with ``n`` random bytes (fixed seed) written at the fraction ``where`` of it:
    inside the compressed (entropy-coded) data of these files."""
    rng = random.Random(seed)
    out = bytearray(data)
    at = int(len(out) * where)
    out[at:at + n] = bytes(rng.randrange(256) for _ in range(n))
    return bytes(out)


def _pil_alone_accepts(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
    return True


def _progressive(name: str) -> bytes:
    buf = io.BytesIO()
    load_pil(PHOTOS / name).save(buf, "JPEG", quality=85, progressive=True)
    return buf.getvalue()


CASES = [("astronaut.jpg", 0, 0.3), ("astronaut.jpg", 3, 0.5), ("chelsea.jpg", 0, 0.5),
         ("chelsea.jpg", 3, 0.7), ("coffee.jpg", 0, 0.3), ("hubble_deep_field.jpg", 0, 0.5),
         ("rocket.jpg", 0, 0.7), ("rocket.jpg", 3, 0.3)]


@pytest.mark.parametrize(("name", "seed", "where"), CASES)
def test_random_bytes_in_a_jpeg_are_refused_naming_the_file(tmp_path, name, seed, where):
    bad = corrupt((PHOTOS / name).read_bytes(), seed, where)
    assert _pil_alone_accepts(bad)  # what the check is for: PIL decodes it silently
    path = tmp_path / f"damaged_{name}"
    path.write_bytes(bad)
    for source, shown in ((path, str(path)), (bad, "<bytes>")):
        with pytest.raises(ImageError) as info:
            load_image(source)
        msg = str(info.value)
        assert msg.startswith(f"cannot read image {shown}: the JPEG data is damaged (Corrupt "
                              "JPEG data: "), msg
        assert "\n" not in msg


@pytest.mark.parametrize("seed", [0, 1, 3, 6])
def test_random_bytes_in_a_progressive_jpeg_are_refused(seed):
    bad = corrupt(_progressive("chelsea.jpg"), seed, 0.5)
    with pytest.raises(ImageError, match="damaged"):
        load_image(bad)


def test_truncated_jpeg_still_refused_as_truncated(tmp_path):
    data = (PHOTOS / "chelsea.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match=r"cut\.jpg: the file is truncated"):
        load_image(path)


def _valid_jpegs() -> dict[str, bytes]:
    """PIL-saved JPEGs of every kind a user may have, from one bundled photo."""
    src = load_pil(PHOTOS / "astronaut.jpg")
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "camera"
    out = {}
    for q in (1, 10, 50, 75, 95, 100):
        for sub in (0, 1, 2):
            for prog in (False, True):
                for mode in ("RGB", "L", "CMYK"):
                    buf = io.BytesIO()
                    kw = {"subsampling": sub} if mode != "L" else {}
                    src.convert(mode).save(buf, "JPEG", quality=q, progressive=prog,
                                           exif=exif.tobytes(), optimize=q == 50, **kw)
                    out[f"q{q} sub{sub} {'progressive' if prog else 'baseline'} {mode}"] = \
                        buf.getvalue()
    buf = io.BytesIO()
    src.save(buf, "JPEG", quality=90, restart_marker_blocks=4)
    out["restart markers"] = buf.getvalue()
    for p in PHOTOS.glob("*.jpg"):
        out[p.name] = p.read_bytes()
    return out


def test_valid_jpegs_load_no_false_positive():
    jpegs = _valid_jpegs()
    assert len(jpegs) > 100
    for what, data in jpegs.items():
        check_jpeg(data, what)  # no exception
        t = load_image(data, name=what)
        assert t.shape[0] == 3 and bool(t.isfinite().all()), what


def test_batch_lists_the_damaged_jpeg_and_finishes_the_rest(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in PHOTOS.iterdir():
        shutil.copy(p, folder / p.name)
    name, seed, where = CASES[2]
    (folder / "zz_damaged.jpg").write_bytes(corrupt((PHOTOS / name).read_bytes(), seed, where))
    out = report.write_report(folder, model="demo-cbam", out_dir=tmp_path / "out",
                              progress=False, max_figures=1)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_images"] == len(list(PHOTOS.iterdir()))
    (bad,) = summary["could_not_read"]
    assert Path(bad["image"]).name == "zz_damaged.jpg" and "JPEG data is damaged" in bad["reason"]
    page = out.read_text()
    section = page[page.index("<h2>Could not read</h2>"):page.index("<h2>Per image</h2>")]
    assert "zz_damaged.jpg" in section and "Corrupt JPEG data" in section


def test_stats_lists_the_damaged_jpeg_and_finishes_the_rest(tmp_path):
    pytest.importorskip("pyarrow")
    from attnviz.stats import dataset_stats

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in PHOTOS.glob("shapes_*.png"):
        shutil.copy(p, folder / p.name)
    (folder / "damaged.jpg").write_bytes(corrupt((PHOTOS / "rocket.jpg").read_bytes(), 3, 0.3))
    out = dataset_stats(str(folder), "demo-cbam", tmp_path / "stats", progress=False)
    data = json.loads(Path(out).read_text())["data"]
    assert data["n_images"] == 5 and data["n_bad"] == 1
    (bad,) = data["bad"]
    assert bad["image"].endswith("damaged.jpg") and "JPEG data is damaged" in bad["reason"]

"""File and class-folder names whose bytes are not UTF-8 (``caf\\xe9.png`` from an old zip) or
hold control characters: every output of ``attnviz report`` and ``attnviz stats`` is written,
with the names escaped, and nothing raw reaches the terminal."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import attnviz
from attnviz import cli
from attnviz.terminal import one_line, printable, shown, text_name

LATIN1 = b"caf\xe9"  # "café" in Latin-1: not valid UTF-8


def _bytes_path(folder: Path, name: bytes) -> bytes:
    return os.path.join(os.fsencode(folder), name)


@pytest.fixture
def odd_names(tmp_path: Path) -> Path:
    """A folder with a readable image and an unreadable file, both named with non-UTF-8
    bytes, and one plain image."""
    shapes = attnviz.sample_images("shapes")
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(shapes[0], _bytes_path(folder, LATIN1 + b".png"))
    shutil.copy(shapes[1], folder / "plain.png")
    with open(_bytes_path(folder, b"bad\xff.png"), "wb") as f:
        f.write(b"not an image")
    return folder


def test_text_name_escapes_only_what_is_not_utf8() -> None:
    name = os.fsdecode(b"/x/" + LATIN1 + b"\x1b.png")
    assert text_name(name) == "/x/caf\\xe9\x1b.png"
    assert text_name("/x/café.png") == "/x/café.png"
    assert printable(name) == "/x/caf\\xe9\\x1b.png"
    assert shown(name) == "'/x/caf\\xe9\\x1b.png'"
    assert one_line(name) == "/x/caf\\xe9\\x1b.png"
    for text in (text_name(name), printable(name), shown(name)):
        text.encode("utf-8")  # never raises


def test_report_writes_every_output_with_escaped_names(odd_names: Path, tmp_path: Path,
                                                        capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["report", str(odd_names), "--model", "demo-cbam", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "\\udc" not in err
    assert "bad\\\\xff.png" in err  # the unreadable one is listed, escaped
    csv_text = (out / "summary.csv").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in csv_text
    doc = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    images = {Path(p["image"]).name for p in doc["predictions"]}
    assert images == {"caf\\xe9.png", "plain.png"}
    assert [Path(b["image"]).name for b in doc["could_not_read"]] == ["bad\\xff.png"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in page and "bad\\xff.png" in page


@pytest.mark.parametrize("per_image", [False, True])
def test_stats_writes_every_output_with_escaped_names(tmp_path: Path, capsys,
                                                      per_image: bool) -> None:
    """Class folders named with non-UTF-8 bytes and with a raw ESC; an unreadable file."""
    shapes = attnviz.sample_images("shapes")
    root = tmp_path / "data"
    latin, esc = _bytes_path(root, LATIN1), _bytes_path(root, b"red\x1b[31mclass")
    os.makedirs(latin)
    os.makedirs(esc)
    shutil.copy(shapes[0], os.path.join(latin, b"s\xe9.png"))
    shutil.copy(shapes[1], os.path.join(esc, b"c.png"))
    with open(os.path.join(latin, b"bad\xff.png"), "wb") as f:
        f.write(b"not an image")
    out = tmp_path / "out"
    args = ["stats", str(root), "--model", "demo-cbam", "--out", str(out)]
    code = cli.main(args + (["--per-image"] if per_image else []))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "\x1b" not in err and "Traceback" not in err
    doc = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert doc["classes"]["names"] == ["caf\\xe9", "red\\x1b[31mclass"]
    assert [Path(b["image"]).name for b in doc["data"]["bad"]] == ["bad\\xff.png"]
    assert "caf\\xe9" in (out / "stats.html").read_text(encoding="utf-8")
    if per_image:
        import pyarrow.parquet as pq

        table = pq.read_table(out / "per_image")
        names = {Path(n).name for n in table.column("image").to_pylist()}
        assert names == {"s\\xe9.png", "c.png"}

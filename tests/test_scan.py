"""find_images: files, folders, globs; no symlink loops; every skipped file listed with why."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from attnviz.errors import ParameterError
from attnviz.images import IMAGE_SUFFIXES, find_images

PNG = bytes.fromhex(  # a valid 8x8 PNG is not needed: find_images never decodes
    "89504e470d0a1a0a")


def write(folder: Path, name: str, data: bytes = PNG) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def reasons(skipped: list[tuple[str, str]]) -> dict[str, str]:
    return {Path(item).name: why for item, why in skipped}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("b.png", "a.JPG", "c.webp", ".hidden.png", "notes.txt"):
        write(tmp_path, name)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "d.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    write(tmp_path / "texts", "x.txt", b"x")
    return tmp_path


def test_find_images_folder_glob_file(tree: Path) -> None:
    paths, skipped = find_images([tree])
    assert [p.name for p in paths] == ["a.JPG", "b.png", "c.webp"]
    assert skipped == [(str(tree / "notes.txt"),
                        f"not an image file name (suffix '.txt'; image suffixes: "
                        f"{', '.join(IMAGE_SUFFIXES)})")]
    paths, skipped = find_images([str(tree / "*.png"), tree / "b.png", tree,
                                  tree / "sub" / "d.png"])
    assert [p.name for p in paths] == ["a.JPG", "b.png", "c.webp", "d.png"]  # de-duplicated
    assert paths == sorted(paths) and list(reasons(skipped)) == ["notes.txt"]
    paths, _ = find_images([str(tree / "**" / "*.png")])
    assert sorted(p.name for p in paths) == ["b.png", "d.png"]
    paths, _ = find_images(str(tree / "notes.txt"))  # a single path; explicit files kept
    assert [p.name for p in paths] == ["notes.txt"]
    paths, _ = find_images(str(tree / "**"))  # ** alone: files at every depth
    assert sorted(p.name for p in paths) == ["a.JPG", "b.png", "c.webp", "d.png"]


def test_find_images_missing(tree: Path) -> None:
    inputs = [str(tree / "nope" / "*.png"), str(tree / "ghost.jpg"), str(tree / "empty"),
              str(tree / "texts" / "*"), ""]
    paths, skipped = find_images(inputs)
    assert paths == []
    assert skipped[0] == (inputs[0], "matched no file")
    assert skipped[1] == (inputs[1], "no such file or folder")
    assert skipped[2][0] == inputs[2] and "no image files" in skipped[2][1]
    assert skipped[3][0] == str(tree / "texts" / "x.txt") and "suffix '.txt'" in skipped[3][1]
    assert skipped[4] == (inputs[3], "matched no image file")
    assert skipped[5] == ("", "empty path")


def _in_time(fn, seconds: float):
    """``fn()`` in a daemon thread; fails (instead of hanging) when it takes too long."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t0 = time.perf_counter()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return out[0], time.perf_counter() - t0


def test_two_symlink_cycles_finish_in_seconds(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    write(root, "top.png")
    write(root / "a" / "deep", "low.png")
    os.symlink(root, root / "a" / "deep" / "up")  # cycle 1: back to the root
    os.symlink(root / "a", root / "b" / "to_a")   # cycle 2: a <-> b
    os.symlink(root / "b", root / "a" / "to_b")
    (paths, skipped), took = _in_time(lambda: find_images([str(root / "**" / "*.png")]), 10)
    assert sorted(p.name for p in paths) == ["low.png", "top.png"]
    not_followed = {Path(i).name for i, why in skipped if "does not follow" in why}
    assert not_followed == {"up", "to_a", "to_b"}
    assert took < 5


def test_folder_scan_lists_every_skipped_file(tmp_path: Path) -> None:
    good = write(tmp_path, "good.png")
    for name in ("phone.heic", "logo.svg", "drawing.eps", "readme.md"):
        write(tmp_path, name, b"x")
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block for ever
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    os.symlink("/dev/null", tmp_path / "device.jpg")
    for inputs in ([tmp_path], [str(tmp_path / "*")]):
        (paths, skipped), _ = _in_time(lambda inputs=inputs: find_images(inputs), 10)
        assert paths == [good]
        why = reasons(skipped)
        assert set(why) == {"phone.heic", "logo.svg", "drawing.eps", "readme.md", "pipe.png",
                            "dangling.png", "device.jpg"}
        assert "HEIC" in why["phone.heic"] and "SVG" in why["logo.svg"]
        assert "Ghostscript" in why["drawing.eps"] and "suffix '.md'" in why["readme.md"]
        assert why["pipe.png"] == "a FIFO (named pipe)"
        assert why["dangling.png"] == "a symbolic link to a missing file"
        assert why["device.jpg"] == "a symbolic link to a character device"
    _, skipped = find_images(tmp_path / "pipe.png")  # named explicitly: same reason
    assert skipped == [(str(tmp_path / "pipe.png"), "a FIFO (named pipe)")]


@pytest.mark.parametrize("bad", [b"photos", [b"a.png"], "a\0.png", [Path("x\0y")], [3]])
def test_bytes_and_nul_paths_are_parameter_errors(bad: object) -> None:
    with pytest.raises(ParameterError, match="bytes|NUL|path"):
        find_images(bad)  # type: ignore[arg-type]

"""Bad command lines: one line ``attnviz: error: ...``, exit 2, no traceback, nothing written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import attnviz
from attnviz import cli, report
from attnviz.checks import MAX_BATCH_SIZE, cap_workers, cpu_count

MODEL = "demo-cbam"  # trained weights (an architecture alone is refused without --random-weights)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for p in attnviz.sample_images("shapes")[:2]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "existing_file"
    path.write_text("x")
    return path


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder this process cannot write to: mode 555, and for root (whom file modes do not
    stop) also the immutable attribute (``chattr +i``)."""
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                                    check=False).returncode != 0:
        pytest.skip("root, and chattr +i is not available here: no folder root cannot write to")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


REPORT_CASES = [
    (["--layers", "re:("], ["re:(", "regular expression"]),
    (["--out", "{file}/sub"], ["existing_file", "not a folder"]),
    (["--out", "/proc/self/attnviz-out"], ["cannot write", "/proc/self/attnviz-out"]),
    (["--out", "{ro}/out"], ["cannot write"]),
    (["--device", "meta"], ["device 'meta' is not supported"]),
    (["--device", "mps"], ["device 'mps'", "not available"]),
    (["--device", "cuda:99"], ["cuda:99"]),
    (["--batch-size", str(10**30)], ["--batch-size", f"at most {MAX_BATCH_SIZE}", "31 digits"]),
    (["--out", "o\0ut"], ["NUL byte"]),
    (["--checkpoint", "w\0.safetensors"], ["w\\x00.safetensors"]),
    (["{images}/nul\0.png"], ["NUL byte"]),
]


@pytest.mark.parametrize(("args", "words"), REPORT_CASES,
                         ids=[" ".join(a).replace("\0", "NUL") for a, _ in REPORT_CASES])
def test_bad_report_parameters(images, a_file, tmp_path, capsys, request, args, words) -> None:
    if any("{ro}" in a for a in args):
        ro = request.getfixturevalue("read_only_dir")
        args = [a.replace("{ro}", str(ro)) for a in args]
    args = [a.replace("{file}", str(a_file)).replace("{images}", str(images)) for a in args]
    if "mps" in args and __import__("torch").backends.mps.is_available():
        pytest.skip("this machine has MPS")
    out = tmp_path / "o"
    inputs = [a for a in args if a.startswith(str(images))] or [str(images)]
    options = [a for a in args if not a.startswith(str(images))]
    code = cli.main(["report", *inputs, "--model", MODEL, "--out", str(out), *options])
    _one_error_line(capsys, code, words)
    assert not out.exists()


COMMAND_CASES = [
    (["train", "--data", "/nonexistent"], ["--data '/nonexistent'", "neither 'shapes'"]),
    (["train", "--steps", "x"], ["--steps", "expected an integer"]),
    (["train", "--steps", "0"], ["--steps", "must be at least 1"]),
    (["train", "--lr", "nan"], ["--lr", "must be in (0.0, 10.0]"]),
    (["train", "--batch-size", "0"], ["--batch-size", "must be at least 1"]),
    (["evaluate", "--n", "0"], ["--n", "must be at least 1"]),
    (["evaluate", "--model", "nope"], ["unknown model 'nope'"]),
    (["lab", "/nonexistent"], ["notebook folder", "/nonexistent", "not a folder"]),
    (["lab", ".", "--port", "70000"], ["bad port 70000"]),
    (["lab", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["bogus-command"], ["invalid choice"]),
]


@pytest.mark.parametrize(("args", "words"), COMMAND_CASES,
                         ids=[" ".join(a) for a, _ in COMMAND_CASES])
def test_bad_command_lines(capsys, args, words) -> None:
    _one_error_line(capsys, cli.main(args), words)


def _one_error_line(capsys, code: int, words: list[str]) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnviz: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def test_workers_are_capped_at_the_cpu_count_with_a_note(images, tmp_path, capsys,
                                                         monkeypatch) -> None:
    seen: dict = {}
    monkeypatch.setattr(report, "write_report", lambda *a, **kw: seen.update(kw) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # stop right after the call
        cli.main(["report", str(images), "--workers", "100000", "--out", str(tmp_path / "o")])
    assert seen["num_workers"] == cpu_count() and cap_workers(100000) == cpu_count()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"attnviz: note: --workers 100000 is more than the {cpu_count()} CPU(s) "
                   f"here; using {cpu_count()}"]


def test_unreadable_file_names_are_escaped_on_one_line(images, tmp_path, capsys,
                                                       monkeypatch) -> None:
    """A hostile file name (newline, ANSI escape, bidi override) reaches the terminal escaped."""
    name = str(tmp_path / "evil\n\x1b[31mred\u202e.png")
    html = tmp_path / "o" / "report.html"
    html.parent.mkdir()
    html.write_text("<html></html>")
    monkeypatch.setattr(report, "write_report", lambda *a, **kw: html)
    monkeypatch.setattr(report, "read_summary", lambda _d: {
        "n_images": 1, "could_not_read": [{"image": name, "reason": "bad\n\x1b[1mdata"}]})
    assert cli.main(["report", str(images), "--out", str(html.parent)]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert warning == [f"attnviz: warning: 1 input(s) could not be read and are listed in the "
                       f"report: {name!r} (bad data)"]


def test_top_k_sets_how_many_channels_hovering_lists(images, tmp_path, capsys) -> None:
    """``--top-k`` says what it does: the hover list of each channel chart has K channels, and
    every channel is drawn whatever K is."""
    assert cli.main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--top-k K how many channels hovering over a channel chart lists" in text
    assert "channels shown per block" not in text
    charts = {}
    for k in (3, 5):
        out = tmp_path / f"k{k}"
        assert cli.main(["report", str(images), "--model", MODEL, "--out", str(out),
                         "--top-k", str(k)]) == 0
        page = (out / "report.html").read_text()
        hovers = re.findall(r"<title>s\(c\) sorted; the largest: ([^<]+)</title>", page)
        assert hovers and all(len(h.split(", ")) == k for h in hovers)
        charts[k] = re.findall(r"<polyline points=\"([^\"]+)\"", page)
    assert charts[3] == charts[5]  # every channel drawn whatever K is

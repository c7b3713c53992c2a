"""Limits on every size a user can type: each hostile value ends in one ``attnviz: error:``
line (exit 2) that states the limit, in bounded memory (the peak is measured: the command runs
in a child process under an address-space limit, so a missing check fails the test instead of
exhausting the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import attnviz
from attnviz import cli
from attnviz.checks import MAX_INPUT_SIZE, check_images_memory, check_input_size
from attnviz.engine.sources import MAX_SHARDS, brace_count
from attnviz.errors import ParameterError
from attnviz.models.user import MAX_ARGS_DEPTH, json_depth, parse_model_args

#: what a refused command may use at its peak (importing torch alone takes ~0.7 GiB)
PEAK_LIMIT_MB = 1500
#: the child's address-space limit: a missing check dies here rather than taking the machine
ADDRESS_SPACE = 8 * 2**30

RUN = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from attnviz.cli import main
code = main(sys.argv[1:])
print(f"peak-kb {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}", file=sys.stderr)
sys.exit(code)
"""


def run_measured(args: list[str], cwd: Path) -> tuple[int, str, float]:
    """``attnviz ARGS`` in a child process: exit code, stderr and peak RSS in MB."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(attnviz.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", RUN.format(limit=ADDRESS_SPACE), *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("peak-kb ")]
    peak_mb = int(peak[-1].split()[1]) / 1024 if peak else float("inf")
    err = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("peak-kb "))
    return proc.returncode, err, peak_mb


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("attnviz: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("one")
    src = attnviz.sample_images("shapes")[0]
    (folder / src.name).write_bytes(src.read_bytes())
    return folder


CASES = [
    # (command, words the error must hold)
    (["report", "{img}", "--input-size", "9000", "--out", "o"], ["at most 1024 px", "GiB"]),
    (["stats", "{img}", "--input-size", "100000", "--out", "o"], ["at most 1024 px"]),
    (["stats", "shapes:1000", "--input-size", "1024", "--batch-size", "4096", "--out", "o"],
     ["--batch-size 1000 at 1024 px", "at most 341"]),
    (["stats", "shapes:99999999999", "--out", "o"], ["shapes:N must be at most 10000000"]),
    (["evaluate", "--n", "1000000000"], ["--n", "at most 10000000"]),
    (["evaluate", "--n", "1000000"], ["1000000 shapes images at 64 px", "at most 80659"]),
    (["stats", "x-{00000000..99999999}.tar", "--out", "o"], [f"more than {MAX_SHARDS} names"]),
    (["stats", "x-{0..9.tar", "--out", "o"], ["unbalanced braces"]),
    (["train", "--n-train", "10000000", "--size", "1024", "--out", "o"],
     ["10000000 shapes images at 1024 px"]),
    (["report", "{img}", "--model", "m.py:f", "--model-args", "[" * 40000 + "]" * 40000],
     [f"nested 40000 levels deep, at most {MAX_ARGS_DEPTH}"]),
]


@pytest.mark.parametrize("args,words", CASES, ids=lambda c: " ".join(c)[:50]
                         if isinstance(c, list) and c and c[0] != "at most" else None)
def test_hostile_sizes_are_refused_in_bounded_memory(args, words, one_image: Path,
                                                     tmp_path: Path) -> None:
    code, err, peak_mb = run_measured([a.replace("{img}", str(one_image)) for a in args],
                                      tmp_path)
    line = _one_error_line(err)
    assert code == 2, err
    for w in words:
        assert w in line, line
    assert peak_mb < PEAK_LIMIT_MB, f"peak {peak_mb:.0f} MB"
    out = tmp_path / "o"
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_library_limits_state_the_estimate() -> None:
    with pytest.raises(ParameterError, match="at most 1024 px.*4.8 GiB per image"):
        check_input_size(9000)
    assert check_input_size(MAX_INPUT_SIZE) == MAX_INPUT_SIZE
    with pytest.raises(ParameterError, match="at least 8|>= 8"):
        check_input_size(4)
    check_images_memory("a batch", 341, 1024)  # 4.0 GiB: allowed
    with pytest.raises(ParameterError, match="at most 341"):
        check_images_memory("a batch", 342, 1024)
    with pytest.raises(ParameterError, match="input_size must be at most"):
        attnviz.load_model("demo-cbam", input_size=5000)


def test_model_args_depth_is_counted_outside_strings() -> None:
    assert json_depth('{"a": [1, {"b": "[[[{{"}]}') == 3
    assert json_depth("1") == 0
    deep = "[" * (MAX_ARGS_DEPTH - 1) + "]" * (MAX_ARGS_DEPTH - 1)
    assert parse_model_args('{"x": ' + deep + "}") == {"x": eval(deep)}  # 32 levels: fine
    with pytest.raises(ParameterError, match="nested 33 levels"):
        parse_model_args('{"x": [' + deep + "]}")


@pytest.mark.parametrize("pattern", ["x-{000..099}.tar", "a{b,c{1..3}}d{x,y}", "{a..e}{1..10..3}",
                                     "{}", "a{b}c", "{{1..3},{4..5}}z", "plain.tar",
                                     "{-3..3}{a,b,{c,d}}", "{10..1..2}"])
def test_brace_count_bounds_the_expansion(pattern: str) -> None:
    import braceexpand

    assert brace_count(pattern) >= len(list(braceexpand.braceexpand(pattern)))


# -- archives: sizes checked from the headers, before anything is inflated ---------------------

BOMB = 512 * 2**20  # what a bomb unpacks to; a missing check shows as a peak this much higher
PEAK_SLACK_MB = 150


class _Zeros:
    """A file-like source of ``n`` zero bytes, read in chunks (a bomb is never in memory)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def _tar(path: Path, members: list[tuple[str, bytes | int]]) -> Path:
    """A ``.tar.gz`` of members given as bytes or as a count of zero bytes (streamed)."""
    import tarfile

    with tarfile.open(path, "w:gz", compresslevel=1) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = data if isinstance(data, int) else len(data)
            t.addfile(info, _Zeros(data) if isinstance(data, int) else _Bytes(data))
    return path


class _Bytes(_Zeros):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        out, self.data = (self.data, b"") if size < 0 else (self.data[:size], self.data[size:])
        return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """``good.tar.gz`` (two samples) and ``bomb.tar.gz``: the same plus a sample whose image
    member declares 512 MiB of zeros (a 2.3 MB file)."""
    folder = tmp_path_factory.mktemp("shards")
    png = [p.read_bytes() for p in attnviz.sample_images("shapes")[:2]]
    good = [("a.png", png[0]), ("a.cls", b"0"), ("b.png", png[1]), ("b.cls", b"1")]
    _tar(folder / "good.tar.gz", good)
    _tar(folder / "bomb.tar.gz", good[:2] + [("huge.png", BOMB), ("huge.cls", b"2")] + good[2:])
    assert (folder / "bomb.tar.gz").stat().st_size < 4 * 2**20  # gzip -1 of zeros: ~230:1
    return folder


def test_tar_member_over_the_limit_is_listed_unread(shards: Path, tmp_path: Path) -> None:
    code, err, good_peak = run_measured(["stats", str(shards / "good.tar.gz"), "--out", "g",
                                         "--no-progress"], tmp_path)
    assert code == 0, err
    code, err, bomb_peak = run_measured(["stats", str(shards / "bomb.tar.gz"), "--out", "b",
                                         "--no-progress"], tmp_path)
    assert code == 0, err
    doc = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert doc["data"]["n_images"] == 2 and doc["data"]["n_bad"] == 1
    reason = doc["data"]["bad"][0]["reason"]
    assert "'huge.png' declares 512.0 MiB, over the limit" in reason and "not read" in reason
    assert bomb_peak - good_peak < PEAK_SLACK_MB, f"{bomb_peak:.0f} vs {good_peak:.0f} MB"


def test_truncated_shard_keeps_what_was_read(shards: Path, tmp_path: Path) -> None:
    data = (shards / "good.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "o"
    assert cli.main(["stats", str(cut), "--out", str(out), "--no-progress"]) == 0
    d = json.loads((out / "stats.json").read_text())["data"]
    assert d["n_bad"] == 1 and "tar error" in d["bad"][0]["reason"]


def _zip_bomb(path: Path) -> Path:
    """A torch checkpoint whose one storage record is replaced by 512 MiB of zeros, deflated
    (torch itself stores records uncompressed)."""
    import zipfile

    import torch

    src = path.with_suffix(".src")
    torch.save({"w": torch.zeros(4)}, src)
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(path, "w") as out:
        for info in z.infolist():
            if info.filename.endswith("/data/0"):
                entry = zipfile.ZipInfo(info.filename)
                entry.compress_type = zipfile.ZIP_DEFLATED
                with out.open(entry, "w", force_zip64=True) as f:
                    chunk = bytes(2**20)
                    for _ in range(BOMB // len(chunk)):
                        f.write(chunk)
            else:
                out.writestr(info, z.read(info))
    return path


def test_checkpoint_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    import torch

    good = tmp_path / "good.pt"
    torch.save(attnviz.load_model("demo-cbam").state_dict(), good)
    bomb = _zip_bomb(tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 2 * 2**20
    args = ["evaluate", "--model", "demo-cbam", "--n", "30", "--checkpoint"]
    code, err, good_peak = run_measured(args + [str(good)], tmp_path)
    assert code == 0, err
    code, err, bomb_peak = run_measured(args + [str(bomb)], tmp_path)
    line = _one_error_line(err)
    assert code == 2, err
    assert bomb_peak - good_peak < PEAK_SLACK_MB, f"{bomb_peak:.0f} vs {good_peak:.0f} MB"
    assert "declares 512.0 MiB of data in a" in line and "zip bomb" in line, line

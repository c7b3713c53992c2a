"""``attnviz stats --resume`` continues only the same data and only a state some run could have
saved: a replaced or renamed data set, and resume files edited to hold NaN means, negative or
impossible counts, are refused with the reason (one ``attnviz: error:`` line), never resumed
into wrong results."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from attnviz import ParameterError, cli
from attnviz.datasets import CLASSES
from attnviz.stats import dataset_stats, read_stats
from attnviz.stats.publish import WORK
from tests.report_helpers import write_shapes

MODEL = "demo-cbam"
RUN = dict(batch_size=4, progress=False)
N = 5  # images per class folder
#: the model options the command line passes (all unset)
CLI_OPTIONS = dict.fromkeys(("checkpoint", "model_args", "input_size", "mean", "std", "labels"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for k, name in enumerate(CLASSES[:3]):
        write_shapes(root / name, N, seed=k)
    return root


def _stop_after(n: int):
    def stop(done: int) -> None:
        if done >= n:
            raise KeyboardInterrupt

    return stop


@pytest.fixture
def interrupted(data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the data, a run interrupted after 8 images with its checkpoint, and the
    checkpoint file."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        dataset_stats(str(copy), MODEL, out, save_every=0, on_batch=_stop_after(8),
                      model_options=CLI_OPTIONS, **RUN)
    ckpt = out / WORK / "rank-00000-of-00001.pt"
    assert ckpt.is_file()
    return copy, out, ckpt


def _resume(copy: Path, out: Path, capsys) -> tuple[int, str]:
    code = cli.main(["stats", str(copy), "--model", MODEL, "--out", str(out), "--resume",
                     "--batch-size", "4", "--no-progress"])
    return code, capsys.readouterr().err


def test_unchanged_data_resumes_to_the_full_count(interrupted, capsys) -> None:
    copy, out, _ = interrupted
    code, err = _resume(copy, out, capsys)
    assert code == 0, err
    doc = read_stats(out / "stats.json")
    assert doc["run"]["resumed"] and doc["data"]["n_images"] == 3 * N


@pytest.mark.parametrize("change", ["replace", "rename", "touch"])
def test_changed_data_is_refused(interrupted, capsys, change: str) -> None:
    """Same folder, same number of files: every image replaced, one renamed, or one
    rewritten in place (same name and size, a new modification time)."""
    copy, out, _ = interrupted
    files = sorted(copy.rglob("*.png"))
    if change == "replace":
        for k, name in enumerate(CLASSES[:3]):
            shutil.rmtree(copy / name)
            write_shapes(copy / name, N, seed=10 + k)
    elif change == "rename":
        files[0].rename(files[0].with_name("renamed.png"))
    else:
        st = files[0].stat()
        os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    code, err = _resume(copy, out, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "cannot resume" in err and "the data changed" in err, err
    assert not (out / "stats.json").exists()


def _edit(ckpt: Path, edit) -> None:
    state = torch.load(ckpt, weights_only=True)
    edit(state)
    torch.save(state, ckpt)


def _layer0(state: dict) -> dict:
    return state["aggregate"]["layers"][0]["tensors"]


def _first(state: dict, prefix: str) -> str:
    return next(k for k in _layer0(state) if k.startswith(prefix))


EDITS = {
    "NaN mean": lambda s: _layer0(s)[_first(s, "moments.")].__setitem__(..., float("nan")),
    "negative count": lambda s: s["aggregate"]["counts"]["images"].__setitem__(0, -3.0),
    "too many images": lambda s: (s["progress"].__setitem__("n_seen", 224),
                                  s["progress"]["done"].__setitem__("", 224)),
    "counts not matching": lambda s: s["aggregate"]["counts"]["images"].mul_(78),
    "wrong shape": lambda s: s["aggregate"]["counts"].__setitem__("images", torch.zeros(7)),
    "missing key": lambda s: s["progress"].pop("n_seen"),
    "not a dict": lambda s: s.__setitem__("aggregate", [1, 2]),
    "layer count beyond images": lambda s: _layer0(s)[_first(s, "moments.") .rsplit(".", 1)[0]
                                                      + ".n"].add_(1000),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_resume_files_are_refused(interrupted, capsys, edit: str) -> None:
    copy, out, ckpt = interrupted
    _edit(ckpt, EDITS[edit])
    code, err = _resume(copy, out, capsys)
    assert code == 2, err
    assert err.startswith("attnviz: error: cannot resume:") and err.count("\n") == 1, err
    assert "Traceback" not in err and not (out / "stats.json").exists()


def test_resume_of_a_damaged_file_names_it(interrupted) -> None:
    copy, out, ckpt = interrupted
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ParameterError, match="cannot resume: .*rank-00000-of-00001.pt"):
        dataset_stats(str(copy), MODEL, out, resume=True, **RUN)

"""Tests written against named mutations (tests/CLAIMS.md): each fails when its claim breaks.

* the recorder keeps a copy of every weight it records (a network that later writes into its
  own attention tensor in place must not change a record);
* the report is published whole: a SIGKILL at any step of publishing leaves either the old
  report or the new one in OUT, never a mix;
* a model with one recorded and one missed attention module reports the miss (partial miss).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import attnviz
from attnviz import report
from attnviz.examples import HandMHSA, Net
from attnviz.models import set_preprocess
from attnviz.nn.channel_attn import ChannelAttention
from attnviz.publish import HOME


class ReusedAttention(HandMHSA):
    """Self-attention that reuses its weights tensor after the matmul (an in-place dropout or
    a buffer reused for the next step would do the same): ``attn`` is zeroed in place."""

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))
        attn = (q @ k.transpose(-1, -2) / math.sqrt(c // self.heads)).softmax(dim=-1)
        o = attn @ v
        self.seen = attn.detach().clone()  # what the network computed
        attn.zero_()  # the network writes into its own tensor after using it
        return self.out(o.transpose(-1, -2).reshape(b, c, h, w))


def test_records_are_copies_the_network_cannot_overwrite() -> None:
    model = Net(ReusedAttention(16, heads=4)).eval()
    set_preprocess(model, 8, None, None)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.rand(2, 3, 8, 8))
    (key,) = rec.attention
    recorded = rec.attention[key]
    seen = model.layer1[0].seen
    assert float(seen.abs().sum()) > 0  # there was something to lose
    torch.testing.assert_close(recorded, seen, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(recorded.sum(-1), torch.ones_like(recorded.sum(-1)))


class _KeptSigmoid(nn.Sigmoid):
    """A sigmoid that keeps (a reference to) its output, as a cache would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = super().forward(x)
        return self.last


class OverwritingGate(ChannelAttention):
    """A CBAM channel gate (a named adapter: its ``gate`` output is hooked) that reuses the
    gate's tensor in place once it has multiplied the features by it."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, reduction=4)
        self.gate = _KeptSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        self.seen = self.gate.last.flatten(1).clone()
        self.gate.last.zero_()  # the network writes into the tensor it multiplied by
        return y


def test_adapter_records_are_copies_the_network_cannot_overwrite() -> None:
    model = Net(OverwritingGate(16)).eval()
    set_preprocess(model, 8, None, None)
    with torch.no_grad():
        for _ in range(2):  # the second recording takes the adapter-only path
            with attnviz.record(model) as rec:
                model(torch.rand(2, 3, 8, 8))
    (recorded,) = rec.channel.values()
    assert rec.records[0].source == "adapter"
    seen = model.layer1[0].seen
    assert float(seen.min()) > 0  # there was something to lose
    torch.testing.assert_close(recorded, seen, atol=0, rtol=0)


class SELayer(nn.Module):
    """A channel gate computed in a way the recorder does not follow: a hand-written logistic
    1 / (1 + e^-s) instead of a sigmoid op (its class name still says it is attention)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.randn(c))

    def forward(self, x):
        gate = torch.reciprocal(1 + torch.exp(-self.scale))
        return x * gate[:, None, None]


def test_a_partial_miss_is_listed() -> None:
    """One module recorded (an SE block), one that gates the features without the recorder
    seeing it: the miss is named, although something else was recorded."""
    from attnviz.examples import SequentialSE

    model = Net(SequentialSE(16), SELayer(16)).eval()
    x = torch.rand(1, 3, 6, 6)
    sites = attnviz.find_attention(model, x)
    assert [s.name for s in sites] == ["layer1.0.fc"]
    assert sites.candidates == ["layer1.1"]
    assert "layer1.1" in sites.table()
    with torch.no_grad(), attnviz.record(model) as rec:  # recording still works
        model(x)
    assert list(rec.channel) == ["layer1.0.fc"]


# -- the report is published whole ---------------------------------------------------------------
def _digest(folder: Path) -> dict[str, str]:
    """sha256 of the report files in ``folder`` as a reader sees them (through the links; not
    the lock, which holds a pid, nor other hidden entries)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> tuple[Path, Path]:
    from report_helpers import write_shapes

    return (write_shapes(tmp_path_factory.mktemp("old"), 2, seed=1),
            write_shapes(tmp_path_factory.mktemp("new"), 3, seed=2, prefix="new"))


def _killed_publish(two_sets, tmp_path: Path, fault: str,
                    plain: bool = False) -> tuple[Path, dict, int]:
    """OUT holding a report of the old images, then a run on the new ones that gets the signal
    of ``fault`` inside its publish window; returns OUT, the old digest and the exit code.
    ``plain``: the old report as plain files (as an attnviz that published file by file left
    it), not links."""
    old, new = two_sets
    out = tmp_path / "out"
    report.write_report(str(old), model="demo-cbam", out_dir=out, progress=False)
    if plain:
        for p in out.iterdir():
            if p.is_symlink():
                data = p.read_bytes()
                p.unlink()
                p.write_bytes(data)
        shutil.rmtree(out / HOME)
    previous = _digest(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ATTNVIZ_FAULT_PUBLISH": fault,
           "PYTHONPATH": os.pathsep.join([str(Path(attnviz.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "attnviz", "report", str(new), "--model",
                           "demo-cbam", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    return out, previous, proc.returncode


def _one_run(out: Path) -> bool:
    """Do the report files in ``out`` come from one run (the page names the JSON's run)?"""
    run_id = json.loads((out / "summary.json").read_text())["run_id"]
    return run_id in (out / "report.html").read_text()


def test_a_kill_with_everything_staged_leaves_the_old_report(two_sets, tmp_path) -> None:
    """SIGKILL when every file of the new report is written, before publishing starts: a
    report written straight into OUT would be (partly) new here."""
    out, previous, code = _killed_publish(two_sets, tmp_path, "staged:SIGKILL")
    assert code == -signal.SIGKILL
    assert _digest(out) == previous


def _all_new(out: Path, previous: dict) -> None:
    now = _digest(out)
    assert set(now) == set(previous)
    assert all(now[n] != previous[n] for n in now), "some files are still the old run's"
    assert _one_run(out)


def test_sigterm_between_the_renames_is_held_until_the_report_is_whole(two_sets,
                                                                        tmp_path) -> None:
    """SIGTERM to the main thread (where publishing runs) after the first output's link."""
    out, previous, code = _killed_publish(two_sets, tmp_path, "link-1:SIGTERM:main")
    assert code in (-signal.SIGTERM, 128 + signal.SIGTERM)
    _all_new(out, previous)


def test_process_directed_sigterm_between_the_renames_is_held(two_sets, tmp_path) -> None:
    out, previous, code = _killed_publish(two_sets, tmp_path, "link-1:SIGTERM")
    assert code in (-signal.SIGTERM, 128 + signal.SIGTERM)
    _all_new(out, previous)


@pytest.mark.parametrize(("fault", "plain"), [
    ("link-1", False), ("link-3", False), ("switched", False),
    ("adopt-1", True), ("link-2", True)])
def test_sigkill_between_the_renames_leaves_old_or_new(two_sets, tmp_path, fault,
                                                        plain) -> None:
    """SIGKILL (nothing can hold it) at each step of publishing — over a published report and
    over one an earlier attnviz left as plain files: OUT shows the old report or the new one,
    whole."""
    out, previous, code = _killed_publish(two_sets, tmp_path, f"{fault}:SIGKILL", plain)
    assert code == -signal.SIGKILL
    now = _digest(out)
    if now != previous:
        _all_new(out, previous)
    assert (now == previous) == (fault != "switched")


# -- the statistics of several processes merge into those of one --------------------------------
def test_moments_of_two_processes_merge_into_those_of_all_the_data() -> None:
    """Two ranks (threads exchanging their sums in place of gloo's all_reduce) with uneven
    shares and different means per group: the merged count, mean and population variance
    equal numpy's over all the data."""
    import threading

    import numpy as np

    from attnviz.stats.distributed import Dist
    from attnviz.stats.moments import Moments

    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    groups = torch.randint(0, 3, (50,), generator=g)
    shares = [slice(0, 13), slice(13, 50)]
    x[13:] += 5.0  # the second rank's values sit elsewhere: the merge must account for it
    board: list = [None, None]
    barrier = threading.Barrier(2)

    def all_reduce(rank: int):
        def sum_(tensors) -> None:
            flat = torch.cat([t.reshape(-1) for t in tensors])
            board[rank] = flat
            barrier.wait()
            total = board[0] + board[1]
            barrier.wait()
            offset = 0
            for t in tensors:
                t.copy_(total[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
        return sum_

    merged: list = [None, None]

    def rank_run(rank: int) -> None:
        m = Moments(3, (4,))
        m.update(x[shares[rank]], groups[shares[rank]])
        d = Dist(rank, 2, backend="threads")
        d.sum_ = all_reduce(rank)  # type: ignore[method-assign]
        d.merge_moments_([m])
        merged[rank] = m

    threads = [threading.Thread(target=rank_run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for m in merged:
        for k in range(3):
            ref = x[groups == k].numpy()
            assert int(m.n[k]) == len(ref)
            np.testing.assert_allclose(m.mean[k].numpy(), ref.mean(0), rtol=1e-12)
            np.testing.assert_allclose(m.var[k].numpy(), ref.var(0), rtol=1e-10)

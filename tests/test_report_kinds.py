"""The report handles every kind the recorder produces (channel, spatial, radix, paths, context,
gate, attention with and without a known grid), and its attention-map columns are right."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnviz
from attnviz import cli, report
from attnviz import examples as ex
from attnviz.kinds import KINDS
from attnviz.models import save_weights, set_preprocess
from attnviz.report.stats import attention_stats, grid_geometry

ALL_KINDS = {"channel", "spatial", "radix", "paths", "context", "gate", "attention"}


class TokenAttention(nn.Module):
    """Self-attention over the pixels plus a class token: no pixel grid for its queries."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, c))
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = torch.cat([self.cls.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], 1)
        q, k, v = self.qkv(t).chunk(3, -1)
        attn = (q @ k.transpose(1, 2) / math.sqrt(c)).softmax(-1)
        return x + (attn @ v)[:, 1:].transpose(1, 2).reshape(b, c, h, w)


def every_kind_model() -> nn.Module:
    from timm.layers import GlobalContext, SelectiveKernel

    net = ex.Net(ex.TutorialCBAMBlock(16), ex.HandSplitAttention(16), ex.HandCoordAttention(16),
                 GlobalContext(16, fuse_add=True, fuse_scale=True), SelectiveKernel(16, 16),
                 ex.HandNonLocal(16), ex.HandMHSA(16), TokenAttention(16))
    set_preprocess(net, 16)
    return net.eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for p in attnviz.sample_images("shapes")[:3]:
        shutil.copy(p, d / p.name)
    return d


def test_every_kind_in_one_report(images, tmp_path):
    out = tmp_path / "out"
    report.write_report(images, model=every_kind_model(), out_dir=out, max_figures=2,
                        progress=False)
    summary = json.loads((out / "summary.json").read_text())
    layers = {(r["layer"], r["kind"]): r for r in summary["layers_summary"]}
    assert {k for _, k in layers} == ALL_KINDS
    assert ("layer1.3", "context") in layers and ("layer1.3", "channel") in layers  # one module
    assert ("layer1.2", "gate") in layers and ("layer1.2#1", "gate") in layers  # a_w and a_h
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(layers)
    attention = {r["layer"]: r for r in summary["layers_summary"] if r["kind"] == "attention"}
    for name in ("layer1.5", "layer1.6"):  # tokens are the pixels: the grid is known
        row = attention[name]
        assert row["q_grid"] == row["k_grid"] == [16, 16]
        assert 0 <= row["entropy"] <= 1 and 0 <= row["local_mass"] <= 1
        assert 0 <= row["attn_distance"] <= math.hypot(15, 15)
    token = attention["layer1.7"]  # a class token: no grid, no distances
    assert "k_grid" not in token
    assert token["attn_distance"] is None and token["local_mass"] is None
    assert 0 <= token["entropy"] <= 1
    page = (out / "report.html").read_text()
    for k in ALL_KINDS:  # each group is titled by its entry of the kinds registry
        title = KINDS[k].title
        assert page.count(f"<h4>{title}") == 2, title  # one group per image with figures
    assert page.count("keys of the centre query") == 2 * 2  # two gridded maps, two images
    assert page.count("query × key (mean over heads)") == 2
    assert page.count("<section>") == 2 and "Figures for the first 2 of 3 images" in page


def _uniform(q: int, k: int) -> torch.Tensor:
    return torch.full((1, 1, q, k), 1.0 / k)


def test_attention_columns_on_constructed_maps():
    grid = {"q_grid": (4, 4), "k_grid": (4, 4)}
    self_only = torch.eye(16)[None, None]
    s = attention_stats(self_only, grid)
    assert s["entropy"].item() == pytest.approx(0, abs=1e-6)
    assert s["attn_distance"].item() == pytest.approx(0, abs=1e-6)
    assert s["local_mass"].item() == pytest.approx(1)

    dist, local = grid_geometry((4, 4), (4, 4))
    u = attention_stats(_uniform(16, 16), grid)
    assert u["entropy"].item() == pytest.approx(1)
    assert u["attn_distance"].item() == pytest.approx(dist.mean().item())
    # 3×3 neighbourhoods on a 4×4 grid: 4 corners of 4 cells, 8 edges of 6, 4 inner of 9
    assert u["local_mass"].item() == pytest.approx((4 * 4 + 8 * 6 + 4 * 9) / 16 / 16)

    neighbour = torch.zeros(16, 16)
    neighbour[torch.arange(16), (torch.arange(16) + 2) % 16] = 1  # two cells to the right
    n = attention_stats(neighbour[None, None], grid)
    assert n["local_mass"].item() == pytest.approx(0)  # wraps rows too: never in the 3×3
    assert n["attn_distance"].item() > 1.9

    # queries on a coarser grid than the keys: query (0, 0) of 2×2 sits at key cell (1, 1)
    coarse = attention_stats(F.one_hot(torch.tensor([5, 7, 13, 15]), 16).float()[None, None],
                             {"q_grid": (2, 2), "k_grid": (4, 4)})
    assert coarse["local_mass"].item() == pytest.approx(1)
    assert attention_stats(_uniform(5, 16), grid).keys() == {"entropy"}  # Q is not 4×4


@pytest.mark.slow
def test_botnet_from_the_command_line_with_a_local_checkpoint(images, tmp_path, capsys):
    timm = pytest.importorskip("timm")
    weights = tmp_path / "botnet.safetensors"
    save_weights(timm.create_model("botnet26t_256", pretrained=False), weights)
    out = tmp_path / "out"
    code = cli.main(["report", str(images), "--model", "botnet26t_256", "--checkpoint",
                     str(weights), "--out", str(out), "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    with open(out / "summary.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "attention"]
    assert {r["layer"] for r in rows} == {"stages.2.1.self_attn", "stages.3.0.self_attn",
                                         "stages.3.1.self_attn"}
    assert len(rows) == 3 * 3
    for r in rows:
        assert 0 <= float(r["entropy"]) <= 1 and 0 <= float(r["local_mass"]) <= 1
        assert float(r["attn_distance"]) > 0
    page = (out / "report.html").read_text()
    assert page.count("keys of the centre query") == 3 * 3


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_images_with_nan_or_infinite_weights_are_named(kind):
    """Per kind: exactly the images holding a NaN, +inf or -inf weight are listed, however many
    passes a summary covers."""
    from attnviz.outputs import CLASSIFIER, Output
    from attnviz.record import AttentionRecord
    from attnviz.report.collect import Collector

    shape = {"spatial": (6, 5), "context": (6, 5), "gate": (4, 3, 3), "attention": (2, 4, 4),
             "channel": (8,), "radix": (2, 8), "paths": (3, 8)}[kind]
    value = torch.rand(6, *shape)
    bad = {1: float("nan"), 3: float("inf"), 4: -float("inf")}
    for i, x in bad.items():
        value[i].view(-1)[-1] = x  # the last weight: in split 1+ for radix / paths
    col = Collector(0)
    for start in (0, 3):  # two passes of three images
        rec = AttentionRecord(name="m", kind=kind, value=value[start:start + 3], module_type="M",
                              order=0, stage=None, block=None, call=0)
        col.add([f"img{i}" for i in range(start, start + 3)], torch.zeros(3, 3, 8, 8),
                Output(CLASSIFIER, torch.zeros(3, 2), "output"), [rec])
    col.flush()
    (found,) = col.non_finite()
    assert found["layer"] == "m" and found["kind"] == kind and found["images"] == 3
    assert found["examples"] == ["img1", "img3", "img4"]

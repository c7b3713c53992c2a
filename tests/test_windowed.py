"""Windowed attention (Swin) through the layers above the recorder: the report draws it at its
place in the image and summarises it, stats aggregate it, with distances equal to those of
the same map put back on the image (``window_to_image``)."""

from __future__ import annotations

import json

import pytest
import torch

import attnviz
from attnviz import metrics
from attnviz.record import window_rows, window_to_image
from attnviz.report.stats import attention_stats


@pytest.fixture(scope="module")
def swin():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False,
                              depths=(2, 2, 2, 2), embed_dim=24, num_heads=(1, 2, 2, 2)).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad(), attnviz.record(model, layers="layers.0*") as rec:
        model(x)
    return model, rec


def test_summary_distance_equals_the_map_on_the_image(swin) -> None:
    _, rec = swin
    for r in rec.records:
        assert r.value.ndim == 5 and "window" in r.meta
        dense = window_to_image(r.value, r.meta)  # (B, heads, HW, HW)
        grid = tuple(r.meta["image"])
        expected = metrics.attention_distance(dense, grid).mean(1)  # mean over heads
        got = attention_stats(r.value, r.meta)["attn_distance"]
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5), r.key


def test_window_rows_are_the_dense_rows(swin) -> None:
    _, rec = swin
    r = rec.records[1]  # the shifted block
    h, w = r.meta["image"]
    dense = window_to_image(r.value, r.meta)[0]  # (heads, HW, HW)
    for pixel in [(0, 0), (h // 2, w // 2), (h - 1, 3)]:
        row, received = window_rows(r.value[0], r.meta, pixel)
        assert torch.allclose(row.flatten(1), dense[:, pixel[0] * w + pixel[1]])
        assert torch.allclose(row.sum((1, 2)), torch.ones(row.shape[0]), atol=1e-5)


def test_report_and_stats_on_a_windowed_model(swin, tmp_path) -> None:
    from attnviz.report import write_report
    from attnviz.stats import dataset_stats, read_stats

    model, _ = swin
    img = attnviz.sample_images("photos")[0]
    write_report([str(img)], model=model, out_dir=tmp_path / "r", layers="layers.0*",
                 progress=False)
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("keys of the centre pixel") == 2  # both blocks of layer 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    rows = [r for r in summary["rows"] if r["kind"] == "attention"]
    assert len(rows) == 2 and all(r["attn_distance"] is not None for r in rows)
    doc = read_stats(dataset_stats("shapes:2", model, tmp_path / "s", layers="layers.0*",
                                   progress=False))
    att = [layer for layer in doc["layers"] if layer["kind"] == "attention"]
    assert len(att) == 2 and all("head_distance" in layer["moments"] for layer in att)

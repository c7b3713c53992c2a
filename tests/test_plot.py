"""Plots draw exactly the recorded numbers, on a fixed 0–1 scale unless asked otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import attnviz
from attnviz import plot
from attnviz.datasets import make_shapes


@pytest.fixture(scope="module")
def recorded():
    torch.manual_seed(0)
    data = make_shapes(6, seed=4)
    cbam = attnviz.create_model("demo_cbam_resnet").eval()
    resnest = attnviz.create_model("demo_resnest").eval()
    with torch.no_grad(), attnviz.record(cbam) as rec, attnviz.record(resnest) as rec_r:
        cbam(data.images)
        resnest(data.images)
    return data, rec, rec_r


def _heights(ax) -> np.ndarray:
    return np.array([p.vertices[:, 1].max() for p in ax.collections[0].get_paths()])


def test_channel_bars_orders(recorded) -> None:
    _, rec, _ = recorded
    name, s = next(iter(rec.channel.items()))
    w = s[2].numpy()
    np.testing.assert_allclose(_heights(plot.channel_bars(s, index=2).axes[0]), w, atol=1e-7)
    np.testing.assert_allclose(
        _heights(plot.channel_bars(s, index=2, sort=True).axes[0]), np.sort(w)[::-1], atol=1e-7
    )
    top = plot.channel_bars(s, index=2, top_k=5).axes[0]
    np.testing.assert_allclose(_heights(top), np.sort(w)[::-1][:5], atol=1e-7)
    labels = [t.get_text() for t in top.get_xticklabels()]
    assert labels == [str(i) for i in np.argsort(-w, kind="stable")[:5]]
    assert top.get_ylim() == (0, 1)


def test_spatial_fixed_scale_and_stretch_label(recorded) -> None:
    data, rec, _ = recorded
    name, a = next(iter(rec.spatial.items()))
    fig = plot.spatial_overlay(data.images, a, index=1)
    art = fig.axes[0].images[-1]
    np.testing.assert_allclose(art.get_array(), a[1].numpy(), atol=1e-7)
    assert art.get_clim() == (0.0, 1.0)
    lo, hi = a[1].min().item(), a[1].max().item()
    assert f"raw [{lo:.2f}, {hi:.2f}]" in fig.axes[0].get_title()
    stretched = plot.spatial_overlay(data.images, a, index=1, stretch=True)
    assert stretched.axes[0].images[-1].get_clim() == pytest.approx((lo, hi))
    assert "STRETCHED" in stretched.axes[0].get_title()


def test_spatial_grid_one_panel_per_mask(recorded) -> None:
    data, rec, _ = recorded
    fig = plot.spatial_grid(data.images, rec.spatial, index=0)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == len(rec.spatial)
    for ax, mask in zip(panels, rec.spatial.values(), strict=True):
        np.testing.assert_allclose(ax.images[-1].get_array(), mask[0].numpy(), atol=1e-7)
    assert (
        "STRETCHED"
        in plot.spatial_grid(data.images, rec.spatial, stretch=True)._suptitle.get_text()
    )


def test_radix_heatmap_and_split_means(recorded) -> None:
    _, _, rec_r = recorded
    name, a = next(iter(rec_r.radix.items()))
    heat = plot.radix_heatmap(a, index=3).axes[0].images[0]
    np.testing.assert_allclose(heat.get_array(), a[3].numpy(), atol=1e-7)
    means = plot.radix_split_means(rec_r.radix).axes[0]
    bars = [p.get_height() for p in means.patches]
    expected = [v[:, s].mean().item() for s in range(2) for v in rec_r.radix.values()]
    np.testing.assert_allclose(bars, expected, atol=1e-6)


def test_grids_distribution_classwise_are_figures(recorded) -> None:
    data, rec, _ = recorded
    assert isinstance(plot.channel_grid(rec.channel), Figure)
    last = list(rec.channel)[-1]
    dist = plot.channel_distribution(rec.channel[last])
    median = dist.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(
        median, np.sort(np.median(rec.channel[last].numpy(), 0))[::-1], atol=1e-6
    )
    fig = plot.classwise_excitation(rec.channel, data.labels, data.classes, n_channels=8)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 4  # one block per stage
    for ax, name in zip(panels, [n for n in rec.channel if n.startswith("layer") and
                                 n.split(".")[1] == "1"], strict=True):
        c = rec.channel[name].shape[1]  # a truncated panel says so; a whole one does not
        assert ("channels 0–7 of" in ax.get_title()) == (c > 8), (ax.get_title(), c)
        assert len(ax.lines[0].get_xdata()) == min(8, c)
    with pytest.raises(ValueError, match="no spatial masks"):
        plot.spatial_grid(None, {})

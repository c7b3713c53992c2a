"""Figures for the lessons (matplotlib object API, no pyplot state, no model runs).

Masks are drawn on the fixed 0–1 scale of :mod:`attnviz.plot`; the labelled object is outlined
(its ground-truth mask) so a reader can judge a mask without guessing where the object is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import metrics, plot
from .baselines import SpatialScores
from .receptive import ReceptiveField

_STROKE = [patheffects.withStroke(linewidth=2.2, foreground="black")]


def outline_object(ax: Axes, mask: torch.Tensor | np.ndarray, color: str = "white") -> None:
    """Outline a ground-truth object mask (H, W) on an image axes (extent 0..W, 0..H)."""
    m = np.asarray(mask, dtype=float)
    h, w = m.shape
    cs = ax.contour(np.arange(w) + 0.5, np.arange(h) + 0.5, m, levels=[0.5], colors=color,
                    linewidths=1.0)
    cs.set_path_effects(_STROKE)


def outline_objects(fig: Figure, mask: torch.Tensor | np.ndarray) -> Figure:
    """Outline the object on every image panel of ``fig`` (e.g. ``plot.spatial_grid``)."""
    for ax in fig.axes:
        if ax.images and ax.get_label() != "<colorbar>":
            outline_object(ax, mask)
    return fig


def masks_side_by_side(image: torch.Tensor, obj: torch.Tensor,
                       masks: Mapping[str, Mapping[str, torch.Tensor]],
                       layers: Sequence[str], index: int = 0) -> Figure:
    """Rows: models (``{label: rec.spatial}``); columns: ``layers``. Each panel shows the
    mask over the image on the fixed 0–1 scale, the object outlined, and that image's raw
    energy-in-box (1.0 = no preference for the object's box)."""
    rows, img = list(masks), plot.image_hwc(image[index])
    fig = Figure(figsize=(2.3 * len(layers) + 0.8, 2.45 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(layers), squeeze=False)
    art = None
    for i, label in enumerate(rows):
        for j, name in enumerate(layers):
            m = masks[label][name][index : index + 1]
            art = plot.draw_spatial_overlay(axes[i, j], img, m[0].numpy(), alpha=0.6)
            outline_object(axes[i, j], obj[index])
            e = metrics.energy_in_box(m, obj[index : index + 1]).item()
            axes[i, j].set_title(f"{plot.short_name(name)}: mean A {m.mean():.2f}, E {e:.2f}",
                                 fontsize=9)
        axes[i, 0].text(-0.08, 0.5, label, transform=axes[i, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=10)
    fig.colorbar(art, ax=axes, shrink=0.7, label="A (fixed 0–1)")
    return fig


def baseline_strips(trained: SpatialScores, seeds: SpatialScores,
                    default: SpatialScores | None = None, metric: str = "pointing",
                    chance: float | None = None) -> Figure:
    """Per layer: the random-init value of every seed (dots, with a box), the trained value
    (red diamond) and, optionally, PyTorch's default init (black cross)."""
    vals = getattr(seeds, metric)
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(seeds.layers))
    ax.boxplot(vals, positions=x, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for j in x:
        ax.scatter(j + rng.uniform(-0.15, 0.15, len(vals)), vals[:, j], s=9, color="tab:gray",
                   alpha=0.7, label=f"random init ({len(vals)} seeds)" if j == 0 else None)
    ax.scatter(x, getattr(trained, metric)[0], marker="D", s=40, color="tab:red", zorder=3,
               label="trained")
    if default is not None:
        ax.scatter(x, getattr(default, metric)[0], marker="x", s=40, color="black", zorder=3,
                   label="reset_parameters() init")
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label=f"chance ≈ {chance:.2f}")
    ax.set_xticks(x, [plot.short_name(n) for n in seeds.layers], rotation=30, ha="right")
    ax.set_ylabel({"pointing": "pointing game", "energy": "raw energy-in-box"}.get(metric,
                                                                                  metric))
    ax.legend(fontsize=8, loc="best")
    return fig


def class_channel_heatmap(weights: torch.Tensor, labels: torch.Tensor,
                          class_names: Sequence[str], k: int = 20, title: str = "") -> Figure:
    """Mean s(c) per class (rows) for the ``k`` channels whose class means differ most
    (columns), on a fixed 0–1 scale: which channels each class switches on or off."""
    w, y = weights.float().cpu(), labels.cpu()
    means = torch.stack([w[y == c].mean(0) for c in range(len(class_names))])
    top = means.var(0).argsort(descending=True)[:k]
    fig = Figure(figsize=(0.36 * k + 2.2, 0.42 * len(class_names) + 1.3), layout="constrained")
    ax = fig.subplots()
    art = ax.imshow(means[:, top].numpy(), vmin=0, vmax=1, cmap=plot.DEFAULT_CMAP,
                    aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(class_names)), list(class_names))
    ax.set_xticks(range(len(top)), [str(int(c)) for c in top], rotation=90, fontsize=8)
    ax.set_xlabel(f"channel (the {len(top)} whose class means differ most)")
    fig.colorbar(art, ax=ax, label="mean s(c)")
    ax.set_title(title or "mean s(c) per class", fontsize=10)
    return fig


def receptive_field_figure(fields: Sequence[ReceptiveField], image: torch.Tensor,
                           layers: Sequence[str] | None = None) -> Figure:
    """Rows: gate kernel sizes; columns: layers. The centre mask cell (red) and the window of
    the image it sees (white), on the image."""
    ks = sorted({f.kernel_size for f in fields})
    layers = list(layers or dict.fromkeys(f.layer for f in fields))
    by = {(f.layer, f.kernel_size): f for f in fields}
    img = plot.image_hwc(image)
    size = img.shape[0]
    fig = Figure(figsize=(2.3 * len(layers), 2.5 * len(ks)), layout="constrained")
    axes = fig.subplots(len(ks), len(layers), squeeze=False)
    for i, k in enumerate(ks):
        for j, name in enumerate(layers):
            f, ax = by[name, k], axes[i, j]
            ax.imshow(img, extent=(0, size, size, 0))
            plot.hide_axis(ax)
            x0, y0, x1, y1 = f.box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=2,
                                   path_effects=_STROKE))
            cell = size / f.grid[1]
            c0 = (f.grid[1] // 2) * cell
            ax.add_patch(Rectangle((c0, c0), cell, cell, color="tab:red", alpha=0.8))
            whole = " (all)" if f.side >= size else ""
            ax.set_title(f"{plot.short_name(name)} k={k}: {f.side} px{whole}", fontsize=9)
    fig.suptitle("what one mask cell (red) can see (white): gate k×k on the feature map",
                 fontsize=10)
    return fig

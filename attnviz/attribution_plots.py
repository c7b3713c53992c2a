"""Figures for attention next to attribution (matplotlib object API, no pyplot state).

The attention mask is drawn on a fixed 0–1 scale with its raw range in the title (it is a gate
the network multiplied by); attribution maps have arbitrary units, so each is normalised to its
own maximum and labelled "normalised".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .errors import ParameterError
from .plot import DEFAULT_CMAP, hide_axis

CMAP = DEFAULT_CMAP
_LABELS = {"gradcam": "Grad-CAM", "ig": "Integrated gradients", "saliency": "Saliency",
           "occlusion": "Occlusion"}


def _np2(t: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    a = t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, float)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ParameterError(f"{what} must be a single (h, w) map, got shape {np.shape(t)}")
    return a


def _image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    a = np.asarray(image, dtype=float)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ParameterError(f"image must be (3, H, W) or (H, W, 3), got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    return np.clip(a, 0, 1)


def plot_attention_vs_attribution(
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    maps: Mapping[str, torch.Tensor | np.ndarray],
    title: str | None = None,
    alpha: float = 0.5,
    signed: bool = False,
) -> Figure:
    """One row: the image, the attention mask over it, then each attribution map over it.

    ``image`` (3, H, W) in [0, 1]; ``mask`` (h, w); ``maps`` ``{name: (H', W')}`` at any
    resolution (drawn bilinear-stretched over the image). The mask uses a fixed 0–1 scale (raw
    range in its title); each map is divided by its own max |value| ("normalised"); negative
    values are clipped to 0 unless ``signed`` (then a −1…1 scale).
    """
    img = _image(image)
    h, w = img.shape[:2]
    m = _np2(mask, "mask")
    n = 2 + len(maps)
    fig = Figure(figsize=(2.4 * n, 2.9), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    extent = (0, w, h, 0)
    axes[0].imshow(img, extent=extent)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(img, extent=extent)
    art = axes[1].imshow(m, cmap=CMAP, vmin=0.0, vmax=1.0, alpha=alpha, extent=extent,
                         interpolation="bilinear")
    axes[1].set_title(f"attention A {m.shape[0]}×{m.shape[1]}\nraw [{m.min():.2f}, "
                      f"{m.max():.2f}] · fixed 0–1", fontsize=8)
    fig.colorbar(art, ax=axes[1], shrink=0.7, ticks=[0, 0.5, 1])
    for ax, (name, a) in zip(axes[2:], maps.items(), strict=True):
        a = _np2(a, f"map {name!r}")
        peak = float(np.abs(a).max())
        a = a / peak if peak > 0 else a
        vmin = -1.0 if signed else 0.0
        a = a if signed else np.clip(a, 0, None)
        ax.imshow(img, extent=extent)
        ax.imshow(a, cmap="coolwarm" if signed else CMAP, vmin=vmin, vmax=1.0, alpha=alpha,
                  extent=extent, interpolation="bilinear")
        ax.set_title(f"{_LABELS.get(name, name)} {a.shape[0]}×{a.shape[1]}\nnormalised "
                     f"(÷ max {peak:.2g})", fontsize=8)
    for ax in axes:
        hide_axis(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_agreement(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Bar chart of :func:`attnviz.agreement.agreement_table` rows: per method, Spearman ρ
    (± std), top-k IoU and the attribution's pointing game; the attention mask's own pointing
    game is a dashed line."""
    if not rows:
        raise ParameterError("plot_agreement needs at least one row")
    names = [_LABELS.get(r["method"], r["method"]) for r in rows]
    x = np.arange(len(rows))
    k = round(100 * rows[0].get("topk", 0.2))
    series = [
        ("Spearman ρ", [r["spearman_mean"] for r in rows],
         [r.get("spearman_std", 0.0) for r in rows]),
        (f"top-{k}% IoU", [r["iou_mean"] for r in rows], None),
    ]
    has_pointing = rows[0].get("pointing_attribution") is not None
    if has_pointing:
        series.append(("pointing (attribution)", [r["pointing_attribution"] for r in rows], None))
    width = 0.8 / len(series)
    fig = Figure(figsize=(1.6 + 1.5 * len(rows), 3.2), layout="constrained")
    ax = fig.subplots()
    for i, (label, vals, err) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=err, capsize=3,
               label=label)
    if has_pointing and rows[0].get("pointing_attention") is not None:
        ax.axhline(rows[0]["pointing_attention"], color="k", ls="--", lw=1,
                   label="pointing (attention)")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xticks(x, names)
    ax.set_ylim(min(-0.2, ax.get_ylim()[0]), 1.05)
    ax.set_ylabel("agreement with attention / score")
    ax.legend(fontsize=7, loc="best")
    layer = rows[0].get("mask_layer")
    ax.set_title(title or f"attention {layer} vs attribution (n={rows[0].get('n', '?')})",
                 fontsize=9)
    return fig


__all__ = ["plot_agreement", "plot_attention_vs_attribution"]

"""Figures from recorded attention weights. Every function returns a new matplotlib ``Figure``
(object API, no pyplot state) and never runs a model.

Spatial masks use a fixed 0–1 colour scale by default and print each mask's raw range:
stretching each mask to its own min–max makes even a random network look attentive, so
``stretch=True`` exists but labels the figure as stretched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from .errors import ParameterError
from .vis import CELLS, DEFAULT_CMAP


# -- helpers ---------------------------------------------------------------------------------
def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _pick(t: torch.Tensor | np.ndarray, index: int, ndim: int) -> np.ndarray:
    """Select image ``index`` when ``t`` has a batch axis beyond ``ndim`` dims."""
    a = _np(t)
    if a.ndim == ndim + 1:
        if not 0 <= index < a.shape[0]:
            raise IndexError(f"image index {index} out of range for a batch of {a.shape[0]}")
        a = a[index]
    if a.ndim != ndim:
        raise ParameterError(f"expected a {ndim}-d array (or a batch of them), got shape {a.shape}")
    return a


def image_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) image in [0, 1] → (H, W, 3) numpy for imshow."""
    a = _np(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    return np.clip(a, 0, 1)


def short_name(name: str) -> str:
    """``layer3.0.attn.spatial`` → ``layer3.0``; drops the attention module's own suffix."""
    parts = name.split(".")
    keep = [p for p in parts if not re.fullmatch(r"attn|se|cbam|channel|spatial|gate|conv2|eca", p)]
    return ".".join(keep) or name


def stage_of(name: str) -> str:
    """Group key for per-stage layouts: the first numbered component (``layer3``, ``stages.2``)."""
    m = re.match(r"(.*?\D)(\d+)", name)
    return m.group(0) if m else name


def group_by_stage(names: Sequence[str]) -> dict[str, list[str]]:
    """Layer names grouped by stage, in the given (model) order."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(stage_of(n), []).append(n)
    return groups


def hide_axis(ax: Axes) -> None:
    """No axis lines and no ticks (matplotlib still lays out the ticks of an axis that is only
    switched off, which makes image panels ~35% slower to render)."""
    ax.set_axis_off()
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(n: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


# -- channel weights s(c) ----------------------------------------------------------------------
def bar_verts(heights: np.ndarray) -> np.ndarray:
    """Rectangles (n, 4, 2) for bars of ``heights`` at x = 0..n-1 (for a ``PolyCollection``)."""
    h = np.asarray(heights, dtype=float)
    half = 0.5 if len(h) > 64 else 0.4
    x, z = np.arange(len(h), dtype=float), np.zeros(len(h))
    return np.stack(
        [np.stack(p, 1) for p in ((x - half, z), (x - half, h), (x + half, h), (x + half, z))], 1
    )


def draw_channel_bars(
    ax: Axes,
    weights: np.ndarray,
    sort: bool = False,
    top_k: int | None = None,
    highlight: int | None = None,
) -> PolyCollection:
    """Bars of s(c) on a fixed 0–1 axis; ``sort`` descending; ``top_k`` keeps the largest k.

    The bars are one ``PolyCollection`` (bar ``i`` is path ``i``): one artist draws much faster
    than hundreds of rectangles, which keeps the explorer interactive."""
    w = np.asarray(weights, dtype=float)
    idx = np.arange(len(w))
    if sort or top_k:
        idx = np.argsort(-w, kind="stable")
    if top_k:
        idx = idx[:top_k]
    verts = bar_verts(w[idx])
    colors = ["tab:red" if i == highlight else "tab:blue" for i in idx]
    bars = PolyCollection(verts, facecolors=colors, edgecolors="none")
    ax.add_collection(bars)
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.5, len(idx) - 0.5)
    if top_k or (sort and len(idx) <= 16):
        ax.set_xticks(np.arange(len(idx)), [str(i) for i in idx], rotation=90, fontsize=7)
        ax.set_xlabel("channel (sorted)")
    else:
        ax.set_xlabel("channel rank" if sort else "channel")
    ax.set_ylabel("s(c)")
    return bars


def channel_bars(
    weights: torch.Tensor,
    index: int = 0,
    sort: bool = False,
    top_k: int | None = None,
    title: str | None = None,
) -> Figure:
    """s(c) of one image as bars: channel order, ``sort=True`` by value, or the top k."""
    w = _pick(weights, index, 1)
    fig = Figure(figsize=(7, 2.6), layout="constrained")
    ax = fig.subplots()
    draw_channel_bars(ax, w, sort=sort, top_k=top_k)
    ax.set_title(
        title
        or f"channel weights s(c): {len(w)} channels, mean {w.mean():.2f}, "
        f"range [{w.min():.2f}, {w.max():.2f}]",
        fontsize=9,
    )
    return fig


def channel_grid(
    channel: Mapping[str, torch.Tensor],
    index: int = 0,
    sort: bool = True,
    ncols: int = 4,
) -> Figure:
    """One bar panel per block, one row per stage: how s(c) changes with depth."""
    if not channel:
        raise ParameterError("no channel weights to plot (record a model with channel attention)")
    groups = group_by_stage(list(channel))
    ncols = min(ncols, max(len(v) for v in groups.values()))
    rows = sum(math.ceil(len(v) / ncols) for v in groups.values())
    fig = Figure(figsize=(3.2 * ncols, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, ncols, squeeze=False)
    r = 0
    for names in groups.values():
        for i, name in enumerate(names):
            ax = axes[r + i // ncols, i % ncols]
            w = _pick(channel[name], index, 1)
            draw_channel_bars(ax, w, sort=sort)
            ax.set_title(f"{short_name(name)}  mean {w.mean():.2f}", fontsize=8)
            ax.set_xlabel("")
        for j in range(len(names), math.ceil(len(names) / ncols) * ncols):
            axes[r + j // ncols, j % ncols].set_visible(False)
        r += math.ceil(len(names) / ncols)
    fig.suptitle("channel weights s(c) per block" + (" (sorted)" if sort else ""), fontsize=10)
    return fig


def channel_distribution(weights: torch.Tensor, title: str | None = None) -> Figure:
    """s(c) over a batch (B, C): per-channel median with 10–90% band (sorted by median), and a
    histogram of all values."""
    w = _np(weights)
    if w.ndim != 2:
        raise ParameterError(f"channel_distribution needs (B, C) weights, got shape {w.shape}")
    order = np.argsort(-np.median(w, 0), kind="stable")
    q10, q50, q90 = np.percentile(w[:, order], [10, 50, 90], axis=0)
    fig = Figure(figsize=(9, 2.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 1])
    x = np.arange(w.shape[1])
    ax1.fill_between(x, q10, q90, alpha=0.3, label="10–90%")
    ax1.plot(x, q50, lw=1, label="median")
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("channel (sorted by median)")
    ax1.set_ylabel("s(c)")
    ax1.legend(fontsize=7, loc="upper right")
    ax2.hist(w.ravel(), bins=40, range=(0, 1), color="tab:gray")
    ax2.set_xlabel("s(c)")
    ax2.set_ylabel("count")
    fig.suptitle(title or f"s(c) over {w.shape[0]} images", fontsize=10)
    return fig


def classwise_excitation(
    channel: Mapping[str, torch.Tensor],
    labels: torch.Tensor | Sequence[int],
    class_names: Sequence[str],
    layers: Sequence[str] | None = None,
    n_channels: int = 50,
) -> Figure:
    """SE-paper Fig. 6: mean s(c) per class over the first ``n_channels`` channels, one panel per
    chosen block (default: the last block of each stage), with the all-class mean dashed; a
    panel that shows only some of its block's channels says so in its title."""
    labels = np.asarray(_np(torch.as_tensor(labels)), dtype=int)
    if layers is None:
        layers = [names[-1] for names in group_by_stage(list(channel)).values()]
    fig, axes = _grid(len(layers), len(layers), (3.4, 2.6))
    for ax, name in zip(axes, layers, strict=True):
        full = _np(channel[name])
        w = full[:, :n_channels]
        x = np.arange(w.shape[1])
        for c, cname in enumerate(class_names):
            sel = labels == c
            if sel.any():
                ax.plot(x, w[sel].mean(0), lw=1, label=cname)
        ax.plot(x, w.mean(0), "k--", lw=1, label="all")
        ax.set_ylim(0, 1)
        shown = (f"\nchannels 0–{w.shape[1] - 1} of {full.shape[1]}"
                 if w.shape[1] < full.shape[1] else "")
        ax.set_title(short_name(name) + shown, fontsize=9)
        ax.set_xlabel("channel index")
    axes[0].set_ylabel("mean s(c)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("class-wise mean excitation (SE paper, Fig. 6 style)", fontsize=10)
    return fig


# -- spatial masks A ---------------------------------------------------------------------------
def mask_range_text(mask: np.ndarray) -> str:
    return f"raw [{mask.min():.2f}, {mask.max():.2f}] mean {mask.mean():.2f}"


def draw_spatial_overlay(
    ax: Axes,
    image: np.ndarray | None,
    mask: np.ndarray,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    stretch: bool = False,
):
    """Draw ``mask`` over ``image``, one colour per cell (not smoothed); returns the mask
    artist."""
    vmin, vmax = (float(mask.min()), float(mask.max())) if stretch else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-6
    if image is not None:
        h, w = image.shape[:2]
        ax.imshow(image, extent=(0, w, h, 0))
    else:
        h, w = mask.shape
    art = ax.imshow(
        mask,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha if image is not None else 1.0,
        extent=(0, w, h, 0),
        interpolation=CELLS,
    )
    hide_axis(ax)
    return art


def spatial_overlay(
    image: torch.Tensor | None,
    mask: torch.Tensor,
    index: int = 0,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    stretch: bool = False,
    title: str | None = None,
) -> Figure:
    """A spatial mask over its image on a fixed 0–1 scale (``stretch=True``: own min–max,
    labelled "stretched")."""
    m = _pick(mask, index, 2)
    img = image_hwc(_pick(image, index, 3)) if image is not None else None
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    art = draw_spatial_overlay(ax, img, m, alpha, cmap, stretch)
    fig.colorbar(art, ax=ax, shrink=0.8, label="A (stretched)" if stretch else "A (0–1)")
    scale = "STRETCHED to own range" if stretch else "fixed 0–1 scale"
    ax.set_title(f"{title + chr(10) if title else ''}{mask_range_text(m)} · {scale}", fontsize=8)
    return fig


def spatial_grid(
    image: torch.Tensor | None,
    spatial: Mapping[str, torch.Tensor],
    index: int = 0,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    stretch: bool = False,
    ncols: int = 4,
) -> Figure:
    """Every block's spatial mask over the image, raw range printed under each."""
    if not spatial:
        raise ParameterError("no spatial masks to plot (record a model with spatial attention)")
    img = image_hwc(_pick(image, index, 3)) if image is not None else None
    fig, axes = _grid(len(spatial), ncols, (2.6, 2.7))
    art = None
    for ax, (name, mask) in zip(axes, spatial.items(), strict=True):
        m = _pick(mask, index, 2)
        art = draw_spatial_overlay(ax, img, m, alpha, cmap, stretch)
        ax.set_title(
            f"{short_name(name)} {m.shape[0]}×{m.shape[1]}\n{mask_range_text(m)}", fontsize=7
        )
    if not stretch:
        fig.colorbar(art, ax=axes, shrink=0.6, label="A (fixed 0–1)")
    fig.suptitle(
        "spatial masks A"
        + (" — each STRETCHED to its own range" if stretch else " on a fixed 0–1 scale"),
        fontsize=10,
    )
    return fig


# -- split attention (radix) -----------------------------------------------------------------
def radix_heatmap(weights: torch.Tensor, index: int = 0, title: str | None = None) -> Figure:
    """R×C heatmap of one image's radix weights (rows sum to 1 per channel)."""
    a = _pick(weights, index, 2)
    fig = Figure(figsize=(8, 0.6 + 0.45 * a.shape[0]), layout="constrained")
    ax = fig.subplots()
    art = ax.imshow(a, aspect="auto", vmin=0, vmax=1, cmap=DEFAULT_CMAP, interpolation=CELLS)
    ax.set_yticks(range(a.shape[0]), [f"split {r}" for r in range(a.shape[0])])
    ax.set_xlabel("channel")
    fig.colorbar(art, ax=ax, label="a_r(c)")
    ax.set_title(
        title
        or f"radix weights ({a.shape[0]} splits × {a.shape[1]} channels), "
        f"a_0 range [{a[0].min():.2f}, {a[0].max():.2f}]",
        fontsize=9,
    )
    return fig


def radix_split_means(radix: Mapping[str, torch.Tensor]) -> Figure:
    """Mean weight of each split per block (over images and channels), grouped by stage, with
    the across-channel spread of a_0 as error bars."""
    if not radix:
        raise ParameterError("no radix weights to plot (record a split-attention model)")
    names = list(radix)
    arrays = [_np(radix[n]) for n in names]
    r = arrays[0].shape[1]
    fig = Figure(figsize=(max(5, 0.5 * len(names) + 2), 3), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    width = 0.8 / r
    for s in range(r):
        means = [a[:, s].mean() for a in arrays]
        stds = [a[:, s].std() for a in arrays]
        ax.bar(
            x + (s - (r - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=f"split {s}"
        )
    ax.axhline(1 / r, color="k", ls=":", lw=1, label="uniform 1/R")
    ax.set_xticks(x, [short_name(n) for n in names], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean a_r (± sd over images·channels)")
    ax.legend(fontsize=7)
    ax.set_title("split-attention weights by block", fontsize=10)
    return fig

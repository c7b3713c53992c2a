"""Figures for attention maps and for gates that are neither channel nor spatial.

- attention maps (B, heads, Q, K): pick a query position → its key weights over the image
  (heads averaged, or one head), on the honest scale of attention rows (a multiple of the
  uniform weight 1/K, log scale: :func:`attnviz.vis.to_unit`) with the raw range printed;
  per-head mean attention distance and entropy; per-head attention on the labelled object;
- directional gates (coordinate attention): a_h and a_w as strips along the image edges;
- full gates (B, C, H, W): one channel's map.

No model calls here: everything is drawn from recorded tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import metrics
from .errors import ParameterError
from .plot import DEFAULT_CMAP, _np, _pick, draw_spatial_overlay, hide_axis, image_hwc
from .plot import mask_range_text as range_text
from .vis import UNIFORM_LABEL, to_unit, uniform_ticks


def _grid_of(attn: torch.Tensor | np.ndarray, grid: tuple[int, int] | None, n: int,
             what: str) -> tuple[int, int]:
    if grid is not None:
        if grid[0] * grid[1] != n:
            raise ParameterError(f"{what} grid {grid} does not hold {n} tokens")
        return tuple(grid)  # type: ignore[return-value]
    side = int(round(n**0.5))
    if side * side != n:
        raise ParameterError(f"{n} {what} tokens are not a square grid: pass the {what} grid "
                             "(record.meta['q_grid'] / ['k_grid'])")
    return side, side


def grids(a: np.ndarray | torch.Tensor, q_grid: tuple[int, int] | None,
          k_grid: tuple[int, int] | None) -> tuple[tuple[int, int], ...]:
    """Query and key grids of a (…, Q, K) map (the key grid defaults to the query grid; a
    square grid when none is given)."""
    q, k = a.shape[-2:]
    qg = _grid_of(a, q_grid, q, "query")
    return qg, _grid_of(a, k_grid or (qg if q == k else None), k, "key")


def key_map(
    attn: torch.Tensor,
    query: tuple[int, int],
    q_grid: tuple[int, int] | None = None,
    k_grid: tuple[int, int] | None = None,
    head: int | None = None,
    index: int = 0,
) -> np.ndarray:
    """The key weights of one query cell ``(row, col)`` as a (Hk, Wk) map: exactly the
    recorded row ``attn[index, head, q]`` (``head=None``: the mean over heads)."""
    a = _pick(attn, index, 3)  # (heads, Q, K)
    heads = a.shape[0]
    qg, kg = grids(a, q_grid, k_grid)
    r, c = query
    if not (0 <= r < qg[0] and 0 <= c < qg[1]):
        raise ParameterError(f"query {query} is outside the {qg[0]}×{qg[1]} query grid")
    if head is not None and not 0 <= head < heads:
        raise ParameterError(f"head {head} out of range: this map has {heads} head(s)")
    row = a[:, r * qg[1] + c] if head is None else a[head : head + 1, r * qg[1] + c]
    return row.mean(0).reshape(kg)


def draw_key_map(ax: Axes, image: np.ndarray | None, kmap: np.ndarray, query: tuple[int, int],
                 q_grid: tuple[int, int], alpha: float = 0.5, cmap: str = DEFAULT_CMAP,
                 stretch: bool = False):
    """Draw a key map over ``image`` and mark the query cell; returns the map artist.

    The row is drawn on the scale of attention rows (:func:`attnviz.vis.to_unit`: a multiple
    of the uniform weight 1/K, log scale, 0.5 = uniform), or stretched to its own range."""
    shown = kmap if stretch else to_unit(kmap, "attention", kmap.size)[0]
    art = draw_spatial_overlay(ax, image, shown, alpha, cmap, stretch)
    query_marker(ax)
    place_query(ax, query, q_grid, image.shape[:2] if image is not None else kmap.shape)
    return art


def query_marker(ax: Axes) -> list:
    """Add the query marker, a white and a black +, as the axes' last two lines (placed by
    :func:`place_query`); returns the two lines."""
    return [ax.plot([], [], marker="+", markersize=14, mew=2.5, color="white")[0],
            ax.plot([], [], marker="+", markersize=12, mew=1.2, color="black")[0]]


def place_query(ax: Axes, query: tuple[int, int], q_grid: tuple[int, int],
                hw: tuple[int, int]) -> None:
    """Move the query marker (the axes' last two lines) to the centre of the query's cell."""
    (h, w), (r, c) = hw, query
    for line in ax.lines[-2:]:
        line.set_data([(c + 0.5) * w / q_grid[1]], [(r + 0.5) * h / q_grid[0]])


def _overlay_title(title: str | None, query: tuple[int, int], head: int | None,
                   kmap: np.ndarray) -> str:
    who = "mean of heads" if head is None else f"head {head}"
    return f"{title + chr(10) if title else ''}query {query} · {who}\n{range_text(kmap)}"


def row_colorbar(fig: Figure, art, axes, stretch: bool = False, shrink: float = 0.8):
    """The colour bar of key maps: ticks at ⅛×, ¼×, ½×, 1×, 2×, 4×, 8× the uniform weight
    (or "stretched" when each map has its own range)."""
    if stretch:
        return fig.colorbar(art, ax=axes, shrink=shrink, label="key weight (STRETCHED)")
    bar = fig.colorbar(art, ax=axes, shrink=shrink, label=UNIFORM_LABEL)
    positions, labels = uniform_ticks()
    bar.set_ticks(positions, labels=labels)
    return bar


def _key_panels(image, attn, query, q_grid, k_grid, heads, index, alpha, cmap, stretch,
                panel: tuple[float, float]):
    """One key-map panel per entry of ``heads`` (None = mean of heads), side by side."""
    a = _pick(attn, index, 3)
    qg, kg = grids(a, q_grid, k_grid)
    img = image_hwc(_pick(image, index, 3)) if image is not None else None
    fig = Figure(figsize=(panel[0] * len(heads), panel[1]), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, len(heads))))
    maps = [key_map(attn, query, qg, kg, h, index) for h in heads]
    art = [draw_key_map(ax, img, m, query, qg, alpha, cmap, stretch)
           for ax, m in zip(axes, maps, strict=True)][-1]
    return fig, axes, maps, art


def attention_overlay(
    image: torch.Tensor | None,
    attn: torch.Tensor,
    query: tuple[int, int],
    q_grid: tuple[int, int] | None = None,
    k_grid: tuple[int, int] | None = None,
    head: int | None = None,
    index: int = 0,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    stretch: bool = False,
    title: str | None = None,
) -> Figure:
    """Where one query pixel looks: its key weights over the image (multiple of uniform, log
    scale; ``stretch=True``: the map's own range, labelled so)."""
    fig, (ax,), (kmap,), art = _key_panels(image, attn, query, q_grid, k_grid, [head], index,
                                           alpha, cmap, stretch, (4.2, 3.6))
    row_colorbar(fig, art, ax, stretch)
    ax.set_title(_overlay_title(title, query, head, kmap), fontsize=8)
    return fig


def attention_heads(
    image: torch.Tensor | None,
    attn: torch.Tensor,
    query: tuple[int, int],
    q_grid: tuple[int, int] | None = None,
    k_grid: tuple[int, int] | None = None,
    index: int = 0,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    stretch: bool = False,
) -> Figure:
    """The mean over heads and every head, side by side, for one query (multiple of uniform, log
    scale; ``stretch=True``: each map to its own range, labelled so)."""
    heads = [None, *range(_pick(attn, index, 3).shape[0])]
    fig, axes, maps, art = _key_panels(image, attn, query, q_grid, k_grid, heads, index,
                                       alpha, cmap, stretch, (2.3, 2.6))
    for ax, h, kmap in zip(axes, heads, maps, strict=True):
        ax.set_title(f"{'mean' if h is None else f'head {h}'}\n{range_text(kmap)}", fontsize=7)
    if stretch:
        fig.suptitle("STRETCHED: each map to its own min–max", fontsize=8)
    else:
        row_colorbar(fig, art, axes, shrink=0.7)
    return fig


def head_statistics(attn: torch.Tensor, q_grid: tuple[int, int] | None = None,
                    k_grid: tuple[int, int] | None = None, title: str | None = None) -> Figure:
    """Per head: mean attention distance (key cells) and normalised entropy, over the batch."""
    a = attn if isinstance(attn, torch.Tensor) else torch.as_tensor(attn)
    if a.ndim != 4:
        raise ParameterError(f"expected attention (B, heads, Q, K), got {tuple(a.shape)}")
    qg, kg = grids(a, q_grid, k_grid)
    dist = _np(metrics.attention_distance(a, qg, kg).mean(0))
    ent = _np(metrics.attention_entropy(a).mean(0))
    fig = Figure(figsize=(6.4, 2.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(dist))
    ax1.bar(x, dist, color="tab:blue")
    ax1.set(xlabel="head", ylabel="mean distance (key cells)", xticks=x)
    ax2.bar(x, ent, color="tab:orange")
    ax2.set(xlabel="head", ylabel="entropy (1 = uniform)", xticks=x, ylim=(0, 1))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def object_attention_by_head(ratios: list[float], title: str | None = None) -> Figure:
    """One bar per head: attention from the object's query cells onto the object, as a ratio to
    the object's area share (:func:`attnviz.metrics.attention_on_object_by_head`), log scale;
    the dashed line at 1 is no preference."""
    fig = Figure(figsize=(4.8, 2.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(ratios))
    colors = ["tab:green" if r > 1 else "tab:gray" for r in ratios]
    ax.bar(x, ratios, color=colors)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="1 = no preference (area share)")
    ax.set_yscale("log")
    for i, r in zip(x, ratios, strict=True):
        ax.annotate(f"{r:.2f}×", (i, r), ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="head", ylabel="on object / area share", xticks=x)
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def directional_gates(
    image: torch.Tensor | None,
    a_w: torch.Tensor,
    a_h: torch.Tensor,
    index: int = 0,
    channel: int | None = None,
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """Coordinate attention: a_w (B, C, 1, W) as a strip above the image, a_h (B, C, H, 1) as a
    strip beside it (one channel, or the channel mean), on the fixed 0–1 scale."""
    w_, h_ = _pick(a_w, index, 3), _pick(a_h, index, 3)
    if w_.shape[1] != 1 or h_.shape[2] != 1:
        raise ParameterError(
            f"expected a_w (C, 1, W) and a_h (C, H, 1), got {w_.shape}, {h_.shape}")
    if channel is not None and not 0 <= channel < w_.shape[0]:
        raise ParameterError(f"channel {channel} out of range (C = {w_.shape[0]})")
    sel = slice(None) if channel is None else slice(channel, channel + 1)
    row, col = w_[sel, 0, :].mean(0)[None, :], h_[sel, :, 0].mean(0)[:, None]
    fig = Figure(figsize=(4.4, 4.2), layout="constrained")
    spec = fig.add_gridspec(2, 2, width_ratios=(1, 12), height_ratios=(1, 12))
    top, side, main = fig.add_subplot(spec[0, 1]), fig.add_subplot(spec[1, 0]), fig.add_subplot(
        spec[1, 1])
    art = top.imshow(row, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    side.imshow(col, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    if image is not None:
        main.imshow(image_hwc(_pick(image, index, 3)))
    else:
        main.imshow(col * row, cmap=cmap, vmin=0, vmax=1)
    for ax in (top, side, main):
        hide_axis(ax)
    who = "mean of channels" if channel is None else f"channel {channel}"
    top.set_title(f"a_w {range_text(row)} · a_h {range_text(col)} · {who}", fontsize=7)
    fig.colorbar(art, ax=main, shrink=0.7, label="gate (0–1)")
    return fig


def full_gate(image: torch.Tensor | None, gate: torch.Tensor, channel: int = 0, index: int = 0,
              alpha: float = 0.5, cmap: str = DEFAULT_CMAP) -> Figure:
    """One channel of a full (B, C, H, W) gate over the image, fixed 0–1 scale."""
    g = _pick(gate, index, 3)
    if not 0 <= channel < g.shape[0]:
        raise ParameterError(f"channel {channel} out of range (C = {g.shape[0]})")
    m = g[channel]
    img = image_hwc(_pick(image, index, 3)) if image is not None else None
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    art = draw_spatial_overlay(ax, img, m, alpha, cmap)
    fig.colorbar(art, ax=ax, shrink=0.8, label="gate (0–1)")
    ax.set_title(f"channel {channel} · {range_text(m)}", fontsize=8)
    return fig

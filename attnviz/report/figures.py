"""What the report shows for each image: one panel per recorded layer, by kind.

Every panel is data for the page template (``report.html.j2``): tiles (a map drawn over the image
and, beside it, the same map alone; see :mod:`.tiles`) and channel-weight distributions (every
s(c) of a block sorted, with its spread; drawn as SVG by the template). Top-k bars taught nothing:
in a trained block the largest s(c) are all about 1. How each kind
is drawn, its title and its scale come from :mod:`attnviz.kinds`: gates the network multiplied by
(spatial masks, gates, split weights) use the fixed 0–1 scale of the shared colour bar; weights
that sum to 1 over many cells (global-context pooling, attention rows) are drawn as a multiple of
the uniform weight 1/K on a log scale (:func:`attnviz.vis.to_unit`), labelled, with their raw
range printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..kinds import KINDS, ORDER
from ..record import window_rows
from ..vis import to_unit
from .tiles import map_uri, pool

#: CSS pixels of a tile's longer side (the page enlarges any tile on a click, without script)
SIDE = 160
#: SVG units of a channel-distribution chart: width, and the y of s(c) = 0 and s(c) = 1
DIST_W, DIST_Y0, DIST_Y1 = 160, 56, 6
#: attention matrices without a grid are block-averaged to at most this many cells a side
MAX_MATRIX = 128


@dataclass
class Tile:
    """One picture: ``src`` a data URI; ``overlay``: drawn over the image."""

    src: str
    caption: list[str]
    overlay: bool = True
    width: int = SIDE
    height: int = SIDE
    marker: tuple[float, float] | None = None  # (x, y) in 0..1: where the query is


@dataclass
class Distribution:
    """Values of one block's channels, sorted from largest to smallest, as an SVG polyline
    (``points``) on an axis from ``bottom`` (y=DIST_Y0) to ``top`` (y=DIST_Y1), with a band
    and a dashed line: for s(c) (:func:`channel_distribution`) the fixed 0–1 axis, the
    interquartile band (y of the 75th and 25th percentile) and the median; for a class's
    deviation (:func:`deviation_chart`) ±the largest |Δ|, the band ±the median sd and zero."""

    layer: str
    caption: str
    points: str
    band: tuple[str, str]
    median: str
    values: str = ""  # the largest values with their channels, shown on hover
    top: str = "1"
    bottom: str = "0"


@dataclass
class Group:
    """The panels of one kind for one image."""

    title: str
    tiles: list[Tile] = field(default_factory=list)
    dists: list[Distribution] = field(default_factory=list)
    outlined: bool = False  # maps over the image grid: the object's outline is drawn over them


def raw_range(v: np.ndarray) -> str:
    """``raw [min, max] mean m`` (finite values only; says how many are not)."""
    finite = v[np.isfinite(v)]
    bad = v.size - finite.size
    if not finite.size:
        return "no finite values"
    text = f"raw [{finite.min():.3g}, {finite.max():.3g}] mean {finite.mean():.3g}"
    return text + (f", {bad} NaN/Inf" if bad else "")


def _peak(v: np.ndarray) -> float:
    finite = v[np.isfinite(v)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _shape(v: np.ndarray) -> str:
    return "×".join(str(d) for d in v.shape)


def _strip(v: np.ndarray) -> tuple[int, int]:
    h, w = v.shape
    if h == 1 or w == 1:  # a directional gate: a strip along one edge
        return (SIDE, 16) if h == 1 else (16, SIDE)
    return SIDE, SIDE


def spatial(key: str, v: np.ndarray, meta: Mapping[str, Any]) -> list[Tile]:
    return [Tile(map_uri(v), [f"{key} {_shape(v)}", raw_range(v)])]


def context(key: str, v: np.ndarray, meta: Mapping[str, Any]) -> list[Tile]:
    unit, label = to_unit(v, "context")
    return [Tile(map_uri(unit), [f"{key} {_shape(v)}", label, raw_range(v)])]


def gate(key: str, v: np.ndarray, meta: Mapping[str, Any]) -> list[Tile]:
    m = v.mean(0) if v.ndim == 3 else v.reshape(1, -1)
    w, h = _strip(m)
    over = m.shape[0] > 1 and m.shape[1] > 1
    what = f"mean over {v.shape[0]} channels" if v.ndim == 3 else "flattened"
    return [Tile(map_uri(m), [f"{key} {_shape(v)}", what, raw_range(v)], over, w, h)]


def windowed(key: str, v: np.ndarray, meta: Mapping[str, Any]) -> list[Tile]:
    """A windowed map (heads, windows, Q, K) at its place in the image: the centre pixel's row
    over its window's keys and the attention each key receives within its window."""
    heads, wins, q, k = v.shape
    head = f"{key} {heads} head(s) × {wins} windows of {q}"
    h, w = meta.get("image", meta.get("grid", (0, 0)))
    maps = window_rows(torch.from_numpy(v), dict(meta), (h // 2, w // 2)) if h else None
    if maps is None:  # partition unknown: window 0, query × key
        unit, label = to_unit(np.nanmean(v[:, 0], 0), "attention", k)
        return [Tile(map_uri(unit), [head, "window 0: query × key (mean over heads)", label,
                                     raw_range(v)], overlay=False)]
    row, received = (m.mean(0).numpy() for m in maps)
    unit, label = to_unit(row, "attention", k)  # uniform = 1/K over the window's K keys
    return [Tile(map_uri(unit), [head, f"keys of the centre pixel's window (+), {label}",
                                 raw_range(row)], marker=((w // 2 + 0.5) / w, (h // 2 + 0.5) / h)),
            Tile(map_uri(to_unit(received, "attention", k)[0]),
                 [head, "mean attention each key receives in its window", label,
                  raw_range(received)])]


def attention(key: str, v: np.ndarray, meta: Mapping[str, Any]) -> list[Tile]:
    if v.ndim == 4:
        return windowed(key, v, meta)
    heads, q, k = v.shape
    mean = np.nanmean(v, 0) if heads > 1 else v[0]  # (Q, K), mean over heads
    qg, kg = meta.get("q_grid"), meta.get("k_grid")
    head = f"{key} {heads} head(s), {q}×{k}"
    if not kg or kg[0] * kg[1] != k:
        m = pool(mean, MAX_MATRIX)
        unit, label = to_unit(m, "attention", k)
        return [Tile(map_uri(unit), [head, "query × key (mean over heads)", label,
                                     raw_range(mean)], overlay=False)]
    centre = (qg[0] // 2) * qg[1] + qg[1] // 2 if qg and qg[0] * qg[1] == q else q // 2
    row = mean[centre].reshape(kg)
    received = mean.mean(0).reshape(kg)
    row_unit, label = to_unit(row, "attention", k)
    marker = None
    if qg and qg[0] * qg[1] == q:  # the query's cell, in fractions of the key grid
        marker = (((centre % qg[1]) + 0.5) / qg[1], ((centre // qg[1]) + 0.5) / qg[0])
    return [Tile(map_uri(row_unit), [head, f"keys of the centre query {centre} (+)", label,
                                     raw_range(row)], marker=marker),
            Tile(map_uri(to_unit(received, "attention", k)[0]),
                 [head, "mean attention each key receives", label, raw_range(received)])]


def splits(key: str, v: np.ndarray, meta: Mapping[str, Any]) -> list[Tile]:
    r, c = v.shape
    return [Tile(map_uri(v), [f"{key} {r} splits × {c} channels", f"a_0 {raw_range(v[0])}"],
                 overlay=False, width=2 * SIDE, height=12 * r)]


def _y(v: float, low: float = 0.0, high: float = 1.0) -> str:
    """The SVG y of value ``v`` on an axis from ``low`` to ``high`` (clipped to it)."""
    u = (v - low) / (high - low)
    return f"{DIST_Y0 - (DIST_Y0 - DIST_Y1) * min(max(u, 0.0), 1.0):.1f}"


def _polyline(values: np.ndarray, low: float = 0.0, high: float = 1.0) -> str:
    """Sorted values (largest first) spread evenly over the chart's width."""
    xs = (np.arange(values.size) + 0.5) * DIST_W / max(values.size, 1)
    return " ".join(f"{x:.1f},{_y(float(y), low, high)}" for x, y in zip(xs, values,
                                                                        strict=True))


def channel_distribution(key: str, v: np.ndarray, top_k: int) -> Distribution:
    """All s(c) of a block sorted from largest to smallest, with its median, interquartile range,
    min–max and sd in the caption (NaN/Inf are left out and counted); the ``top_k`` largest
    are listed on hover."""
    finite = np.sort(v[np.isfinite(v)])[::-1]
    bad = v.size - finite.size
    if not finite.size:
        return Distribution(key, "no finite values", "", (_y(0), _y(0)), _y(0))
    q25, med, q75 = np.percentile(finite, [25, 50, 75])
    n = finite.size
    points = _polyline(finite)
    caption = (f"{n} channels: median {med:.2f}, IQR {q25:.2f}–{q75:.2f}, range "
               f"{finite.min():.2f}–{finite.max():.2f}, sd {finite.std():.2f}"
               + (f"; {bad} NaN/Inf" if bad else ""))
    order = np.argsort(-np.where(np.isfinite(v), v, -np.inf), kind="stable")[:top_k]
    values = ", ".join(f"{c}: {v[c]:.3f}" for c in order.tolist())
    return Distribution(key, caption, points, (_y(float(q75)), _y(float(q25))), _y(float(med)),
                        f"s(c) sorted; the largest: {values}")


def deviation_chart(block: Mapping[str, Any], cls: Mapping[str, Any]) -> Distribution:
    """One predicted class's deviation Δ(c) over every channel of a block (a block of
    :meth:`.classes.ClassChannels.deviations`), sorted from largest to smallest on an axis of
    ±the block's largest |Δ| over its classes; the band is ±the median over channels of sd(c),
    the spread of s(c) between images. The caption names the three channels of largest |Δ|
    (Δ and Δ/sd); hovering lists the ``--top-k`` of them."""
    dev = np.sort(np.asarray(cls["deviation"]))[::-1]
    span = max((abs(v) for c in block["classes"] for v in c["deviation"]), default=0.0) or 1.0
    spread = float(np.median(block["sd"]))

    def item(d: Mapping[str, Any]) -> str:
        z = "" if d["in_sd"] is None else f" ({d['in_sd']:+.1f} sd)"
        return f"c{d['channel']} {d['deviation']:+.3f}{z}"

    largest = cls["largest"]
    caption = "largest |Δ|: " + ", ".join(item(d) for d in largest[:3])
    return Distribution(f"{cls['label']} ({cls['images']} images)", caption,
                        _polyline(dev, -span, span),
                        (_y(spread, -span, span), _y(-spread, -span, span)), _y(0.0, -span, span),
                        "Δ(c) sorted; the largest |Δ|: " + ", ".join(item(d) for d in largest),
                        f"+{span:.2f}", f"−{span:.2f}")


def class_groups(blocks: list[Mapping[str, Any]]) -> list[Group]:
    """One group per block: the deviation chart of each predicted class that passes the rule."""
    return [Group(f"{b['layer']} ({b['images']} images; median sd(c) "
                  f"{float(np.median(b['sd'])):.3f})",
                  dists=[deviation_chart(b, c) for c in b["classes"]]) for b in blocks]


DRAWERS: dict[str, Callable[[str, np.ndarray, Mapping[str, Any]], list[Tile]]] = {
    "map": spatial, "strip": gate, "rows": attention, "splits": splits,
}


def _drawer(kind_name: str) -> Callable[[str, np.ndarray, Mapping[str, Any]], list[Tile]]:
    """How the registry says ``kind_name`` is drawn (context maps on their uniform scale)."""
    entry = KINDS[kind_name]
    if entry.draw == "map" and entry.scale == "uniform":
        return context
    return DRAWERS[entry.draw]


def image_groups(records: list[Any], index: int, top_k: int) -> list[Group]:
    """The panels of image ``index``: one group per kind, layers in model order."""
    groups: dict[str, Group] = {}
    for r in records:
        v: Tensor = r.value[index]
        a = v.numpy()
        entry = KINDS.get(r.kind)
        if entry is None:
            continue
        if entry.draw == "bars":
            g = groups.setdefault(r.kind, Group(f"{entry.title}: every channel of each block, "
                                                "sorted, with its spread"))
            g.dists.append(channel_distribution(r.key, a.reshape(-1), top_k))
        else:
            g = groups.setdefault(r.kind, Group(entry.title, outlined=entry.draw == "map"))
            g.tiles.extend(_drawer(r.kind)(r.key, a, r.meta))
    return [groups[k] for k in ORDER if k in groups]


__all__ = ["Distribution", "Group", "Tile", "channel_distribution", "class_groups",
           "deviation_chart", "image_groups", "raw_range"]

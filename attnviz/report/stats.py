"""Per-image summary statistics of one recorded layer, for every attention kind.

``summary.csv`` has one row per image and layer with the columns :data:`SUMMARY_FIELDS` (empty
where a column is not defined for the layer's kind). Each column is defined once, in
:data:`COLUMNS` below: the report page prints those definitions under its layer table, and
:func:`layer_stats` computes what they say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from .. import metrics
from ..kinds import GATE_KINDS, MAP_KINDS, SPLIT_KINDS
from ..record import window_geometry

SUMMARY_FIELDS = (
    "image", "layer", "kind", "mean", "min", "max", "std", "entropy", "saturation",
    "peak_y", "peak_x", "share_above_half", "mean_a0", "balance", "attn_distance", "local_mass",
)
STAT_FIELDS = SUMMARY_FIELDS[3:]

#: what each column of ``summary.csv`` and of the report's layer table means: the one
#: definition (the page prints it under the table; ``shape`` is the table's only extra column)
COLUMNS: dict[str, str] = {
    "image": "the input file (or item of the data set) the row describes",
    "layer": "the recorded module (its name in the model; name#1 for a second firing)",
    "kind": "what the weight is: channel s(c), spatial mask A, context, gate, radix/paths "
            "split weights, attention rows (see the README's kinds table)",
    "shape": "the shape of one image's weights",
    "mean": "mean of the weights (radix/paths: of the split-0 weight a₀ over channels), "
            "averaged over images",
    "min": "smallest weight of an image, averaged over images",
    "max": "largest weight of an image, averaged over images",
    "std": "standard deviation of an image's weights, averaged over images",
    "entropy": "normalised entropy, 0..1 (1 = flat, nothing singled out): channel s(c) over "
               "channels; spatial/context over cells; radix/paths over the splits; attention "
               "over the keys of each query row (mean over heads and queries)",
    "saturation": "channel, gate: the share of weights below 0.05 or above 0.95 (near-binary "
                  "gates)",
    "peak_y": "spatial/context: the row of the strongest cell's centre, 0 (top) … 1 (bottom)",
    "peak_x": "spatial/context: the column of the strongest cell's centre, 0 (left) … 1 "
              "(right)",
    "share_above_half": "spatial/context: the share of cells with a weight above 0.5",
    "mean_a0": "radix/paths: the mean weight of split 0",
    "balance": "radix/paths: 1 when every channel splits evenly, 0 when every channel picks "
               "one split (1 − mean total-variation distance from uniform ÷ (1 − 1/R))",
    "attn_distance": "attention, when the query and key grids are known: mean distance, in "
                     "key-grid cells, from a query's position to the keys it attends to, "
                     "Σₖ aₖ·d(q, k) (mean over heads and queries)",
    "local_mass": "attention, grids known: the attention mass on the 3×3 key cells around the "
                  "query's own position (mean over heads and queries)",
}


def _grid(meta: Mapping[str, Any], key: str, n: int) -> tuple[int, int] | None:
    g = meta.get(key)
    if not isinstance(g, (tuple, list)) or len(g) != 2:
        return None
    h, w = int(g[0]), int(g[1])
    return (h, w) if h * w == n else None


@lru_cache(maxsize=16)
def grid_geometry(q_grid: tuple[int, int], k_grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``(distance, local)``, each (Q, K): the distance in key-grid cells from each query's
    position to each key cell centre (:func:`attnviz.metrics.grid_distances`), and whether
    the key lies in the 3×3 key cells around the query's own cell."""
    (qh, qw), (kh, kw) = q_grid, k_grid
    dist = metrics.grid_distances(q_grid, k_grid)
    qy = ((torch.arange(qh, dtype=torch.float32) + 0.5) * kh / qh).floor().clamp(0, kh - 1)
    qx = ((torch.arange(qw, dtype=torch.float32) + 0.5) * kw / qw).floor().clamp(0, kw - 1)
    cy, cx = (t.reshape(-1) for t in torch.meshgrid(qy, qx, indexing="ij"))
    ky, kx = (t.reshape(-1).float() for t in torch.meshgrid(
        torch.arange(kh), torch.arange(kw), indexing="ij"))
    local = ((ky[None] - cy[:, None]).abs() <= 1) & ((kx[None] - cx[:, None]).abs() <= 1)
    return dist, local.float()


def attention_stats(value: Tensor, meta: Mapping[str, Any]) -> dict[str, Tensor]:
    """``entropy``, and with known grids ``attn_distance`` and ``local_mass``, per image of an
    attention map (N, heads, Q, K), or of a windowed one (N, heads, windows, Q, K) with its
    partition in ``meta`` (:func:`attnviz.record.window_geometry`)."""
    v = value.float()
    if v.ndim == 5:  # windowed: (N, heads, windows, Q, K), distances within each window
        out = {"entropy": metrics.entropy(v, -1, normalized=True).mean((1, 2, 3))}
        geo = window_geometry(dict(meta))
        if geo is not None:
            dist, local = geo
            per = v.shape[1] * v.shape[2] * v.shape[3]
            out["attn_distance"] = torch.einsum("nhwqk,wqk->n", v, dist) / per
            out["local_mass"] = torch.einsum("nhwqk,wqk->n", v, local) / per
        return out
    out = {"entropy": metrics.entropy(v, -1, normalized=True).mean((1, 2))}
    q, k = _grid(meta, "q_grid", v.shape[2]), _grid(meta, "k_grid", v.shape[3])
    if q is not None and k is not None:
        dist, local = grid_geometry(q, k)
        out["attn_distance"] = torch.einsum("nhqk,qk->n", v, dist) / (v.shape[1] * v.shape[2])
        out["local_mass"] = torch.einsum("nhqk,qk->n", v, local) / (v.shape[1] * v.shape[2])
    return out


def _basic(flat: Tensor) -> dict[str, Tensor]:
    """Mean, min, max and (population) standard deviation of each row. The deviation is taken
    in two passes, sqrt(mean((x - mean)²)): as exact as ``torch.std_mean`` and, with
    ``amin`` / ``amax`` instead of ``aminmax``, about eight times faster on CPU."""
    mean = flat.mean(1)
    dev = flat - mean[:, None]
    return {"mean": mean, "min": flat.amin(1), "max": flat.amax(1),
            "std": (dev * dev).mean(1).sqrt_()}


def layer_stats(kind: str, value: Tensor,
                meta: Mapping[str, Any] | None = None) -> dict[str, list[float | None]]:
    """Per-image statistics of one layer's weights ``(N, ...)``: ``{field: [N values]}``
    (None where a field is not defined for the kind)."""
    v = value.detach().float().cpu()
    n = v.shape[0]
    stats: dict[str, Tensor] = {}
    if kind in SPLIT_KINDS and v.ndim == 3:
        r = v.shape[1]
        a0 = v[:, 0]
        stats.update(_basic(a0), mean_a0=a0.mean(1),
                     entropy=metrics.entropy(v, 1, normalized=True).mean(1))
        if r > 1:
            tv = 0.5 * (v - 1.0 / r).abs().sum(1)  # (N, C): distance from the uniform split
            stats["balance"] = 1.0 - tv.mean(1) / (1.0 - 1.0 / r)
    elif kind == "attention" and v.ndim in (4, 5):
        stats.update(_basic(v.reshape(n, -1)), **attention_stats(v, meta or {}))
    else:
        flat = v.reshape(n, -1)
        stats.update(_basic(flat))
        if kind != "gate":
            stats["entropy"] = metrics.entropy(flat, 1, normalized=True)
        if kind in GATE_KINDS:
            stats["saturation"] = metrics.saturation(flat)
        elif kind in MAP_KINDS and v.ndim == 3:
            h, w = v.shape[1:]
            peak = torch.nan_to_num(flat, nan=-math.inf).argmax(1)
            stats["peak_y"] = ((peak // w).float() + 0.5) / h
            stats["peak_x"] = ((peak % w).float() + 0.5) / w
            stats["share_above_half"] = (flat > 0.5).float().mean(1)
    out: dict[str, list[float | None]] = {f: [None] * n for f in STAT_FIELDS}
    values = torch.stack(list(stats.values())).double().tolist()  # one conversion per layer
    out.update(zip(stats, values, strict=True))
    return out


def nonfinite_images(value: Tensor) -> Tensor:
    """(N,) bool: which images hold a NaN or infinite value."""
    return ~torch.isfinite(value.reshape(value.shape[0], -1)).all(1)


class SplitMeans:
    """Running mean and sd (over images and channels) of each split weight of radix/paths
    layers, for the report's split-attention summary."""

    def __init__(self) -> None:
        self.sums: dict[str, tuple[int, Tensor, Tensor]] = {}

    def add(self, key: str, value: Tensor) -> None:
        v = value.detach().double().cpu().transpose(0, 1).reshape(value.shape[1], -1)  # (R, N·C)
        n, s, s2 = self.sums.get(key, (0, torch.zeros(v.shape[0], dtype=torch.float64),
                                       torch.zeros(v.shape[0], dtype=torch.float64)))
        self.sums[key] = (n + v.shape[1], s + v.sum(1), s2 + (v * v).sum(1))

    def table(self) -> dict[str, list[tuple[float, float]]]:
        """``{layer: [(mean, sd) per split]}``."""
        out = {}
        for key, (n, s, s2) in self.sums.items():
            mean = s / max(n, 1)
            sd = (s2 / max(n, 1) - mean * mean).clamp_min(0).sqrt()
            out[key] = [(float(m), float(d)) for m, d in zip(mean, sd, strict=True)]
        return out


__all__ = ["COLUMNS", "STAT_FIELDS", "SUMMARY_FIELDS", "SplitMeans", "attention_stats",
           "grid_geometry", "layer_stats", "nonfinite_images"]

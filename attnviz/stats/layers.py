"""One accumulator per attention layer: per-image features and streaming aggregates by kind.

Every layer keeps ``features``: the moments over images of a few per-image numbers (also the
columns of the per-image Parquet rows). Besides, by kind:

* ``channel`` (B, C): moments ``s`` of s(c) per class (groups = classes).
* ``spatial`` / ``context`` (B, H, W): moments ``mask`` of every cell, and ``peak_hist``, how
  often each cell was the map's maximum.
* ``radix`` / ``paths`` (B, R, C): moments ``weights`` per class.
* ``attention`` (B, heads, Q, K): moments ``head_entropy`` and, when the tokens are the pixels
  of a grid, ``head_distance`` per head.
* ``gate`` (any shape): the features only.

All of it stays on the device the weights were recorded on.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from .. import metrics
from ..kinds import KINDS
from ..record import window_geometry
from .moments import Moments

#: Per-image feature columns (a layer fills those its kind defines; the others stay empty).
FEATURES = ("mean", "entropy", "peak_y", "peak_x", "pointing", "energy", "balance", "distance")


@dataclass(frozen=True)
class LayerSpec:
    """What identifies a recorded layer: its key, kind, per-image shape and where it is."""

    key: str
    name: str
    kind: str
    shape: tuple[int, ...]
    module_type: str
    order: int
    q_grid: tuple[int, int] | None = None
    k_grid: tuple[int, int] | None = None
    #: a windowed attention map's partition: ``{"window", "grid", "shift", "image"}``
    partition: dict | None = field(default=None, compare=False, hash=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(shape=list(self.shape), q_grid=_grid_list(self.q_grid),
                 k_grid=_grid_list(self.k_grid),
                 partition=None if self.partition is None else {
                     k: _grid_list(v) for k, v in self.partition.items()})
        return d


def _grid_list(grid: tuple[int, int] | None) -> list[int] | None:
    return None if grid is None else [int(g) for g in grid]


@dataclass
class BatchInfo:
    """What a layer needs besides its weights: the class group of each image and, when the
    data has them, the ground-truth object masks (B, S, S)."""

    group: Tensor
    objects: Tensor | None = None


class LayerStats:
    """Aggregates of one layer; subclasses define the features and the kind's extras."""

    features: tuple[str, ...] = ("mean", "entropy")

    def __init__(self, spec: LayerSpec, groups: int, device: torch.device,
                 ground_truth: bool = False) -> None:
        self.spec, self.groups, self.device = spec, groups, device
        self.ground_truth = ground_truth
        self.moments: dict[str, Moments] = {}
        self.sums: dict[str, Tensor] = {}
        self._setup()
        self.moments["features"] = Moments(1, (len(self.features),), device)

    def _setup(self) -> None:
        """Create the kind's extra moments and sums."""

    def _features(self, v: Tensor, info: BatchInfo) -> dict[str, Tensor]:
        flat = v.flatten(1)
        return {"mean": flat.mean(1), "entropy": metrics.entropy(flat, 1, normalized=True)}

    def _accumulate(self, v: Tensor, info: BatchInfo) -> None:
        """Update the kind's extras with one batch of weights."""

    def update(self, value: Tensor, info: BatchInfo) -> Tensor:
        """Add one batch (B, ...) of this layer's weights; returns its features (F, B)."""
        v = value.detach().float()
        feats = self._features(v, info)
        stacked = torch.stack([feats[f].float() for f in self.features])
        self.moments["features"].update(stacked.T)
        self._accumulate(v, info)
        return stacked

    def tensors(self) -> dict[str, Tensor]:
        """Every state tensor by a flat name (checkpoints, collectives)."""
        out = {f"sums.{k}": t for k, t in self.sums.items()}
        for name, m in self.moments.items():
            out.update({f"moments.{name}.{k}": t for k, t in m.tensors().items()})
        return out

    def load(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`tensors` (a wrong shape is a ValueError)."""
        for k in self.sums:
            value = state[f"sums.{k}"]
            if tuple(value.shape) != tuple(self.sums[k].shape):
                raise ValueError(f"{self.spec.key} sums.{k}: shape {tuple(value.shape)}, "
                                 f"{tuple(self.sums[k].shape)} expected")
            self.sums[k] = value.to(self.device, self.sums[k].dtype).clone()
        for name, m in self.moments.items():
            m.load({k: state[f"moments.{name}.{k}"] for k in ("n", "mean", "m2")})


    def check(self, images: Tensor) -> None:
        """Raise ValueError unless the state is possible for ``images`` (per group) counted
        images: finite values, counts that are whole, non-negative and within the images."""
        total = float(images.sum())
        for name, t in self.tensors().items():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{self.spec.key} {name} has NaN or infinite values")
            if name.endswith((".n", ".m2")) or name.startswith("sums."):
                if bool((t < 0).any()):
                    raise ValueError(f"{self.spec.key} {name} has negative values")
            if name.endswith(".n") or name.startswith("sums."):
                if bool((t != t.round()).any()) or float(t.sum()) > total:
                    raise ValueError(f"{self.spec.key} {name} counts {float(t.sum()):g} "
                                     f"values for {total:g} images")
            if name.endswith(".n") and t.shape == images.shape and bool((t > images).any()):
                raise ValueError(f"{self.spec.key} {name} counts more than a class's images")


class ChannelStats(LayerStats):
    def _setup(self) -> None:
        self.moments["s"] = Moments(self.groups, self.spec.shape, self.device)

    def _accumulate(self, v: Tensor, info: BatchInfo) -> None:
        self.moments["s"].update(v, info.group)


class MapStats(LayerStats):
    """Spatial masks A and global-context pooling maps (B, H, W)."""

    def __init__(self, spec: LayerSpec, groups: int, device: torch.device,
                 ground_truth: bool = False) -> None:
        base = ("mean", "entropy", "peak_y", "peak_x")
        self.features = base + (("pointing", "energy") if ground_truth else ())
        super().__init__(spec, groups, device, ground_truth)

    def _setup(self) -> None:
        self.moments["mask"] = Moments(1, self.spec.shape, self.device)
        self.sums["peak_hist"] = torch.zeros(self.spec.shape, dtype=torch.float64,
                                             device=self.device)

    def _features(self, v: Tensor, info: BatchInfo) -> dict[str, Tensor]:
        out = super()._features(v, info)
        h, w = v.shape[-2:]
        peak = v.flatten(1).argmax(1)
        out["peak_y"] = (torch.div(peak, w, rounding_mode="floor").float() + 0.5) / h
        out["peak_x"] = ((peak % w).float() + 0.5) / w
        if self.ground_truth and info.objects is not None:
            out["pointing"] = metrics.pointing_hits(v, info.objects).float()
            out["energy"] = metrics.energy_in_box(v, info.objects)
        return out

    def _accumulate(self, v: Tensor, info: BatchInfo) -> None:
        self.moments["mask"].update(v)
        peak = v.flatten(1).argmax(1)
        hist = self.sums["peak_hist"].view(-1)
        hist.index_add_(0, peak, torch.ones_like(peak, dtype=hist.dtype))


class SplitStats(LayerStats):
    """Split-attention (radix) and selective-kernel (paths) weights (B, R, C)."""

    features = ("mean", "entropy", "balance")

    def _setup(self) -> None:
        self.moments["weights"] = Moments(self.groups, self.spec.shape, self.device)

    def _features(self, v: Tensor, info: BatchInfo) -> dict[str, Tensor]:
        r = v.shape[1]
        tv = 0.5 * (v - 1.0 / r).abs().sum(1)  # (B, C): distance from the even split
        balance = 1.0 - tv.mean(1) / (1.0 - 1.0 / r) if r > 1 else torch.ones_like(tv[:, 0])
        return {"mean": v[:, 0].mean(1), "balance": balance,
                "entropy": metrics.entropy(v, 1, normalized=True).mean(1)}

    def _accumulate(self, v: Tensor, info: BatchInfo) -> None:
        self.moments["weights"].update(v, info.group)


class AttentionStats(LayerStats):
    """Attention maps (B, heads, Q, K): entropy and mean attention distance per head."""

    def __init__(self, spec: LayerSpec, groups: int, device: torch.device,
                 ground_truth: bool = False) -> None:
        q, k = spec.shape[-2:]
        grids = spec.q_grid, spec.k_grid
        self.dist: Tensor | None = None
        if len(spec.shape) == 4:  # windowed (heads, windows, Q, K): distances within windows
            geo = window_geometry(spec.partition) if spec.partition else None
            self.dist = geo[0].to(device) if geo is not None else None
        elif all(g is not None for g in grids) and math.prod(grids[0]) == q \
                and math.prod(grids[1]) == k:
            self.dist = metrics.grid_distances(grids[0], grids[1], device)
        ok = self.dist is not None
        self.features = ("entropy", "distance") if ok else ("entropy",)
        super().__init__(spec, groups, device, ground_truth)
        self._last: dict[str, Tensor] = {}

    def _setup(self) -> None:
        heads = (self.spec.shape[0],)
        self.moments["head_entropy"] = Moments(1, heads, self.device)
        if self.dist is not None:
            self.moments["head_distance"] = Moments(1, heads, self.device)

    def _features(self, v: Tensor, info: BatchInfo) -> dict[str, Tensor]:
        if v.ndim == 5:  # windowed: queries of every window together
            per_head = {"entropy": metrics.entropy(v, -1, normalized=True).mean((-2, -1))}
            if self.dist is not None:
                d = torch.einsum("bhwqk,wqk->bhwq", v, self.dist)
                per_head["distance"] = d.mean((-2, -1))
            self._last = per_head
            return {k: t.mean(1) for k, t in per_head.items()}
        per_head = {"entropy": metrics.entropy(v, -1, normalized=True).mean(-1)}  # (B, heads)
        if self.dist is not None:
            per_head["distance"] = torch.einsum("bhqk,qk->bhq", v, self.dist).mean(-1)
        self._last = per_head
        return {k: t.mean(1) for k, t in per_head.items()}

    def _accumulate(self, v: Tensor, info: BatchInfo) -> None:
        for k, t in self._last.items():
            self.moments[f"head_{k}"].update(t)
        self._last = {}


#: the accumulator of each ``aggregate`` of the kinds registry (:mod:`attnviz.kinds`)
AGGREGATES: dict[str, type[LayerStats]] = {
    "channel": ChannelStats, "map": MapStats, "splits": SplitStats, "attention": AttentionStats,
    "features": LayerStats,
}


def make_layer(spec: LayerSpec, groups: int, device: torch.device,
               ground_truth: bool) -> LayerStats:
    """The accumulator the kinds registry names for ``spec.kind`` (features only for a kind
    it does not know)."""
    entry = KINDS.get(spec.kind)
    cls = AGGREGATES[entry.aggregate] if entry is not None else LayerStats
    return cls(spec, groups, device, ground_truth)

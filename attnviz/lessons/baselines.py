"""Baselines for the lessons: the same architecture at random init, over many seeds.

A random-init baseline must use the architecture's *own* initialisation (what its builder does:
Kaiming-normal convolutions, zero-initialised gates, ...), not PyTorch's per-module
``reset_parameters()``: the two give different masks, and a single seed is one draw from a wide
distribution. :func:`init_baselines` scores ``n`` seeds so a trained value can be read against
the whole distribution.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from ..datasets import Shapes
from ..evaluate import random_baseline
from ..models import create_model, demo_card
from ..models.preprocess import model_device
from ..record import record


@dataclass
class SpatialScores:
    """Per-layer localisation scores of one or more models (rows) on one data set."""

    layers: list[str]
    pointing: np.ndarray  # (models, layers)
    energy: np.ndarray  # (models, layers): raw energy-in-box
    mask_mean: np.ndarray  # (models, layers)


def architecture_init(name: str, seed: int) -> nn.Module:
    """Demo model ``name``'s architecture, freshly built by its own builder with ``seed``."""
    card = demo_card(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(card["architecture"], num_classes=len(card["classes"]),
                             **card.get("builder_kwargs", {}))
    return model.eval()


class _Truth:
    """What the scores compare a mask with, computed once per data set: the object grown by
    3 px (pointing game) and its bounding box (energy-in-box), as in :mod:`attnviz.metrics`."""

    def __init__(self, data: Shapes, tolerance: int = 3) -> None:
        obj = data.masks.bool()
        k = 2 * tolerance + 1
        self.size = tuple(obj.shape[-2:])
        self.grown = (F.max_pool2d(obj[:, None].float(), k, 1, tolerance)[:, 0] > 0).flatten(1)
        rows, cols = obj.any(2), obj.any(1)
        span = lambda a: (a.cumsum(1) > 0) & (a.flip(1).cumsum(1).flip(1) > 0)  # noqa: E731
        self.box = (span(rows)[:, :, None] & span(cols)[:, None, :]).flatten(1).float()
        self.box_share = self.box.mean(1).clamp_min(1e-12)

    def scores(self, masks: torch.Tensor) -> tuple[float, float, float]:
        """Pointing game, mean raw energy-in-box and mean value of (N, h, w) masks."""
        up = metrics.upsample(masks.cpu(), self.size).flatten(1).clamp_min(0)
        hits = self.grown[torch.arange(len(up)), up.argmax(1)]
        share = (up * self.box).sum(1) / up.sum(1).clamp_min(1e-12)
        return (hits.float().mean().item(), (share / self.box_share).mean().item(),
                masks.mean().item())


@torch.no_grad()
def spatial_scores(models: Iterable[nn.Module], data: Shapes, batch_size: int = 250
                   ) -> SpatialScores:
    """Pointing game, raw energy-in-box and mean mask value of every spatial gate (as
    :func:`attnviz.metrics.pointing_game` and :func:`attnviz.metrics.energy_in_box`)."""
    truth = _Truth(data)
    rows: list[list[tuple[float, float, float]]] = []
    layers: list[str] = []
    for model in models:
        device = model_device(model)
        with record(model, kinds=("spatial",)) as rec:
            for i in range(0, len(data.labels), batch_size):
                model(data.images[i : i + batch_size].to(device))
            rec = rec.cpu()
        layers = list(rec.spatial)
        rows.append([truth.scores(m) for m in rec.spatial.values()])
    p, e, m = (np.array([[c[k] for c in r] for r in rows]) for k in range(3))
    return SpatialScores(layers, p, e, m)


def init_baselines(name: str, data: Shapes, seeds: Iterable[int] = range(20),
                   progress: bool = False) -> SpatialScores:
    """Spatial scores of demo model ``name``'s architecture at random init, one row per seed
    (``progress=True``: a progress bar over the seeds)."""
    from tqdm.auto import tqdm

    seeds = tqdm(list(seeds), desc="random inits", disable=not progress)
    return spatial_scores((architecture_init(name, s) for s in seeds), data)


def pointing_chance(data: Shapes, tolerance: int = 3) -> float:
    """The pointing game of a peak at a uniformly random pixel: the mean share of the image
    covered by the object grown by ``tolerance`` px (what ``metrics.pointing_game`` counts)."""
    k = 2 * tolerance + 1
    grown = F.max_pool2d(data.masks[:, None].float(), k, 1, tolerance) > 0
    return grown.float().mean().item()


def default_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same model re-initialised by PyTorch's per-module ``reset_parameters()`` (what
    ``attnviz.evaluate.random_baseline`` does), for comparison."""
    return random_baseline(model, seed)


def baseline_table(trained: SpatialScores, seeds: SpatialScores,
                   default: SpatialScores | None = None, metric: str = "pointing") -> str:
    """One line per layer: the trained value, the seed distribution (median, min–max, the
    share of seeds at or above the trained value) and, optionally, the default-init value."""
    t, b = getattr(trained, metric)[0], getattr(seeds, metric)
    head = (f"{'layer':24s} {'trained':>8s}   random init, {len(b)} seeds: median [min – max]"
            f"  seeds >= trained" + ("   reset_parameters()" if default is not None else ""))
    lines = [head]
    for j, name in enumerate(trained.layers):
        col = b[:, j]
        line = (f"{name:24s} {t[j]:8.3f}   {np.median(col):6.3f} [{col.min():.3f} – "
                f"{col.max():.3f}]{(col >= t[j]).mean():12.0%}")
        if default is not None:
            line += f"   {getattr(default, metric)[0, j]:10.3f}"
        lines.append(line)
    return "\n".join(lines)


def compare_table(scores: Mapping[str, SpatialScores]) -> str:
    """Side by side, one line per layer: pointing, raw energy-in-box and mean mask value of
    each model (``{label: spatial_scores([model], data)}``)."""
    labels = list(scores)
    first = scores[labels[0]]
    head = f"{'layer':24s}" + "".join(f" | {lab[:20]:^20s}" for lab in labels)
    sub = f"{'':24s}" + f" | {'point':>5s} {'E_raw':>6s} {'mean A':>7s}" * len(labels)
    lines = [head, sub]
    for j, name in enumerate(first.layers):
        cells = "".join(f" | {s.pointing[0, j]:5.2f} {s.energy[0, j]:6.2f} {s.mask_mean[0, j]:7.2f}"
                        for s in scores.values())
        lines.append(f"{name:24s}{cells}")
    return "\n".join(lines)

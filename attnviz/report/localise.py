"""Where the report can check attention against ground truth: images with a known object mask
(``shapes:N`` data, or the bundled generated shapes, :func:`attnviz.samples.ground_truth`) seen
by a model trained on such images (its model card says ``data.source == "shapes"``).

For each such image and spatial layer: does the mask peak on the object (pointing game, 3 px
tolerance) and how much of its mass sits in the object's box relative to the box's area
(energy-in-box, 1.0 = no preference) — next to the same numbers of a random-init copy of the
model on the same image (:func:`attnviz.evaluate.random_baseline`), so a number can be read
against what an untrained network gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .. import metrics
from ..models.preprocess import prepare
from ..record import record
from ..samples import ground_truth

if TYPE_CHECKING:
    from .analysis import ReportData


@dataclass
class Localisation:
    """The ground truth of the kept images that have one: ``masks`` ``{image index: (S, S)
    bool}``; ``rows`` ``{image index: [{"layer", "pointing", "energy", "random_pointing",
    "random_energy"}]}``; ``trained_on`` what the model was trained on (None: unknown)."""

    trained_on: str | None = None
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def in_distribution(self, i: int) -> bool:
        """Image ``i`` is the kind of image the model was trained on (with ground truth)."""
        return self.trained_on == "shapes" and i in self.masks


def trained_on(model: torch.nn.Module) -> str | None:
    """``"shapes"`` for the bundled demo models (from the model card), else None."""
    card = getattr(model, "model_card", None)
    return ((card or {}).get("data") or {}).get("source") if isinstance(card, dict) else None


def _scores(maps: torch.Tensor, objects: torch.Tensor) -> tuple[list[bool], list[float]]:
    hits = metrics.pointing_hits(maps, objects).tolist()
    energy = metrics.energy_in_box(maps, objects).tolist()
    return hits, energy


def localise(run: ReportData) -> Localisation:
    """The ground truth and per-image localisation numbers of ``run``'s kept images."""
    out = Localisation(trained_on(run.model))
    for i in range(len(run.images)):
        mask = run.masks.get(i)  # from the data (shapes:N), else a bundled shapes file
        mask = mask if mask is not None else ground_truth(run.paths[i])
        if mask is not None:
            out.masks[i] = mask
    spatial = run.spatial
    if not out.masks or not spatial or out.trained_on != "shapes":
        return out
    from ..evaluate import random_baseline

    idx = sorted(out.masks)
    size = run.images.shape[-1]
    objects = torch.stack([_fit(out.masks[i], size) for i in idx])
    base = random_baseline(run.model)
    with torch.no_grad(), record(base, kinds=("spatial",)) as rec:
        base(prepare(base, run.images[idx]))
    random_maps = rec.spatial
    for layer, maps in spatial.items():
        hits, energy = _scores(maps[idx].float(), objects)
        r_hits, r_energy = (_scores(random_maps[layer].float(), objects)
                            if layer in random_maps else ([None] * len(idx),) * 2)
        for j, i in enumerate(idx):
            out.rows.setdefault(i, []).append(
                {"layer": layer, "pointing": hits[j], "energy": energy[j],
                 "random_pointing": r_hits[j], "random_energy": r_energy[j]})
    return out


def _fit(mask: torch.Tensor, size: int) -> torch.Tensor:
    """The mask at the report's image size (nearest: it stays a mask)."""
    if mask.shape[-1] == size:
        return mask
    return torch.nn.functional.interpolate(mask[None, None].float(), size=(size, size),
                                           mode="nearest")[0, 0] >= 0.5


__all__ = ["Localisation", "localise", "trained_on"]

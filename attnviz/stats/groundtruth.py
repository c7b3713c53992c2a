"""Localisation against ground-truth object masks, batched on the maps' own device.

The same numbers as :func:`attnviz.metrics.pointing_hits` and
:func:`attnviz.metrics.energy_in_box` (tests compare them), without a copy to the CPU and
without a Python loop over images.
"""
from __future__ import annotations

from torch import Tensor

from .. import metrics


def pointing_hits(maps: Tensor, objects: Tensor, tolerance: int = 3) -> Tensor:
    """Per image: does the map, upsampled to the mask, peak inside the object grown by
    ``tolerance`` pixels? (B,) bool."""
    up = metrics.upsample(maps, tuple(objects.shape[-2:]))
    idx = up.flatten(1).argmax(1)
    grown = metrics._dilate(objects, tolerance).flatten(1)
    return grown.gather(1, idx[:, None])[:, 0]


def box_masks(objects: Tensor) -> Tensor:
    """(B, H, W) object masks → (B, H, W) masks of their bounding boxes (empty stays empty)."""
    rows, cols = objects.any(2), objects.any(1)  # (B, H), (B, W)
    rows_in = rows.flip(1).cummax(1).values.flip(1) & rows.cummax(1).values
    cols_in = cols.flip(1).cummax(1).values.flip(1) & cols.cummax(1).values
    return rows_in[:, :, None] & cols_in[:, None, :]


def energy_in_box(maps: Tensor, objects: Tensor) -> Tensor:
    """Per image: share of the map's mass inside the object's box over the box's share of
    the image (1 = no preference). (B,) float."""
    up = metrics.upsample(maps, tuple(objects.shape[-2:])).clamp_min(0)
    inside = box_masks(objects.bool())
    total = up.flatten(1).sum(1).clamp_min(1e-12)
    share = (up * inside).flatten(1).sum(1) / total
    area = inside.flatten(1).float().mean(1).clamp_min(1e-12)
    return share / area

"""The optional "attention vs attribution" section (``--attribution``, Captum): one spatial mask
set against Grad-CAM / integrated gradients / saliency on the first images, as tiles and an
agreement table. File names appear only in the page text, never in a figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..models.preprocess import prepare
from ..outputs import NONE
from .figures import Tile, raw_range
from .render import css_name
from .tiles import map_uri

if TYPE_CHECKING:
    from .analysis import ReportData

METHODS = ("gradcam", "ig", "saliency")
LABELS = {"gradcam": "Grad-CAM", "ig": "integrated gradients", "saliency": "saliency",
          "occlusion": "occlusion"}


def attribution_layer(spatial: dict[str, torch.Tensor]) -> str:
    """The deepest spatial mask with at least 7×7 cells (else the largest grid)."""
    names = list(spatial)
    fine = [n for n in names if min(spatial[n].shape[-2:]) >= 7]
    if fine:
        return fine[-1]
    return max(names, key=lambda n: spatial[n].shape[-2] * spatial[n].shape[-1])


def _normalised(a: torch.Tensor) -> torch.Tensor:
    peak = a.abs().max()
    return (a / peak if peak > 0 else a).clamp_min(0)


def attribution_section(run: ReportData, max_images: int = 8,
                        methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """The section's data for the page: ``skipped`` (why there is nothing) or the mask
    ``layer``, the ``agreement`` rows and the tiles of each image."""
    out: dict[str, Any] = {"skipped": None}
    n = min(max_images, len(run.images))
    spatial = run.spatial
    if not n:
        out["skipped"] = "no image with figures to attribute (none read, or --max-figures 0)."
    elif not spatial:
        out["skipped"] = (f"{run.model_name} has no spatial attention mask (recorded kinds: "
                          f"{', '.join(run.kinds) or 'none'}). The comparison needs a spatial "
                          "mask A to set against Grad-CAM / integrated gradients.")
    elif run.output_kind == NONE:
        out["skipped"] = (f"{run.model_name} makes no class prediction ({run.output_source}): "
                          "attribution needs a class score; pass --output to pick the logits.")
    if out["skipped"]:
        return out
    from .. import agreement, attribution

    name = attribution_layer(spatial)
    x = prepare(run.model, run.images[:n])
    maps = attribution.attribute(run.model, x, methods=methods, mask_layer=name,
                                 output=run.output)
    mask = spatial[name][:n]
    rows = [{"method": m, **{k: float(v.mean()) for k, v in
                             agreement.agreement(mask, a).items()}} for m, a in maps.items()]
    images = []
    for i in range(n):
        m = mask[i].numpy()
        tiles = [Tile(map_uri(m), [f"attention A {m.shape[0]}×{m.shape[1]}", raw_range(m)])]
        for method, a in maps.items():
            tiles.append(Tile(map_uri(_normalised(a[i].float()).numpy()),
                              [LABELS.get(method, method), "normalised to its maximum"]))
        images.append({"n": i + 1, "path": run.paths[i], "css": css_name(i), "tiles": tiles})
    return {"skipped": None, "layer": name, "methods": [LABELS.get(m, m) for m in maps],
            "agreement": rows, "agreement_columns": list(rows[0]) if rows else [],
            "images": images}


__all__ = ["attribution_layer", "attribution_section"]

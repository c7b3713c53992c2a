"""How well an attention mask agrees with an attribution map: alignment to one grid, Spearman
rank correlation, top-k IoU, the pointing game of each, and the table over a data set.

    mask, logits = attention_mask(model, x, "layer3.0.attn.spatial")
    agreement(mask, attribute(model, x, ("ig",), mask_layer=...)["ig"], objects)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import metrics
from .attribution import _method, attribute
from .errors import ParameterError
from .models.preprocess import model_device
from .record import record


def align(map: Tensor, size: int | Sequence[int]) -> Tensor:
    """Resample maps to ``size`` (an int or (h, w)): (h, w), (B, h, w) or (B, 1, h, w) in, same
    rank out, float32.

    Enlarging is bilinear (``align_corners=False``); shrinking averages the pixels under each
    target cell (``mode="area"``), so a 64×64 pixel map brought to an 8×8 mask grid gives each
    cell the mean attribution of its 8×8 pixel footprint (plain bilinear would sample 4 pixels).
    Mixed (one side up, one down) is bilinear with antialiasing.
    """
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2:
        raise ParameterError(f"size must be an int or (h, w), got {size}")
    if map.ndim not in (2, 3, 4) or (map.ndim == 4 and map.shape[1] != 1):
        raise ParameterError(
            f"map must be (h, w), (B, h, w) or (B, 1, h, w), got {tuple(map.shape)}"
        )
    x = map.detach().float()
    x4 = x.reshape(-1, 1, *x.shape[-2:])
    h, w = x4.shape[-2:]
    if (h, w) != size:
        if size[0] <= h and size[1] <= w:
            x4 = F.interpolate(x4, size=size, mode="area")
        else:
            shrink = size[0] < h or size[1] < w
            x4 = F.interpolate(x4, size=size, mode="bilinear", align_corners=False,
                               antialias=shrink)
    return x4.reshape(*x.shape[:-2], *size)



def agreement(
    mask: Tensor,
    attr: Tensor,
    objects: Tensor | None = None,
    topk: float = 0.2,
    tolerance: int = 3,
) -> dict[str, Tensor]:
    """Per-image agreement of an attention mask (B, h, w) with an attribution map (B, h', w').

    The attribution is aligned to the mask grid (:func:`align`), then compared by Spearman rank
    correlation (``spearman``, tied values get their average rank) and the IoU of the top
    ``topk`` share of cells (``iou``). With ground-truth ``objects`` (B, S, S) bool, also the
    pointing game of each map at its own resolution (``pointing_attention``,
    ``pointing_attribution``: does the map's maximum fall on the object, grown by ``tolerance``
    px). Values are (B,) CPU tensors.
    """
    mask = mask.detach().float().cpu()
    if mask.ndim == 2:
        mask = mask[None]
    attr = attr.detach().float().cpu()
    if attr.ndim == 2:
        attr = attr[None]
    if mask.ndim != 3 or attr.ndim != 3 or mask.shape[0] != attr.shape[0]:
        raise ParameterError(
            f"mask and attr must be (B, h, w) with the same B, got {tuple(mask.shape)} and "
            f"{tuple(attr.shape)}"
        )
    aligned = align(attr, mask.shape[-2:])
    out = {
        "spearman": metrics.spearman_ties(mask, aligned),
        "iou": metrics.topk_iou(mask, aligned, topk),
    }
    if objects is not None:
        objects = objects.cpu().bool()
        if objects.ndim == 2:
            objects = objects[None]
        if objects.shape[0] != mask.shape[0]:
            raise ParameterError(f"objects must be (B, S, S) with B={mask.shape[0]}")
        out["pointing_attention"] = metrics.pointing_hits(mask, objects, tolerance)
        out["pointing_attribution"] = metrics.pointing_hits(attr, objects, tolerance)
    return out


def attention_mask(model: nn.Module, x: Tensor, mask_name: str) -> tuple[Tensor, Tensor]:
    """The model's own mask ``mask_name`` for ``x`` (via :func:`attnviz.record`) and the logits:
    ((B, h, w), (B, classes)) on the CPU."""
    device = model_device(model)
    with record(model, layers=mask_name) as rec:
        logits = rec(x.to(device, torch.float32))
        rec = rec.cpu()
    for kind in ("spatial", "context"):
        found = rec.by_kind(kind)
        if mask_name in found:
            return found[mask_name], logits.cpu()
    names = [r.name for r in rec.records]
    raise ParameterError(f"{mask_name!r} is not a spatial attention module (recorded: {names})")


def agreement_table(
    model: nn.Module,
    images: Tensor,
    masks_gt: Tensor | None,
    mask_layer: str,
    methods: Iterable[str] = ("gradcam", "ig", "saliency"),
    batch_size: int = 8,
    topk: float = 0.2,
    target: Tensor | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Agreement of the attention mask ``mask_layer`` with each attribution method over a data set.

    ``images`` (N, 3, H, W); ``masks_gt`` (N, H, W) bool objects or None; ``target`` (N,) classes
    or None for the predicted ones. One row per method: ``method``, ``n``, ``spearman_mean``,
    ``spearman_std``, ``iou_mean``, ``pointing_attention``, ``pointing_attribution`` (None
    without ``masks_gt``), ``mask_layer``, ``topk``.
    """
    methods = [_method(m) for m in ([methods] if isinstance(methods, str) else methods)]
    n = images.shape[0]
    if masks_gt is not None and masks_gt.shape[0] != n:
        raise ParameterError(f"masks_gt has {masks_gt.shape[0]} images, images has {n}")
    per: dict[str, dict[str, list[Tensor]]] = {m: {} for m in methods}
    for i in range(0, n, batch_size):
        xb = images[i : i + batch_size]
        mask, logits = attention_mask(model, xb, mask_layer)
        tb = logits.argmax(1) if target is None else target[i : i + batch_size]
        maps = attribute(model, xb, methods, mask_layer=mask_layer, target=tb, options=options)
        ob = None if masks_gt is None else masks_gt[i : i + batch_size]
        for m, a in maps.items():
            for k, v in agreement(mask, a, ob, topk).items():
                per[m].setdefault(k, []).append(v)
    rows = []
    for m in methods:
        vals = {k: torch.cat(v).float() for k, v in per[m].items()}
        rho = vals["spearman"]
        rows.append({
            "method": m,
            "n": n,
            "spearman_mean": rho.mean().item(),
            "spearman_std": rho.std().item() if n > 1 else 0.0,
            "iou_mean": vals["iou"].mean().item(),
            "pointing_attention": vals["pointing_attention"].mean().item()
            if "pointing_attention" in vals else None,
            "pointing_attribution": vals["pointing_attribution"].mean().item()
            if "pointing_attribution" in vals else None,
            "mask_layer": mask_layer,
            "topk": topk,
        })
    return rows


def format_agreement(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`agreement_table` rows."""
    if not rows:
        return "(no rows)"

    def f(v: float | None) -> str:
        return "     -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"

    r0 = rows[0]
    k = round(100 * r0.get("topk", 0.2))
    lines = [
        f"attention {r0.get('mask_layer', '?')} vs attribution (n={r0.get('n', '?')})",
        f"{'method':10s} {'Spearman ρ':>16s} {f'top-{k}% IoU':>12s} {'point(attn)':>11s} "
        f"{'point(attr)':>11s}",
    ]
    for r in rows:
        rho = f"{r['spearman_mean']:6.3f} ± {r['spearman_std']:5.3f}"
        lines.append(
            f"{r['method']:10s} {rho:>16s} {f(r['iou_mean']):>12s} "
            f"{f(r.get('pointing_attention')):>11s} {f(r.get('pointing_attribution')):>11s}"
        )
    return "\n".join(lines)


__all__ = ["agreement", "agreement_table", "align", "attention_mask", "format_agreement"]

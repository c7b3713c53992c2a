"""Numbers about attention maps: localisation against ground truth, agreement, s(c) statistics.

All functions take plain tensors (no model calls), so they are easy to test on constructed maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F

from .errors import ParameterError


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy."""
    return (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, h, w) maps → (N, H, W) by bilinear interpolation (align_corners=False)."""
    size = (size, size) if isinstance(size, int) else size
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[
        :, 0
    ]


def boxes_from_masks(objects: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool object masks → (N, 4) boxes ``x0, y0, x1, y1`` (end-exclusive)."""
    boxes = torch.zeros(objects.shape[0], 4, dtype=torch.long)
    for i, m in enumerate(objects):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(ys):
            boxes[i] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return boxes


def _dilate(objects: torch.Tensor, tolerance: int) -> torch.Tensor:
    if tolerance <= 0:
        return objects.bool()
    k = 2 * tolerance + 1
    return F.max_pool2d(objects[:, None].float(), k, 1, tolerance)[:, 0] > 0


def pointing_hits(maps: torch.Tensor, objects: torch.Tensor, tolerance: int = 3) -> torch.Tensor:
    """Per image: does the upsampled map peak inside the object (grown by ``tolerance`` px)?
    (N,) bool, on the maps' device (no copy to the CPU, no loop over images)."""
    up = upsample(maps, tuple(objects.shape[-2:]))
    idx = up.flatten(1).argmax(1)
    grown = _dilate(objects.to(up.device), tolerance).flatten(1)
    return grown.gather(1, idx[:, None])[:, 0]


def pointing_game(maps: torch.Tensor, objects: torch.Tensor, tolerance: int = 3) -> float:
    """Share of images whose map peaks on the object (chance ≈ object area share)."""
    return pointing_hits(maps, objects, tolerance).float().mean().item()


def box_masks(objects: torch.Tensor) -> torch.Tensor:
    """(N, H, W) object masks → (N, H, W) masks of their bounding boxes (empty stays empty)."""
    objects = objects.bool()
    rows, cols = objects.any(2), objects.any(1)  # (N, H), (N, W)
    rows_in = rows.flip(1).cummax(1).values.flip(1) & rows.cummax(1).values
    cols_in = cols.flip(1).cummax(1).values.flip(1) & cols.cummax(1).values
    return rows_in[:, :, None] & cols_in[:, None, :]


def energy_in_box(
    maps: torch.Tensor, objects: torch.Tensor, subtract_min: bool = False
) -> torch.Tensor:
    """Per image: (share of map mass inside the object's box) ÷ (box share of the image).

    1.0 means no preference (a uniform map); higher means the mass sits on the object.
    ``subtract_min`` first removes each map's minimum (the flat floor of a saturated mask).
    Computed on the maps' device.
    """
    up = upsample(maps, tuple(objects.shape[-2:])).clamp_min(0)
    if subtract_min:
        up = up - up.flatten(1).min(1).values[:, None, None]
    inside = box_masks(objects.to(up.device))
    total = up.flatten(1).sum(1).clamp_min(1e-12)
    share = (up * inside).flatten(1).sum(1) / total
    area = inside.flatten(1).float().mean(1).clamp_min(1e-12)
    return share / area


def class_specificity(weights: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of classifying images by the nearest per-class mean of their s(c).

    Two-fold: class means from one half, accuracy on the other, and back; averaged.
    Chance is about 1 / number of classes; NaN with fewer than 2 images.
    """
    w, y = weights.cpu().float(), labels.cpu()
    n = len(y)
    halves = (torch.arange(n) % 2 == 0, torch.arange(n) % 2 == 1)
    accs = []
    if n < 2:
        return float("nan")  # two halves are needed
    for fit, test in (halves, halves[::-1]):
        classes = torch.unique(y[fit])
        means = torch.stack([w[fit][y[fit] == c].mean(0) for c in classes])
        pred = classes[torch.cdist(w[test], means).argmin(1)]
        accs.append((pred == y[test]).float().mean().item())
    return sum(accs) / len(accs)


def entropy(weights: torch.Tensor, dim: int = -1, normalized: bool = False) -> torch.Tensor:
    """Shannon entropy (nats) of non-negative weights normalised along ``dim``; with
    ``normalized``, divided by its maximum log(n): 0..1, 1 = flat (0 when n = 1)."""
    p = weights.clamp_min(0)
    p = p / p.sum(dim, keepdim=True).clamp_min(1e-12)
    h = -(p * p.clamp_min(1e-12).log()).sum(dim)
    if not normalized:
        return h
    n = weights.shape[dim]
    return h / math.log(n) if n > 1 else torch.zeros_like(h)


def saturation(weights: torch.Tensor, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """Share of gate values beyond ``low`` / ``high`` (a saturated gate acts as on/off)."""
    return ((weights < low) | (weights > high)).float().flatten(1).mean(1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between maps, per image: (N, ...) × (N, ...) → (N,)."""

    def ranks(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).float()
        order = flat.argsort(1)
        r = torch.empty_like(flat)
        r.scatter_(
            1, order, torch.arange(flat.shape[1], dtype=flat.dtype).expand_as(flat).contiguous()
        )
        return r

    ra, rb = ranks(a), ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


def topk_iou(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """IoU of the top ``fraction`` of pixels of two maps, per image: (N,)."""
    if not 0 < fraction <= 1:
        raise ParameterError(f"fraction must be in (0, 1], got {fraction}")
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    k = max(1, round(fraction * fa.shape[1]))
    ma = torch.zeros_like(fa, dtype=torch.bool).scatter_(1, fa.topk(k, 1).indices, True)
    mb = torch.zeros_like(fb, dtype=torch.bool).scatter_(1, fb.topk(k, 1).indices, True)
    return (ma & mb).sum(1).float() / (ma | mb).sum(1).float()


def spearman_ties(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image with tied values given their average rank: (N,).

    Same as :func:`spearman` for maps without ties; with ties (a ReLU'd Grad-CAM full of zeros,
    a saturated mask) it does not depend on the position of the tied cells. A constant map has
    correlation 0.
    """

    def ranks(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).double()
        s = flat.sort(1).values.contiguous()
        lo = torch.searchsorted(s, flat.contiguous(), right=False)
        hi = torch.searchsorted(s, flat.contiguous(), right=True)
        return (lo + hi - 1).double() / 2

    ra, rb = ranks(a), ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    rho = (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    return rho.float()


def attention_on_object(
    attn: torch.Tensor, objects: torch.Tensor, grid: tuple[int, int]
) -> tuple[float, float, float]:
    """How much self-attention from the object lands on the object.

    ``attn`` (N, heads, Q, K) over a ``grid`` of H·W = Q = K positions; ``objects`` (N, H', W')
    ground-truth masks. Each cell's object share ``m_k`` is the mask averaged over the cell.
    For every query cell mostly inside the object (m_q > 0.5) the attention mass on the object is
    Σ_k a_qk · m_k (heads averaged); the area share is mean_k m_k. Returns the mean over such
    queries of (mass / share), the mean mass and the mean share: a ratio of 1 is no preference.
    """
    n, _, q, k = attn.shape
    if q != k or grid[0] * grid[1] != k:
        raise ParameterError(f"attention of shape {tuple(attn.shape)} is not over a {grid} grid")
    m = F.adaptive_avg_pool2d(objects[:, None].float(), grid).reshape(n, k)
    mass = (attn.float().mean(1) * m[:, None, :]).sum(-1)  # (N, Q)
    share = m.mean(-1, keepdim=True).clamp_min(1e-8)  # (N, 1)
    inside = m > 0.5
    if not inside.any():
        raise ParameterError("no query cell lies mostly inside an object: grid too coarse")
    ratio = (mass / share)[inside]
    shares = share.expand_as(mass)[inside]
    return ratio.mean().item(), mass[inside].mean().item(), shares.mean().item()


def attention_on_object_by_head(
    attn: torch.Tensor, objects: torch.Tensor, grid: tuple[int, int]
) -> list[float]:
    """:func:`attention_on_object`'s ratio for each head on its own: ``attn`` (N, heads, Q, K)
    → one ratio per head (1 = no preference for the object; above 1, the head looks at the
    object more than its area share)."""
    return [attention_on_object(attn[:, h : h + 1], objects, grid)[0]
            for h in range(attn.shape[1])]


@lru_cache(maxsize=32)
def _grid_distances(q_grid: tuple[int, int], k_grid: tuple[int, int]) -> torch.Tensor:
    (qh, qw), (kh, kw) = q_grid, k_grid
    qy, qx = torch.meshgrid((torch.arange(qh, dtype=torch.float32) + 0.5) * kh / qh,
                            (torch.arange(qw, dtype=torch.float32) + 0.5) * kw / qw, indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(kh, dtype=torch.float32) + 0.5,
                            torch.arange(kw, dtype=torch.float32) + 0.5, indexing="ij")
    return torch.hypot(qy.reshape(-1, 1) - ky.reshape(1, -1), qx.reshape(-1, 1) - kx.reshape(1, -1))


def grid_distances(q_grid: Sequence[int], k_grid: Sequence[int],
                   device: torch.device | str | None = None) -> torch.Tensor:
    """(Q, K) distances from each query's position (mapped onto the key grid) to each key cell
    centre, **in key-grid cells**: the one unit of attention distance in attnviz (report,
    stats, plots)."""
    d = _grid_distances((int(q_grid[0]), int(q_grid[1])), (int(k_grid[0]), int(k_grid[1])))
    return d if device is None else d.to(device)


def attention_distance(
    attn: torch.Tensor, q_grid: tuple[int, int], k_grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """Mean attention distance Σ_k a_qk · ‖pos_q − pos_k‖ averaged over queries, in key-grid
    cells (as in ViT's "attention distance"; :func:`grid_distances`). ``attn`` (..., Q, K) →
    (...)."""
    k_grid = k_grid or q_grid
    q, k = attn.shape[-2:]
    if q_grid[0] * q_grid[1] != q or k_grid[0] * k_grid[1] != k:
        raise ParameterError(f"attention {tuple(attn.shape)} does not fit grids {q_grid}, {k_grid}")
    d = grid_distances(q_grid, k_grid, attn.device)
    return (attn.float() * d).sum(-1).mean(-1)


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of each query's key weights (1 = uniform), averaged over queries:
    (..., Q, K) → (...)."""
    return entropy(attn.float(), dim=-1, normalized=True).mean(-1)

"""Geometry from the tensors: which axes of an observed map are batch, heads and windows, and
whether a full-size gate is an activation of the tensor it multiplies.

Attention maps come out of a network as ``(B, heads, Q, K)``, ``(B·heads, Q, K)`` (bmm style),
or, in windowed attention (Swin and kin), ``(B·windows, heads, Q, K)``. The batch ``B`` is the
model input's batch axis (``ModuleStack.batch_for``); a windowed map is recorded as
``(B, heads, windows, Q, K)`` with the window partition in its ``meta`` (see docs/recorder.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .stack import ModuleStack
    from .tags import Tag as _Tag


def _pair(v: Any) -> tuple[int, int] | None:
    if isinstance(v, int):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return int(v[0]), int(v[1])
    return None


def window_meta(stack: ModuleStack, windows: int, n: int) -> dict[str, Any] | None:
    """The window partition of the running windowed-attention module: ``windows`` windows of
    ``n`` tokens each. ``None`` when no running module states a window size that fits."""
    for f in reversed(stack.frames):
        m = f.module
        win = _pair(getattr(m, "window_size", None)) or _pair(getattr(m, "ws", None))
        if win is None or win[0] * win[1] != n:
            continue
        block = stack.find_attr("shift_size")
        shift = _pair(getattr(block.module, "shift_size", 0)) if block is not None else None
        grid = None
        for g in (f, block):
            if g is not None and grid is None:
                grid = _grid_of(g.module, g.shape, g.size, win, windows)
        if grid is None:
            continue
        return {"windows": windows, "window": win,
                "window_grid": (grid[0] // win[0], grid[1] // win[1]), "grid": grid[:2],
                "image": grid[2:], "shift": shift or (0, 0), "layout": "(B, heads, windows, Q, K)"}
    return None


def _grid_of(module: Any, shape: tuple[int, ...], size: tuple[int, int] | None,
             win: tuple[int, int], windows: int) -> tuple[int, int, int, int] | None:
    """The (padded) token grid a window partition of ``windows`` windows covers, from the
    module's ``input_resolution``, a ``size`` argument, or its 4-D input (NHWC or NCHW)."""
    candidates = [g for g in (_pair(getattr(module, "input_resolution", None)), size) if g]
    if len(shape) == 4:
        candidates += [(shape[1], shape[2]), (shape[2], shape[3])]
    for h, w in candidates:
        hp, wp = math.ceil(h / win[0]) * win[0], math.ceil(w / win[1]) * win[1]
        if (hp // win[0]) * (wp // win[1]) == windows:
            return hp, wp, h, w
    return None


def _num_heads(stack: ModuleStack) -> int | None:
    """``num_heads`` (``heads``, ``n_heads``) of the innermost running module stating it."""
    for name in ("num_heads", "heads", "n_heads"):
        found = stack.find_attr(name)
        if found is not None and isinstance(getattr(found.module, name), int):
            return getattr(found.module, name)
    return None


def _groups(windows: int) -> dict[str, Any]:
    """Meta of a map split into independent token groups whose partition is not known."""
    return {"windows": windows, "layout": "(B, heads, windows, Q, K)", "q_grid": None,
            "k_grid": None, "axes": "windows of a partition attnviz cannot map to pixels"}


def map_layout(w: Tensor, batch: int | None, stack: ModuleStack) -> tuple[Tensor, dict]:
    """``(B, heads, Q, K)`` (or ``(B, heads, windows, Q, K)`` with window meta) from a map
    whose leading axes fold batch, windows and heads."""
    q, k = w.shape[-2:]
    lead = math.prod(w.shape[:-2])
    b = batch if batch and lead % batch == 0 else lead
    if w.ndim == 4 and w.shape[0] == b:
        return w, {}
    h = _num_heads(stack)
    if w.ndim == 4 and w.shape[0] % b == 0:
        x, y = w.shape[0] // b, w.shape[1]
        meta = window_meta(stack, x, q) if q == k else None
        if meta is not None or (h == y and h != x):  # (B·windows, heads, Q, K): Swin, MaxViT
            value = w.reshape(b, x, y, q, k).transpose(1, 2)
            return value, meta or _groups(x)
        if h == x and h != y:  # (B·heads, windows, Q, K): HaloNet's blocks
            return w.reshape(b, x, y, q, k), _groups(y)
    if w.ndim == 5 and w.shape[0] == b and h in (w.shape[1], w.shape[2]):
        value = w.transpose(1, 2) if w.shape[2] == h and w.shape[1] != h else w  # Twins
        meta = window_meta(stack, value.shape[2], q) if q == k else None
        return value, meta or _groups(value.shape[2])
    return w.reshape(b, lead // b, q, k), {}


def is_self_gate(tag: _Tag, feat: Tensor) -> bool:
    """True when a full-size gate is an activation of the tensor it multiplies: ``x · σ(a·x +
    b)`` (SiLU, Swish-β, QuickGELU, ``σ(x.clone())``, hard-swish). The activation's input is
    recovered from the gate where it is not saturated and must be affine in ``x``."""
    if tag.act_input is not None and tag.act_input() is feat:
        return True
    g = tag.eff
    if tag.mixed or tuple(g.shape) != tuple(feat.shape) or tag.act not in ("sigmoid",
                                                                           "hardsigmoid"):
        return False
    g, x = g.detach().float().flatten(), feat.detach().float().flatten()
    if tag.act == "sigmoid":
        keep = (g > 0.01) & (g < 0.99)
        s = torch.logit(g[keep])
        noise = 6e-8 / float((g[keep] * (1 - g[keep])).min()) if bool(keep.any()) else 0.0
    else:
        keep = (g > 1e-6) & (g < 1 - 1e-6)
        s = g[keep] * 6 - 3
        noise = 6 * 6e-8
    x = x[keep]
    if s.numel() < 8 or float(x.std()) == 0.0:
        return False
    # float32 rounding of the gate (and of a·x + b) bounds how well an exact relation can fit
    tol = 8 * (noise + 1e-7 * float(s.abs().max()))
    if float(s.max() - s.min()) <= tol:
        return False  # a gate constant within rounding: nothing shows it depends on x
    xm, sm = x.mean(), s.mean()
    a = float(((x - xm) * (s - sm)).sum() / ((x - xm) ** 2).sum())
    b = float(sm - a * xm)
    return float((s - (a * x + b)).abs().max()) <= tol


def window_pixels(meta: dict[str, Any]) -> Tensor:
    """Where each token of a windowed attention map sits in the image's token grid.

    Args:
        meta: the ``meta`` of a windowed attention record (``windows``, ``window``, ``grid``,
            ``shift``, and optionally ``image``: the unpadded (H, W)).

    Returns:
        ``(windows, Q, 2)`` long tensor of (row, col) in the unshifted token grid; query ``i``
        of window ``w`` is pixel ``out[w, i]`` (keys alike). Tokens in padding are ``-1``.
    """
    (wh, ww), (hp, wp), (sh, sw) = meta["window"], meta["grid"], meta["shift"]
    h, w = meta.get("image", (hp, wp))
    rows = torch.arange(hp).view(hp // wh, wh, 1, 1).expand(-1, -1, wp // ww, ww)
    cols = torch.arange(wp).view(1, 1, wp // ww, ww).expand(hp // wh, wh, -1, -1)
    rows = rows.permute(0, 2, 1, 3).reshape(-1, wh * ww)
    cols = cols.permute(0, 2, 1, 3).reshape(-1, wh * ww)
    pad = (rows >= h) | (cols >= w)
    out = torch.stack([(rows + sh) % h, (cols + sw) % w], -1)  # the roll by -shift, undone
    out[pad] = -1
    return out


def window_to_image(value: Tensor, meta: dict[str, Any]) -> Tensor:
    """A windowed map ``(B, heads, windows, Q, K)`` as one image-level map ``(B, heads, H·W,
    H·W)`` over the unshifted, unpadded token grid (row-major): row ``r·W + c`` is the query at
    pixel (r, c), its keys outside its window are 0. Draw it with ``q_grid = k_grid =
    meta["image"]``.

    Args:
        value: the record's value.
        meta: the record's meta (see :func:`window_pixels`).

    Returns:
        The dense map (float32; about (H·W)² · heads · B · 4 bytes: meant for one image).
    """
    h, w = meta.get("image", meta["grid"])
    pix = window_pixels(meta)
    out = value.new_zeros(value.shape[0], value.shape[1], h * w, h * w)
    for win in range(pix.shape[0]):
        real = pix[win, :, 0] >= 0
        idx = pix[win, real, 0] * w + pix[win, real, 1]
        block = value[:, :, win][:, :, real][:, :, :, real]
        out[:, :, idx[:, None], idx[None, :]] = block
    return out


def window_geometry(meta: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """``(distance, local)``, each ``(windows, Q, K)``, of a windowed attention map: the
    distance in token-grid cells between each query and key of a window (the unit of
    :func:`attnviz.metrics.grid_distances`), and whether the key lies in the 3×3 cells around
    the query. None when the partition is not known (no ``window`` / ``grid`` in ``meta``);
    padding tokens are at distance 0 and never local (their weights are 0 anyway)."""
    if "window" not in meta or "grid" not in meta:
        return None
    pix = window_pixels(meta).float()  # (windows, N, 2)
    diff = pix[:, :, None, :] - pix[:, None, :, :]
    real = (pix[:, :, None, 0] >= 0) & (pix[:, None, :, 0] >= 0)
    dist = torch.where(real, diff.pow(2).sum(-1).sqrt(), torch.zeros(()))
    local = real & (diff.abs().amax(-1) <= 1)
    return dist, local.float()


def window_rows(value: Tensor, meta: dict[str, Any], pixel: tuple[int, int],
                ) -> tuple[Tensor, Tensor] | None:
    """One image's windowed map ``(heads, windows, Q, K)`` on the image: the attention row of
    the query at ``pixel`` (row, col of the token grid) and the mean attention each key receives
    from the queries of its window, each ``(heads, H, W)`` (keys outside the query's window are
    0). None when the partition is not known."""
    if "window" not in meta or "grid" not in meta:
        return None
    h, w = meta.get("image", meta["grid"])
    pix = window_pixels(meta)  # (windows, N, 2)
    heads = value.shape[0]
    hit = ((pix[..., 0] == pixel[0]) & (pix[..., 1] == pixel[1])).nonzero()
    row = value.new_zeros(heads, h * w)
    received = value.new_zeros(heads, h * w)
    for win in range(pix.shape[0]):
        real = pix[win, :, 0] >= 0
        idx = pix[win, real, 0] * w + pix[win, real, 1]
        block = value[:, win][:, real][:, :, real]  # (heads, q, k)
        received[:, idx] = block.mean(1)
    if len(hit):
        win, q = int(hit[0, 0]), int(hit[0, 1])
        real = pix[win, :, 0] >= 0
        row[:, pix[win, real, 0] * w + pix[win, real, 1]] = value[:, win, q][:, real]
    return row.view(heads, h, w), received.view(heads, h, w)

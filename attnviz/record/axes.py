"""What the axes of the tensors around a weight are, where the data flow says so.

A map is called ``spatial`` or given a pixel grid only when its axes are known to be pixels:

- a feature map flattened to tokens (``x.view(B, C, H·W)``, ``x.flatten(2)``) marks its token
  axis and grid; transposes and head splits carry the mark. The values ``V`` an attention map
  multiplies tell which of its axes are pixels (and on which grid) and which are channels
  (DANet's channel attention: a C×C map is not an H×W one);
- a 4-D feature map permuted (triplet attention's C×W and H×C branches) marks its axis order;
  a gate multiplied into it is a ``gate`` with its axes named, not a spatial mask;
- a product of two tensors (``q @ kᵀ``, and what scaling / a bias / a mask makes of it) marks
  logits: only a softmax of logits has query rows; a softmax over a projection (CoaT's
  factorised attention, lambda layers) pools tokens per channel and gets no query grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from .tags import Watcher as Observer


@dataclass(frozen=True)
class Axes:
    """Known facts about an untagged tensor's axes."""

    pixels: int | None = None  # the axis holding the H·W tokens of a flattened feature map
    grid: tuple[int, int] | None = None  # (H, W) of those tokens
    perm: tuple[int, ...] | None = None  # a permuted 4-D map: original axis (B=0, C, H, W)
    logits: bool = False  # a product of two tensors (q @ kᵀ), possibly scaled or biased


def _norm_dims(dims: Any, ndim: int) -> list[int]:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return [d % ndim for d in dims]


def on_shape(obs: Observer, op: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Carry (or create) axis facts through a shape-only op on an untagged tensor."""
    x = args[0] if args else None
    if not isinstance(x, Tensor) or not isinstance(out, Tensor):
        return
    ax = obs.axes_of(x)
    new: Axes | None = None
    if op in ("permute", "transpose", "movedim", "t"):
        order = _order(op, args, kwargs, x.ndim)
        if order is None:
            return
        if ax is None and x.ndim == 4:
            new = Axes(perm=tuple(order))
        elif ax is not None:
            new = replace(ax, pixels=order.index(ax.pixels) if ax.pixels is not None else None,
                          perm=tuple(ax.perm[i] for i in order) if ax.perm else None)
    elif op in ("view", "reshape", "flatten"):
        if ax is None and x.ndim == 4 and out.ndim == 3 and tuple(out.shape[:2]) == tuple(
                x.shape[:2]) and out.shape[2] == x.shape[2] * x.shape[3]:
            new = Axes(pixels=2, grid=(x.shape[2], x.shape[3]))
        elif ax is not None and ax.pixels == x.ndim - 1 and out.shape[-1] == x.shape[-1]:
            new = replace(ax, pixels=out.ndim - 1, perm=None)
        elif ax is not None and ax.pixels == x.ndim - 2 and out.shape[-2:] == x.shape[-2:]:
            new = replace(ax, pixels=out.ndim - 2, perm=None)
        elif ax is not None and ax.logits and out.shape[-2:] == x.shape[-2:]:
            new = Axes(logits=True)
    elif ax is not None and out.shape == x.shape:  # contiguous, clone, to, float, ...
        new = ax
    if new is not None:
        obs.mark(out, new)


def _order(op: str, args: tuple, kwargs: dict, ndim: int) -> list[int] | None:
    """The permutation a permute / transpose / movedim applies (new axis i = old order[i])."""
    order = list(range(ndim))
    try:
        if op == "permute":
            return _norm_dims(args[1:] or (kwargs["dims"],), ndim)
        if op == "t":
            return order[::-1]
        a = args[1] if len(args) > 1 else kwargs.get("dim0", kwargs.get("source"))
        b = args[2] if len(args) > 2 else kwargs.get("dim1", kwargs.get("destination"))
        if not isinstance(a, int) or not isinstance(b, int):
            return None
        a, b = a % ndim, b % ndim
        if op == "transpose":
            order[a], order[b] = order[b], order[a]
            return order
        order.insert(b, order.pop(a))
        return order
    except (IndexError, KeyError, TypeError):
        return None


def logits_of(obs: Observer, args: tuple, out: Any) -> None:
    """``a @ b`` of untagged tensors, or elementwise arithmetic on logits: logits."""
    if isinstance(out, Tensor) and out.ndim >= 2:
        obs.mark(out, Axes(logits=True))


def carries_logits(obs: Observer, *xs: Any) -> bool:
    return any((ax := obs.axes_of(x)) is not None and ax.logits for x in xs)


def value_grids(obs: Observer, v: Any, right: bool, q: int, k: int
                ) -> tuple[bool, tuple[int, int] | None, bool] | None:
    """What the values ``v`` of ``w @ v`` (or ``v @ wᵀ`` when ``right``) say about the map's
    key axis: ``(keys are pixels, their grid, keys are channels)``; ``None`` when unknown."""
    ax = obs.axes_of(v)
    if ax is None or ax.pixels is None or not isinstance(v, Tensor):
        return None
    contracted = v.ndim - 1 if right else v.ndim - 2
    if ax.pixels == contracted:
        grid = ax.grid if ax.grid and ax.grid[0] * ax.grid[1] == k else None
        return True, grid, False
    return False, None, True

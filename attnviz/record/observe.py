"""Find attention by watching the computation, whatever the module is called.

A weight made by a sigmoid-family activation or a softmax is *tagged*; the tag follows the weight
through shape-only operations (view, unsqueeze, expand, split, ...). The weight is recorded
when it meets a feature map:

- a gate (sigmoid) multiplied into a feature map → ``channel`` / ``spatial`` / ``gate`` by the
  broadcast shape the network used (before any ``expand``);
- softmax weights multiplied into branches (5-D, or one split piece per branch) → ``radix``;
- softmax weights entering ``matmul`` / ``bmm`` / ``einsum`` / ``@`` → ``attention`` (or
  ``context`` for a single query); ``F.scaled_dot_product_attention`` → its weights, recomputed
  from q, k, scale, mask and ``is_causal``.

The recorded tensor *is* the operand the network used (a float32 copy of it).
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .ops import HANDLERS

_ACTIVATIONS = (nn.Sigmoid, nn.Hardsigmoid, nn.Softmax, nn.Softmax2d, nn.Identity)
_ACT_WORDS = ("sigmoid", "softmax", "gate", "act")


def is_activation(module: nn.Module) -> bool:
    """A parameter-free leaf that only applies an activation (``nn.Sigmoid``, timm gates)."""
    if isinstance(module, _ACTIVATIONS):
        return True
    name = type(module).__name__.lower()
    return (
        not module._modules
        and not module._parameters
        and any(w in name for w in _ACT_WORDS)
    )


@dataclass(frozen=True)
class Observation:
    """A weight found by watching: emitted to the recorder."""

    name: str
    kind: str
    value: Tensor
    label: str
    scope: str
    meta: dict[str, Any]
    hook: str | None = None  # a module whose output *is* the weight: hook it next time


class ModuleStack:
    """The modules of one model that are running now, innermost last (fed by forward hooks)."""

    def __init__(self, model: nn.Module, covered: set[nn.Module]) -> None:
        self.names: dict[nn.Module, str] = {m: n for n, m in model.named_modules()}
        self.order = {n: i for i, n in enumerate(self.names.values())}
        self.acts = {m for m in self.names if is_activation(m)}
        self.covered = covered
        self.covered_depth = 0
        self.frames: list[tuple[str, nn.Module, tuple[int, int] | None]] = []
        self.batch: int | None = None
        self._types: dict[str, str] | None = None

    def push(self, module: nn.Module, args: tuple) -> str | None:
        name = self.names.get(module)
        if name is None:
            return None
        x = args[0] if args else None
        grid = tuple(x.shape[-2:]) if isinstance(x, Tensor) and x.ndim == 4 else None
        if not self.frames and isinstance(x, Tensor) and x.ndim:
            self.batch = x.shape[0]
        self.frames.append((name, module, grid))
        if module in self.covered:
            self.covered_depth += 1
        return name

    def pop(self, module: nn.Module) -> str | None:
        if module not in self.names:
            return None
        while self.frames:  # tolerate a frame lost to an exception inside a forward
            name, m, _ = self.frames.pop()
            if m in self.covered:
                self.covered_depth -= 1
            if m is module:
                return name
        return None

    def producer(self) -> str:
        """The innermost running module that is not a bare activation."""
        for name, m, _ in reversed(self.frames):
            if m not in self.acts:
                return name
        return ""

    def owner(self) -> str:
        return self.frames[-1][0] if self.frames else ""

    def type_name(self, name: str) -> str:
        if self._types is None:
            self._types = {n: type(m).__name__ for m, n in self.names.items()}
        return self._types.get(name, "model")

    def grid(self, n: int) -> tuple[int, int] | None:
        """(H, W) of the innermost running module whose 4-D input has H·W = n tokens."""
        for _, _, g in reversed(self.frames):
            if g is not None and g[0] * g[1] == n:
                return g
        return None


def common_scope(a: str, b: str) -> str:
    """The deepest module enclosing both names (``""`` is the model)."""
    pa, pb = a.split(".") if a else [], b.split(".") if b else []
    out = []
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        out.append(x)
    return ".".join(out)


@dataclass(frozen=True)
class _Tag:
    kind: str  # "gate" (sigmoid family) | "softmax"
    src: int  # unique id of the activation call that made the weight
    base: Tensor  # the activation's output
    eff: Tensor  # the tagged tensor before any expand/broadcast
    producer: str
    dim: int | None = None  # softmax dim of ``base``
    piece: int | None = None  # index of a split/chunk/unbind piece
    act_input: Any = None  # weakref to the activation's input (x · σ(x) is SiLU, not attention)


class Observer(TorchFunctionMode):
    """A torch function mode that tags weights and reports where they meet features."""

    def __init__(self, stack: ModuleStack, emit: Callable[[Observation], None]) -> None:
        super().__init__()
        self.stack = stack
        self.emit = emit
        self._tags: dict[int, tuple[weakref.ref, _Tag]] = {}
        self._pieces: dict[int, list] = {}
        self._done: set[int] = set()
        self._cache: dict[Any, Callable | None] = {}
        self._ids = itertools.count()
        self.outputs: dict[int, str] = {}  # tag src -> first module that returned the weight

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            handler = self._cache[func]
        except (KeyError, TypeError):
            handler = HANDLERS.get(getattr(func, "__name__", ""))
            try:
                self._cache[func] = handler
            except TypeError:
                pass
        if handler is not None and not self.stack.covered_depth:
            handler(self, args, kwargs, out)
        return out

    # -- tags --------------------------------------------------------------------------------
    def tag(self, t: Any, tag: _Tag) -> None:
        if isinstance(t, Tensor):
            self._tags[id(t)] = (weakref.ref(t), tag)

    def get(self, t: Any) -> _Tag | None:
        if not isinstance(t, Tensor):
            return None
        hit = self._tags.get(id(t))
        return hit[1] if hit is not None and hit[0]() is t else None

    def purge(self) -> None:
        """Forget tags of tensors that died (releasing the weights they hold)."""
        dead = [k for k, (ref, _) in self._tags.items() if ref() is None]
        for k in dead:
            del self._tags[k]

    def returned(self, name: str, out: Any) -> None:
        """A module returned ``out``: remember it if ``out`` is a weight itself."""
        tag = self.get(out)
        if tag is not None and tag.base is out:
            self.outputs.setdefault(tag.src, name)

    def new_tag(self, kind: str, out: Tensor, **kw: Any) -> None:
        self.tag(out, _Tag(kind, next(self._ids), out, out, self.stack.producer(), **kw))

    def flush(self) -> None:
        """End of a scope: group split pieces into mixing weights, forget every tag."""
        for parts in self._pieces.values():
            _emit_pieces(self, parts)
        self._pieces.clear()
        self._tags.clear()
        self._done.clear()

    def _scope(self, producer: str) -> str:
        return common_scope(producer, self.stack.owner())

    def _emit(self, tag: _Tag, kind: str, value: Tensor, what: str, **meta: Any) -> None:
        label = f"observed {what} in {self.stack.type_name(tag.producer)}"
        scope = self._scope(tag.producer)
        hook = None
        if kind in ("channel", "spatial") and tag.eff.numel() == tag.base.numel():
            hook = self.outputs.get(tag.src)
        self.emit(Observation(tag.producer, kind, value, label, scope, meta, hook))

    # -- events ------------------------------------------------------------------------------
    def gate_meets(self, tag: _Tag, feat: Tensor) -> None:
        if tag.act_input is not None and tag.act_input() is feat:
            return  # x · σ(x): a SiLU-style activation, not attention
        src = tag.src
        if tag.kind == "softmax" and tag.piece is not None:
            parts = self._pieces.setdefault(src, [tag, self._scope(tag.producer), []])
            parts[2].append((tag.piece, len(parts[2]), tag.eff))
            return
        if src in self._done:
            return
        self._done.add(src)
        kind, value = classify(tag, feat.shape)
        what = "softmax weights" if tag.kind == "softmax" else "sigmoid gate"
        self._emit(tag, kind, value, what)

    def attention(self, tag: _Tag, what: str = "attention map") -> None:
        src = tag.src
        if src in self._done:
            return
        self._done.add(src)
        w = tag.base
        if tag.dim is not None and tag.dim != w.ndim - 1:
            w = w.movedim(tag.dim, -1)
        self._emit_map(tag, w, what)

    def weights(self, w: Tensor, what: str, batch: int | None = None) -> None:
        """Attention weights computed explicitly (fused SDPA, nn.MultiheadAttention)."""
        tag = _Tag("softmax", next(self._ids), w, w, self.stack.producer(), dim=w.ndim - 1)
        self._emit_map(tag, w, what, batch)

    def _emit_map(self, tag: _Tag, w: Tensor, what: str, batch: int | None = None) -> None:
        if w.ndim < 2:
            return
        q, k = w.shape[-2:]
        lead = math.prod(w.shape[:-2])
        b = batch or self.stack.batch or lead
        if w.ndim == 4 and w.shape[0] == b:
            value = w
        elif lead % b == 0:
            value = w.reshape(b, lead // b, q, k)
        else:
            value = w.reshape(lead, 1, q, k)
        q_grid, k_grid = self.stack.grid(q), self.stack.grid(k)
        if q == 1 and value.shape[1] == 1 and k_grid is not None:
            self._emit(tag, "context", value.reshape(value.shape[0], *k_grid), "softmax pooling")
            return
        self._emit(tag, "attention", value, what, q_grid=q_grid, k_grid=k_grid)


def canonical(kind: str, out: Tensor) -> Tensor:
    """A hooked module's output (the weight itself) → the canonical shape of ``kind``."""
    if kind == "spatial":
        return out.reshape(out.shape[0], *out.shape[-2:])
    return out.reshape(out.shape[0], -1)


def classify(tag: _Tag, feat_shape: torch.Size) -> tuple[str, Tensor]:
    """Kind and canonical value of a weight multiplied into a feature map of ``feat_shape``."""
    g = tag.eff
    n = len(feat_shape)
    b = feat_shape[0]
    shape = (1,) * (n - g.ndim) + tuple(g.shape) if g.ndim <= n else tuple(g.shape)
    aligned = g.reshape(shape)
    if aligned.shape[0] != b:
        aligned = aligned.expand(b, *aligned.shape[1:])
    if n == 4 and len(shape) == 4:
        _, c, h, w = feat_shape
        if shape[1:] == (c, 1, 1):
            return "channel", aligned.reshape(b, c)
        if shape[1:] == (1, h, w) and (h, w) != (1, 1):
            return "spatial", aligned.reshape(b, h, w)
    if n == 3 and len(shape) == 3 and shape[1] == 1 and shape[2] == feat_shape[2]:
        return "channel", aligned.reshape(b, -1)  # tokens (B, N, C) · (B, 1, C)
    if n == 5 and len(shape) == 5 and shape[3:] == (1, 1) and tag.kind == "softmax":
        return "radix", aligned.reshape(b, shape[1], shape[2])
    return "gate", aligned


def _emit_pieces(obs: Observer, parts: list) -> None:
    tag, scope, pieces = parts
    pieces.sort(key=lambda p: (p[0] if p[0] >= 0 else p[1]))
    flat = [p[2].reshape(p[2].shape[0], -1) for p in pieces]
    if len({f.shape for f in flat}) != 1:
        return
    value = torch.stack(flat, 1) if len(flat) > 1 else flat[0]
    kind = "radix" if len(flat) > 1 else "channel"
    meta: dict[str, Any] = {}
    if kind == "radix":
        dev = float((value.detach().float().sum(1) - 1).abs().max())
        if dev > 1e-3:
            meta["problem"] = (
                f"its {len(flat)} split weights do not sum to 1 over the splits (max deviation "
                f"{dev:.3g}): is the softmax taken over the radix axis?"
            )
    label = f"observed split softmax weights in {obs.stack.type_name(tag.producer)}"
    obs.emit(Observation(tag.producer, kind, value, label, scope, meta))

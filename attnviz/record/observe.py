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
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

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
            handler = _HANDLERS.get(getattr(func, "__name__", ""))
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


# -- handlers: (observer, args, kwargs, out) -------------------------------------------------


def _on_sigmoid(obs: Observer, args, kwargs, out) -> None:
    src = args[0] if args else kwargs.get("input")
    ref = weakref.ref(src) if isinstance(src, Tensor) else None
    obs.new_tag("gate", out, act_input=ref)


def _on_softmax(obs: Observer, args, kwargs, out) -> None:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if not isinstance(dim, int) or not isinstance(out, Tensor) or out.ndim == 0:
        return
    obs.new_tag("softmax", out, dim=dim % out.ndim)


def _on_shape(obs: Observer, args, kwargs, out) -> None:
    tag = obs.get(args[0]) if args else None
    if tag is None:
        return
    if isinstance(out, Tensor):
        obs.tag(out, replace(tag, eff=out))
    elif isinstance(out, (tuple, list)):
        for i, t in enumerate(out):
            obs.tag(t, replace(tag, eff=t, piece=i))


def _on_getitem(obs: Observer, args, kwargs, out) -> None:
    tag = obs.get(args[0])
    if tag is not None and isinstance(out, Tensor):
        obs.tag(out, replace(tag, eff=out, piece=-1 if tag.kind == "softmax" else None))


def _on_expand(obs: Observer, args, kwargs, out) -> None:
    tag = obs.get(args[0]) if args else None
    if tag is not None:
        obs.tag(out, tag)  # keep the shape before broadcasting


def _on_mul(obs: Observer, args, kwargs, out) -> None:
    a = args[0] if args else None
    b = args[1] if len(args) > 1 else kwargs.get("other")
    ta, tb = obs.get(a), obs.get(b)
    if ta is not None and tb is None and isinstance(b, Tensor) and b.ndim >= 3:
        obs.gate_meets(ta, b)
    elif tb is not None and ta is None and isinstance(a, Tensor) and a.ndim >= 3:
        obs.gate_meets(tb, a)


def _on_matmul(obs: Observer, args, kwargs, out) -> None:
    operands = args[1:] if args and isinstance(args[0], str) else args
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    for t in operands:
        tag = obs.get(t)
        if tag is not None and tag.kind == "softmax" and tag.piece is None:
            obs.attention(tag)


def sdpa_weights(q: Tensor, k: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False,
                 scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """The softmax weights ``F.scaled_dot_product_attention`` uses, computed explicitly."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    q, k = q.float(), k.float()
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    logits = (q @ k.transpose(-2, -1)) * scale
    n_q, n_k = logits.shape[-2:]
    if is_causal:
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask.float()
    return torch.softmax(logits, dim=-1)


def _on_sdpa(obs: Observer, args, kwargs, out) -> None:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    bound = dict(zip(names, args, strict=False)) | kwargs
    w = sdpa_weights(bound["query"], bound["key"], bound.get("attn_mask"),
                     bool(bound.get("is_causal", False)), bound.get("scale"),
                     bool(bound.get("enable_gqa", False)))
    producer = obs.stack.producer()
    tag = _Tag("softmax", next(obs._ids), w, w, producer, dim=w.ndim - 1)
    obs._emit_map(tag, w, "scaled_dot_product_attention weights")


def _on_mha(obs: Observer, args, kwargs, out) -> None:
    """``nn.MultiheadAttention``: the same call again with ``need_weights=True``, per head."""
    import inspect

    import torch.nn.functional as F

    bound = inspect.signature(F.multi_head_attention_forward).bind(*args, **kwargs)
    bound.arguments.update(need_weights=True, average_attn_weights=False, dropout_p=0.0)
    if bound.arguments.get("is_causal") and bound.arguments.get("attn_mask") is None:
        return  # the causal mask is implied and not passed: nothing exact to recompute from
    _, w = F.multi_head_attention_forward(*bound.args, **bound.kwargs)
    if w is None:
        return
    w = w if w.ndim == 4 else w[None]
    tag = _Tag("softmax", next(obs._ids), w, w, obs.stack.producer(), dim=w.ndim - 1)
    obs._emit_map(tag, w, "nn.MultiheadAttention weights", batch=w.shape[0])


def _handlers() -> dict[str, Callable]:
    table: dict[str, Callable] = {}
    for n in ("sigmoid", "sigmoid_", "expit", "hardsigmoid"):
        table[n] = _on_sigmoid
    table["softmax"] = _on_softmax
    for n in ("view", "reshape", "unsqueeze", "squeeze", "transpose", "permute", "contiguous",
              "flatten", "unflatten", "view_as", "reshape_as", "t", "movedim", "to", "float",
              "half", "bfloat16", "type_as", "clone", "split", "chunk", "unbind",
              "tensor_split", "split_with_sizes", "interpolate", "upsample"):
        table[n] = _on_shape
    table["__getitem__"] = _on_getitem
    for n in ("expand", "expand_as", "broadcast_to"):
        table[n] = _on_expand
    for n in ("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"):
        table[n] = _on_mul
    for n in ("matmul", "__matmul__", "__rmatmul__", "bmm", "einsum"):
        table[n] = _on_matmul
    table["scaled_dot_product_attention"] = _on_sdpa
    table["multi_head_attention_forward"] = _on_mha
    return table


_HANDLERS = _handlers()

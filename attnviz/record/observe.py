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
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .axes import Axes, value_grids
from .geometry import is_self_gate, map_layout
from .ops import HANDLERS
from .queries import QuerySpec
from .stack import ModuleStack
from .tags import Tag as _Tag


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
    owned: bool = False  # a fresh tensor the recorder computed: no defensive copy needed


def common_scope(a: str, b: str) -> str:
    """The deepest module enclosing both names (``""`` is the model)."""
    pa, pb = a.split(".") if a else [], b.split(".") if b else []
    out = []
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        out.append(x)
    return ".".join(out)


class Observer(TorchFunctionMode):
    """A torch function mode that tags weights and reports where they meet features."""

    def __init__(self, stack: ModuleStack, emit: Callable[[Observation], None],
                 fail: Callable[[str, Exception], None] | None = None,
                 admit: Callable[[str, tuple[int, ...], str | None], bool] | None = None
                 ) -> None:
        super().__init__()
        self.stack = stack
        self.emit = emit
        self.fail = fail
        self._admit = admit
        self._tags: dict[int, tuple[weakref.ref, _Tag]] = {}
        self.queries: QuerySpec | None = None  # record(queries=...): rows fused SDPA computes
        self._axes: dict[int, tuple[weakref.ref, Axes]] = {}
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
            try:
                handler(self, args, kwargs, out)
            except Exception as e:  # never in the user's way: drop the site, keep the forward
                self.failed(e)
        return out

    def failed(self, error: Exception) -> None:
        """Something the observer computed failed: the site is dropped, the forward goes on."""
        if self.fail is None:
            raise error
        self.fail(self.stack.producer(), error)

    def admit(self, shape: tuple[int, ...], kind: str | None = None) -> bool:
        """May a map of ``shape`` (of ``kind``, None: not known yet) made by the running module
        be computed and kept?"""
        return self._admit is None or self._admit(self.stack.producer(), tuple(shape), kind)

    # -- tags --------------------------------------------------------------------------------
    def tag(self, t: Any, tag: _Tag) -> None:
        if isinstance(t, Tensor):
            self._tags[id(t)] = (weakref.ref(t), tag)

    def get(self, t: Any) -> _Tag | None:
        if not isinstance(t, Tensor):
            return None
        hit = self._tags.get(id(t))
        return hit[1] if hit is not None and hit[0]() is t else None

    def mark(self, t: Tensor, axes: Axes) -> None:
        """Note what the axes of the untagged tensor ``t`` are (see ``axes.py``)."""
        self._axes[id(t)] = (weakref.ref(t), axes)

    def axes_of(self, t: Any) -> Axes | None:
        if not isinstance(t, Tensor):
            return None
        hit = self._axes.get(id(t))
        return hit[1] if hit is not None and hit[0]() is t else None

    def purge(self) -> None:
        """Forget tags of tensors that died (releasing the weights they hold)."""
        for store in (self._tags, self._axes):
            dead = [k for k, (ref, _) in store.items() if ref() is None]
            for k in dead:
                del store[k]

    def returned(self, name: str, out: Any) -> None:
        """A module returned ``out``: remember it if ``out`` is a weight itself."""
        tag = self.get(out)
        if tag is not None and tag.base is out:
            self.outputs.setdefault(tag.src, name)

    def new_tag(self, kind: str, out: Tensor, **kw: Any) -> None:
        self.tag(out, _Tag(kind, next(self._ids), out, out, self.stack.producer(), **kw))

    def derived(self, tag: _Tag, out: Tensor, op: str) -> _Tag:
        """A new weight made from ``tag``'s weight by ``op`` (see ``derive.py``)."""
        mixed = tag.mixed if op in tag.mixed else (*tag.mixed, op)
        return _Tag(tag.kind, next(self._ids), out, out, tag.producer, act=tag.act, mixed=mixed,
                    logits=tag.logits)

    def derive(self, tag: _Tag, out: Any, op: str) -> None:
        """Tag ``out`` (made from a weight by ``op``) as a weight of its own."""
        if isinstance(out, Tensor) and out.ndim:
            self.tag(out, self.derived(tag, out, op))

    def flush(self) -> None:
        """End of a scope: group split pieces into mixing weights, forget every tag."""
        for parts in self._pieces.values():
            try:
                _emit_pieces(self, parts)
            except Exception as e:
                if self.fail is None:
                    raise
                self.fail(parts[0].producer, e)
        self._pieces.clear()
        self._tags.clear()
        self._axes.clear()
        self._done.clear()

    def _scope(self, producer: str) -> str:
        return common_scope(producer, self.stack.owner())

    def _emit(self, tag: _Tag, kind: str, value: Tensor, what: str, owned: bool = False,
              **meta: Any) -> None:
        label = f"observed {what} in {self.stack.type_name(tag.producer)}"
        scope = self._scope(tag.producer)
        hook = None
        if tag.mixed:
            meta["mixed"] = ", ".join(tag.mixed)
        elif kind in ("channel", "spatial") and tag.eff.numel() == tag.base.numel():
            hook = self.outputs.get(tag.src)
        self.emit(Observation(tag.producer, kind, value, label, scope, meta, hook, owned))

    # -- events ------------------------------------------------------------------------------
    def gate_meets(self, tag: _Tag, feat: Tensor) -> None:
        if tag.kind == "gate" and (is_self_gate(tag, feat) or self.stack.recurrent()):
            return  # x · σ(a·x + b): an activation (SiLU, Swish-β, QuickGELU); or an RNN cell
        src = tag.src
        if tag.kind == "softmax" and tag.piece is not None:
            parts = self._pieces.setdefault(src, [tag, self._scope(tag.producer), []])
            parts[2].append((tag.piece, len(parts[2]), tag.eff))
            return
        done = (src, tag.piece) if tag.kind == "gate" else src  # chunks of one σ: each a gate
        if done in self._done:
            return
        self._done.add(done)
        kind, value = classify(tag, feat.shape)
        what = "softmax weights" if tag.kind == "softmax" else "sigmoid gate"
        ax = self.axes_of(feat)
        if ax is not None and ax.perm and ax.perm != (0, 1, 2, 3) and kind != "gate":
            # a permuted feature map (triplet attention): the gate's axes are not (C,) / (H, W)
            axes = "".join("BCHW"[i] for i in ax.perm)
            self._emit(tag, "gate", classify(tag, feat.shape, permuted=True)[1], what,
                       axes=f"multiplied into a feature map permuted to {axes}")
            return
        self._emit(tag, kind, value, what)

    def attention(self, tag: _Tag, operand: Tensor | None = None, right: bool = False,
                  what: str = "attention map", values: Any = None) -> None:
        """A softmax weight (or one derived from it) meets ``matmul``: the map that multiplies
        the values. A derived weight is recorded as the operand itself (rows = queries; the
        right operand of ``v @ w`` is transposed)."""
        src = tag.src
        if src in self._done:
            return
        self._done.add(src)
        if tag.mixed and operand is not None:
            w = operand.transpose(-1, -2) if right else operand
            what = "mixed attention map"
        else:
            w = tag.base
            if tag.dim is not None and tag.dim != w.ndim - 1:
                w = w.movedim(tag.dim, -1)
        if self.admit(w.shape):
            self._emit_map(tag, w, what, grids=self._grids(tag, w, values, right))

    def _grids(self, tag: _Tag, w: Tensor, values: Any, right: bool) -> dict[str, Any]:
        """q_grid / k_grid of a map, only where its axes are known to be pixels."""
        q, k = w.shape[-2:]
        told = value_grids(self, values, right, q, k)
        meta: dict[str, Any] = {}
        if told is not None and told[2]:  # the values say: keys are channels
            meta["axes"] = "keys are channels" + (", queries too" if q == k else "")
            return {"q_grid": None if q == k else self.stack.grid(q), "k_grid": None, **meta}
        k_grid = told[1] if told is not None else self.stack.grid(k)
        if not tag.logits:
            meta["axes"] = ("rows are not query tokens: a softmax over a projection, not over "
                            "q·kᵀ (factorised / lambda attention)")
            return {"q_grid": None, "k_grid": k_grid, **meta}
        return {"q_grid": self.stack.grid(q), "k_grid": k_grid, **meta}

    def weights(self, w: Tensor, what: str, batch: int | None = None,
                rows: list[int] | None = None, n_queries: int | None = None,
                **meta: Any) -> None:
        """Attention weights computed explicitly (fused SDPA, nn.MultiheadAttention): a fresh
        tensor, kept without a copy; ``rows``: only these query rows were computed, of
        ``n_queries``."""
        tag = _Tag("softmax", next(self._ids), w, w, self.stack.producer(), dim=w.ndim - 1,
                   logits=True)
        self._emit_map(tag, w, what, batch, rows=rows, n_queries=n_queries, owned=True, **meta)

    def _emit_map(self, tag: _Tag, w: Tensor, what: str, batch: int | None = None,
                  grids: dict[str, Any] | None = None, rows: list[int] | None = None,
                  n_queries: int | None = None, owned: bool = False, **meta: Any) -> None:
        if w.ndim < 2:
            return
        value, extra = map_layout(w, batch or self.stack.batch_for(tuple(w.shape)), self.stack)
        q, k = n_queries or w.shape[-2], w.shape[-1]
        if extra.get("windows"):
            self._emit(tag, "attention", value, what, owned=owned, **extra, **meta)
            return
        grids = grids or {"q_grid": self.stack.grid(q), "k_grid": self.stack.grid(k)}
        k_grid = grids["k_grid"]
        if q == 1 and value.shape[1] == 1 and k_grid is not None:
            self._emit(tag, "context", value.reshape(value.shape[0], *k_grid), "softmax pooling",
                       owned=owned)
            return
        if rows is not None:  # only these rows were computed (the recorder keeps the rest)
            meta["queries"] = list(rows)
        self._emit(tag, "attention", value, what, owned=owned, **grids, **meta)


def canonical(kind: str, out: Tensor) -> Tensor:
    """A hooked module's output (the weight itself) → the canonical shape of ``kind``."""
    if kind == "spatial":
        return out.reshape(out.shape[0], *out.shape[-2:])
    return out.reshape(out.shape[0], -1)


def classify(tag: _Tag, feat_shape: torch.Size, permuted: bool = False) -> tuple[str, Tensor]:
    """Kind and canonical value of a weight multiplied into a feature map of ``feat_shape``
    (``permuted``: its axes are not (B, C, H, W), so only a ``gate`` as multiplied)."""
    g = tag.eff
    n = len(feat_shape)
    b = feat_shape[0]
    shape = (1,) * (n - g.ndim) + tuple(g.shape) if g.ndim <= n else tuple(g.shape)
    aligned = g.reshape(shape)
    if aligned.shape[0] != b:
        aligned = aligned.expand(b, *aligned.shape[1:])
    if permuted:
        return "gate", aligned
    if n == 4 and len(shape) == 4:
        _, c, h, w = feat_shape
        if shape[1:] == (c, 1, 1):
            return "channel", aligned.reshape(b, c)
        if shape[1:] == (1, h, w) and (h, w) != (1, 1) and tag.kind != "softmax":
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

"""What the network does to a weight after its activation, before it multiplies features.

A gate is often not multiplied as it came out of the sigmoid: ``1 + σ`` (BAM, residual
attention), ``2σ``, ``torch.where(m, σ, 1)``, ``σ.repeat(...)``, ``torch.cat`` of gates,
``torch.addcmul(x, x, σ)``. Softmax weights are often changed before they multiply V: talking
heads (a linear or 1×1 conv across heads), ``masked_fill``, renormalisation, a gated mix of two
softmaxes (ConViT), dropout in ``train()``. Each handler here makes the result a new *derived*
weight (tagged like the original, with the operation in ``mixed``), so what is recorded is the
tensor that actually multiplied the features or the values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .axes import carries_logits, logits_of

if TYPE_CHECKING:
    from .tags import Watcher as Observer


def smaller(other: Any, ref: Tensor) -> bool:
    """True when ``other`` (a number or tensor) broadcasts into ``ref`` without growing it and
    holds fewer elements: it scales or shifts the weight, it is not a feature map."""
    if not isinstance(other, Tensor):
        return isinstance(other, (int, float, bool))
    if other.numel() >= ref.numel():
        return False
    try:
        return tuple(torch.broadcast_shapes(other.shape, ref.shape)) == tuple(ref.shape)
    except RuntimeError:
        return False


def _pair(args: tuple, kwargs: dict) -> tuple[Any, Any]:
    a = args[0] if args else kwargs.get("input")
    b = args[1] if len(args) > 1 else kwargs.get("other")
    return a, b


def on_mul(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
    """``a * b``: a weight meets a feature map, or is scaled by a number, a parameter or another
    weight (``σ(g) * softmax``: the softmax is the map, the gate its mixing weight)."""
    a, b = _pair(args, kwargs)
    ta, tb = obs.get(a), obs.get(b)
    if ta is None and tb is None:
        _carry_logits(obs, a, b, out)
        return
    if ta is not None and tb is not None:
        main = tb if tb.kind == "softmax" and ta.kind != "softmax" else ta
        obs.derive(main, out, "scaled by another weight")
        return
    tag, weight, other = (ta, a, b) if ta is not None else (tb, b, a)
    if smaller(other, weight):
        obs.derive(tag, out, "scaled")
    elif isinstance(other, Tensor) and other.ndim >= 3:
        obs.gate_meets(tag, other)


def on_add(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
    """``a + b`` / ``a - b``: two weights mixed (a sum of softmaxes), or a weight shifted by a
    number or parameter (``1 + σ``, ``1 - σ``)."""
    a, b = _pair(args, kwargs)
    ta, tb = obs.get(a), obs.get(b)
    if ta is None and tb is None:
        _carry_logits(obs, a, b, out)
    elif ta is not None and tb is not None:
        main = tb if tb.kind == "softmax" and ta.kind != "softmax" else ta
        obs.derive(main, out, "sum of two weights")
    elif ta is not None and smaller(b, a):
        obs.derive(ta, out, "shifted")
    elif tb is not None and smaller(a, b):
        obs.derive(tb, out, "shifted")


def on_div(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
    """``w / s``: a renormalised (or rescaled) weight."""
    a, b = _pair(args, kwargs)
    tag = obs.get(a)
    if tag is None:
        _carry_logits(obs, a, None, out)
    elif obs.get(b) is None:
        obs.derive(tag, out, "renormalised" if isinstance(b, Tensor) else "scaled")


def _carry_logits(obs: Observer, a: Any, b: Any, out: Any) -> None:
    """Scaling, a bias or a mask on logits (``q @ kᵀ · s + bias``) leaves logits."""
    if carries_logits(obs, a, b):
        logits_of(obs, (), out)


def on_first(op: str) -> Callable:
    """A handler deriving a weight from an op whose first argument is the weight."""

    def handler(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        tag = obs.get(x)
        if tag is not None:
            obs.derive(tag, out, op)
        else:
            _carry_logits(obs, x, None, out)

    return handler


def on_mix(op: str) -> Callable:
    """Linear / conv over a softmax map: talking heads, a learnt mix across heads."""

    def handler(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
        tag = obs.get(args[0] if args else kwargs.get("input"))
        if tag is not None and tag.kind == "softmax":
            obs.derive(tag, out, op)

    return handler


def on_dropout(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
    """Dropout that changed the weight (``train()``): the dropped map is the one used."""
    x = args[0] if args else kwargs.get("input")
    tag = obs.get(x)
    if tag is None or out is x:
        return
    p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
    obs.derive(tag, out, f"dropout p={float(p):g}")


def on_where(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
    """``torch.where(cond, w, y)``: the weight where ``cond`` holds."""
    for t in (*args[1:3], kwargs.get("input"), kwargs.get("other")):
        tag = obs.get(t)
        if tag is not None:
            obs.derive(tag, out, "where")
            return


def on_cat(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
    """``torch.cat`` / ``torch.stack`` of weights: one weight."""
    parts = args[0] if args else kwargs.get("tensors", ())
    for t in parts if isinstance(parts, (list, tuple)) else ():
        tag = obs.get(t)
        if tag is not None:
            obs.derive(tag, out, "concatenated")
            return


def on_addcmul(obs: Observer, args: tuple, kwargs: dict, out: Any) -> None:
    """``torch.addcmul(x, t1, t2, value=v)`` = ``x + v·t1·t2``; with ``x`` the feature the
    multiplier is ``1 + v·σ`` (``x·(1 + σ)`` written in one call)."""
    names = ("input", "tensor1", "tensor2")
    bound = dict(zip(names, args, strict=False)) | kwargs
    x, t1, t2 = bound.get("input"), bound.get("tensor1"), bound.get("tensor2")
    value = bound.get("value", 1)
    t1_tag, t2_tag = obs.get(t1), obs.get(t2)
    if (t1_tag is None) == (t2_tag is None):
        return
    tag, feat = (t1_tag, t2) if t1_tag is not None else (t2_tag, t1)
    if not isinstance(feat, Tensor) or feat.ndim < 3:
        return
    gate = tag.eff * value
    op = f"{value:g}·σ"
    if x is feat:
        gate, op = gate + 1, f"1 + {op}"
    obs.gate_meets(obs.derived(tag, gate, f"addcmul: x·({op})"), feat)


def handlers() -> dict[str, Callable]:
    """Operation name → derive handler."""
    table: dict[str, Callable] = {}
    for n in ("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"):
        table[n] = on_mul
    for n in ("add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__",
              "__rsub__", "__isub__", "rsub", "subtract"):
        table[n] = on_add
    for n in ("div", "div_", "__truediv__", "__itruediv__", "true_divide", "divide"):
        table[n] = on_div
    for n in ("masked_fill", "masked_fill_"):
        table[n] = on_first("masked_fill")
    for n in ("repeat", "repeat_interleave", "tile"):
        table[n] = on_first("repeated")
    for n in ("clamp", "clamp_", "clip"):
        table[n] = on_first("clamped")
    table["linear"] = on_mix("linear mix across heads (talking heads)")
    for n in ("conv1d", "conv2d"):
        table[n] = on_mix("1×1 conv mix across heads (talking heads)")
    for n in ("dropout", "dropout_"):
        table[n] = on_dropout
    table["where"] = on_where
    for n in ("cat", "concat", "concatenate", "stack"):
        table[n] = on_cat
    table["addcmul"] = on_addcmul
    return table

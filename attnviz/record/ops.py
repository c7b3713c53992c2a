"""What the observer does after each torch function: one handler per operation name.

Handlers take ``(observer, args, kwargs, out)``: activations tag their output, shape-only ops
pass the tag on, multiplies and matrix products report where a tagged weight meets features.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .observe import Observer


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
    obs.weights(w, "scaled_dot_product_attention weights")


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
    obs.weights(w, "nn.MultiheadAttention weights", batch=w.shape[0])


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


HANDLERS = _handlers()

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

from .axes import carries_logits, logits_of
from .axes import on_shape as axes_on_shape
from .derive import handlers as derive_handlers
from .queries import select

if TYPE_CHECKING:
    from .tags import Watcher as Observer


def _on_gate(act: str) -> Callable:
    def handler(obs: Observer, args, kwargs, out) -> None:
        src = args[0] if args else kwargs.get("input")
        ref = weakref.ref(src) if isinstance(src, Tensor) else None
        obs.new_tag("gate", out, act_input=ref, act=act)

    return handler


def _on_softmax(obs: Observer, args, kwargs, out) -> None:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if not isinstance(dim, int) or not isinstance(out, Tensor) or out.ndim == 0:
        return
    logits = carries_logits(obs, args[0] if args else kwargs.get("input"))
    obs.new_tag("softmax", out, dim=dim % out.ndim, logits=logits)


def _shape_op(op: str) -> Callable:
    def handler(obs: Observer, args, kwargs, out) -> None:
        _on_shape(obs, args, kwargs, out, op)

    return handler


def _on_shape(obs: Observer, args, kwargs, out, op: str = "") -> None:
    tag = obs.get(args[0]) if args else None
    if tag is None:
        axes_on_shape(obs, op, args, kwargs, out)
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


def _on_matmul(obs: Observer, args, kwargs, out) -> None:
    operands = args[1:] if args and isinstance(args[0], str) else args
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    tagged = False
    for i, t in enumerate(operands):
        tag = obs.get(t)
        if tag is not None and tag.kind == "softmax" and tag.piece is None:
            pair = len(operands) == 2 and not _is_einsum(args)
            other = operands[1 - i] if pair else None
            obs.attention(tag, t, right=pair and i == 1, values=other)
        tagged = tagged or tag is not None
    if not tagged:
        logits_of(obs, args, out)


def _is_einsum(args: tuple) -> bool:
    return bool(args) and isinstance(args[0], str)


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
    q, k = bound["query"], bound["key"]
    n_q = q.shape[-2]
    rows = obs.queries.rows(n_q, obs.stack.grid(n_q)) if obs.queries is not None else None
    q, mask, causal = select(q, bound.get("attn_mask"), bool(bound.get("is_causal", False)),
                             rows, k.shape[-2])
    shape = (*q.shape[:-1], k.shape[-2])
    if not obs.admit(shape, "attention"):
        return  # over the memory budget or filtered out: never computed
    w = sdpa_weights(q, k, mask, causal, bound.get("scale"),
                     bool(bound.get("enable_gqa", False)))
    p = float(bound.get("dropout_p") or 0.0)
    note = {"dropout": f"p={p:g}: the fused kernel dropped weights at random; these are the "
                       "weights before dropout"} if p > 0 else {}
    obs.weights(w, "scaled_dot_product_attention weights", rows=rows, n_queries=n_q, **note)


def _on_mha(obs: Observer, args, kwargs, out) -> None:
    """``nn.MultiheadAttention``: the same call again with ``need_weights=True``, per head."""
    import inspect

    import torch.nn.functional as F

    bound = inspect.signature(F.multi_head_attention_forward).bind(*args, **kwargs)
    p = float(bound.arguments.get("dropout_p") or 0.0) if bound.arguments.get("training") else 0.0
    bound.arguments.update(need_weights=True, average_attn_weights=False, dropout_p=0.0)
    if bound.arguments.get("is_causal") and bound.arguments.get("attn_mask") is None:
        return  # the causal mask is implied and not passed: nothing exact to recompute from
    q, k, heads = bound.arguments["query"], bound.arguments["key"], bound.arguments["num_heads"]
    batch = q.shape[1] if q.ndim == 3 else 1  # (L, N, E) here: MHA transposes batch_first
    if not obs.admit((batch, heads, q.shape[0], k.shape[0]), "attention"):
        return  # over the memory budget or filtered out: never computed
    _, w = F.multi_head_attention_forward(*bound.args, **bound.kwargs)
    if w is None:
        return
    w = w if w.ndim == 4 else w[None]
    note = {"dropout": f"p={p:g}: dropout applied in the forward; these are the weights "
                       "before dropout"} if p > 0 else {}
    obs.weights(w, "nn.MultiheadAttention weights", batch=w.shape[0], **note)


def _handlers() -> dict[str, Callable]:
    table: dict[str, Callable] = dict(derive_handlers())
    for n in ("sigmoid", "sigmoid_", "expit"):
        table[n] = _on_gate("sigmoid")
    for n in ("hardsigmoid", "hardsigmoid_"):
        table[n] = _on_gate("hardsigmoid")
    table["softmax"] = _on_softmax
    for n in ("view", "reshape", "unsqueeze", "squeeze", "transpose", "permute", "contiguous",
              "flatten", "unflatten", "view_as", "reshape_as", "t", "movedim", "to", "float",
              "half", "bfloat16", "type_as", "clone", "split", "chunk", "unbind",
              "tensor_split", "split_with_sizes", "interpolate", "upsample"):
        table[n] = _shape_op(n)
    table["__getitem__"] = _on_getitem
    for n in ("expand", "expand_as", "broadcast_to"):
        table[n] = _on_expand
    for n in ("matmul", "__matmul__", "__rmatmul__", "bmm", "einsum"):
        table[n] = _on_matmul
    table["scaled_dot_product_attention"] = _on_sdpa
    table["multi_head_attention_forward"] = _on_mha
    return table


HANDLERS = _handlers()

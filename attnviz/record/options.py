"""What ``record()`` refuses before it installs anything: models it cannot watch, bad options,
and layer patterns or kinds that match none of a model's known sites — each one
:class:`~attnviz.errors.ParameterError` / :class:`~attnviz.errors.NoAttentionError` line."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import NoAttentionError, ParameterError
from .records import KINDS
from .sites import ModelInfo, matches, nothing_message

_RECORDABLE: set[type] = set()  # model types that passed (checked once per type)


def check_recordable(model: object, heads: str, max_bytes: object) -> None:
    """Refuse what cannot be recorded: not an ``nn.Module``, TorchScript, a
    ``torch.compile`` wrapper, and bad ``heads`` / ``max_bytes``."""
    if type(model) not in _RECORDABLE:
        _check_type(model)
        _RECORDABLE.add(type(model))
    if heads not in ("all", "mean"):
        raise ParameterError(f"heads must be 'all' or 'mean', got {heads!r}")
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ParameterError(f"max_bytes must be a positive integer, got {max_bytes!r}")


def _check_type(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise ParameterError(f"record() needs a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise ParameterError(
        f"{type(model).__name__} is a TorchScript model (torch.jit.script/trace): its "
        "compiled code runs no Python hooks, so attnviz cannot watch it; record the "
        "original nn.Module instead"
        )
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        raise ParameterError(
        "this model was compiled with torch.compile, and compiled code runs no hooks: "
        "record the original module, attnviz.record(model._orig_mod), and call "
        "model._orig_mod(x) inside the block"
        )


def parse_kinds(kinds: Iterable[str] | None) -> tuple[str, ...] | None:
    """``kinds=`` as a tuple of known kinds (None: every kind)."""
    if kinds is None:
        return None
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ParameterError(f"unknown attention kind(s) {bad}; choose from {KINDS}")
    return kinds


def check_known(model: nn.Module, info: ModelInfo, observe: bool, patterns: object,
                kinds: tuple[str, ...] | None) -> None:
    """With every site of the model known (adapters, earlier observation): refuse a model
    without attention, or a layer pattern / kinds that match none of its sites."""
    observed = info.observed or {} if observe else {}
    if patterns is None and kinds is None and (info.adapter_sites or observed):
        return  # every site is asked for, and there is one
    known = [s.name for s in info.adapter_sites] + list(observed)
    if not known:
        raise NoAttentionError(nothing_message(model, []))
    if patterns is None and kinds is None:
        return
    # one module may make weights of two kinds (a context pooling and a channel gate)
    site_kinds = [(s.name, s.kind) for s in info.adapter_sites]
    site_kinds += [(n, k) for n, (k, _) in observed.items()]
    if observe:
        site_kinds += [(n, k) for n, k, _ in info.hooked.values()]
    if not any(matches(n, patterns) and (kinds is None or k in kinds) for n, k in site_kinds):
        raise NoAttentionError(filter_message(model, patterns, kinds, known))


def filter_message(model: nn.Module, patterns: object, kinds: tuple[str, ...] | None,
                   known: list[str]) -> str:
    """The message for a layer pattern / kinds that match none of the ``known`` sites."""
    what = f"layer pattern {patterns!r}" if patterns else "the chosen kinds"
    if kinds and patterns:
        what += f" with kinds {list(kinds)}"
    elif kinds:
        what = f"kinds {list(kinds)}"
    return (f"{what} matches none of the {len(known)} attention sites of "
            f"{type(model).__name__} (e.g. {', '.join(known[:6])})")


__all__ = ["check_known", "check_recordable", "filter_message", "parse_kinds"]

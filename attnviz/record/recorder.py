"""``record(model)``: hooks in on enter, typed attention records out, hooks always removed.

with attnviz.record(model) as rec:
    logits = model(x)
rec.channel   # {name: (B, C)}      rec.spatial  # {name: (B, H, W)}
rec.radix     # {name: (B, R, C)}   rec.records  # every firing, in order
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import NoAttentionError, ParameterError, RecorderBusyError
from .adapters import KINDS, Adapter, find_adapter, supported_types

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, Recorder] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class AttentionRecord:
    """One firing of one attention module.

    Attributes:
        name: qualified module name in the model (``layer3.0.attn.spatial``).
        kind: ``channel`` | ``spatial`` | ``radix`` | ``paths`` | ``context``.
        value: the weight the network multiplied by, float32, canonical shape for its kind.
        module_type: the adapter label, e.g. ``"timm SEModule"``.
        order: position of the module in the model (for sorting / sliders).
        stage, block: first two integers in the name (``layer3.0`` → 3, 0), or None.
        call: index of the forward pass inside this recording (0, 1, ...).
    """

    name: str
    kind: str
    value: torch.Tensor
    module_type: str
    order: int
    stage: int | None
    block: int | None
    call: int

    @property
    def label(self) -> str:
        """Short label for plots: ``s3b0 spatial`` (or the name when no stage is known)."""
        if self.stage is None:
            return f"{self.name} {self.kind}"
        return f"s{self.stage}b{self.block if self.block is not None else 0} {self.kind}"


@dataclass(frozen=True)
class AttentionSite:
    """An attention module found in a model, before anything is recorded."""

    name: str
    module: nn.Module
    adapter: Adapter
    order: int

    @property
    def kind(self) -> str:
        return self.adapter.kind_of(self.module)


def _stage_block(name: str) -> tuple[int | None, int | None]:
    nums = [int(n) for n in re.findall(r"\d+", name)]
    return (nums[0] if nums else None, nums[1] if len(nums) > 1 else None)


def _matches(name: str, patterns: list[str]) -> bool:
    for p in patterns:
        if p.startswith("re:"):
            if re.search(p[3:], name):
                return True
        elif fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*"):
            return True
    return False


def find_attention(
    model: nn.Module, layers: str | Iterable[str] | None = None
) -> list[AttentionSite]:
    """Every supported attention module in ``model`` (optionally only names matching ``layers``).

    ``layers``: a glob on the qualified module name (``"layer4*"``, ``"*.spatial"``); a pattern
    without wildcards also matches everything below that name; ``"re:..."`` is a regex.
    """
    if not isinstance(model, nn.Module):
        raise ParameterError(f"record() needs a torch.nn.Module, got {type(model).__name__}")
    sites = []
    for name, module in model.named_modules():
        adapter = find_adapter(module)
        if adapter is not None:
            sites.append(AttentionSite(name, module, adapter, len(sites)))
    if not sites:
        raise NoAttentionError(
            f"{type(model).__name__} has no supported attention module. Supported types: "
            + ", ".join(supported_types())
        )
    if layers is None:
        return sites
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ParameterError(
            f"layers must be a non-empty pattern or list of patterns, got {layers!r}"
        )
    chosen = [s for s in sites if _matches(s.name, patterns)]
    if not chosen:
        examples = ", ".join(s.name for s in sites[:6])
        raise NoAttentionError(
            f"layer pattern {layers!r} matches none of the {len(sites)} attention modules of "
            f"{type(model).__name__} (e.g. {examples})"
        )
    return chosen


class Recorder:
    """Context manager recording the attention weights of every forward pass of ``model``.

    Args:
        model: any ``nn.Module`` holding supported attention modules.
        layers: restrict to module names matching this pattern (see :func:`find_attention`).
        kinds: restrict to these kinds (e.g. ``("spatial",)``).
        keep_graph: keep the weights attached to the autograd graph (for training losses on
            attention); by default they are detached copies.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        keep_graph: bool = False,
    ) -> None:
        self.model = model
        self.keep_graph = keep_graph
        sites = find_attention(model, layers)
        if kinds is not None:
            kinds = tuple(kinds)
            bad = [k for k in kinds if k not in KINDS]
            if bad:
                raise ParameterError(f"unknown attention kind(s) {bad}; choose from {KINDS}")
            sites = [s for s in sites if s.kind in kinds]
            if not sites:
                raise NoAttentionError(f"{type(model).__name__} has no attention of kind {kinds}")
        self.sites: list[AttentionSite] = sites
        self.records: list[AttentionRecord] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._calls: dict[str, int] = {}

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        other = _ACTIVE.get(self.model)
        if other is not None and other is not self:
            raise RecorderBusyError(
                f"{type(self.model).__name__} is already being recorded by another attnviz "
                "recorder; leave that `with record(model)` block first"
            )
        _ACTIVE[self.model] = self
        try:
            for site in self.sites:
                target = (
                    site.module.get_submodule(site.adapter.hook)
                    if site.adapter.hook
                    else site.module
                )
                self._handles.append(target.register_forward_hook(self._make_hook(site)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]

    @property
    def active(self) -> bool:
        """True while the hooks are installed."""
        return bool(self._handles)

    def _make_hook(self, site: AttentionSite):
        adapter, module, name = site.adapter, site.module, site.name
        kind = site.kind
        stage, block = _stage_block(name)

        def hook(_mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
            if self.keep_graph:
                value = adapter.transform(out, module).float()
            else:
                value = adapter.transform(out.detach(), module).to(torch.float32, copy=True)
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            self.records.append(
                AttentionRecord(name, kind, value, adapter.label, site.order, stage, block, call)
            )

        return hook

    # -- running -----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``model(x)`` without gradients inside the recording and return the logits."""
        if not self.active:
            raise RuntimeError("use the recorder inside `with attnviz.record(model) as rec:`")
        return self.model(x)

    def clear(self) -> None:
        """Forget what was recorded (the hooks stay)."""
        self.records.clear()
        self._calls.clear()

    def cpu(self) -> Recorder:
        """Move every recorded tensor to the CPU (they stay on the model's device until then)."""
        self.records[:] = [replace(r, value=r.value.cpu()) for r in self.records]
        return self

    # -- reading -----------------------------------------------------------------------------
    def by_kind(self, kind: str) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` for one kind, in model order; several forward passes are
        concatenated along the batch axis (a module firing twice per pass is kept in order)."""
        if kind not in KINDS:
            raise ParameterError(f"unknown attention kind {kind!r}; choose from {KINDS}")
        grouped: dict[str, list[torch.Tensor]] = {}
        for r in sorted(self.records, key=lambda r: (r.order, r.call)):
            if r.kind == kind:
                grouped.setdefault(r.name, []).append(r.value)
        return {k: v[0] if len(v) == 1 else torch.cat(v, 0) for k, v in grouped.items()}

    @property
    def channel(self) -> dict[str, torch.Tensor]:
        """Channel weights s(c): ``{name: (B, C)}``."""
        return self.by_kind("channel")

    @property
    def spatial(self) -> dict[str, torch.Tensor]:
        """Spatial masks A: ``{name: (B, H, W)}``."""
        return self.by_kind("spatial")

    @property
    def radix(self) -> dict[str, torch.Tensor]:
        """Split-attention weights: ``{name: (B, R, C)}``, summing to 1 over R."""
        return self.by_kind("radix")

    @property
    def paths(self) -> dict[str, torch.Tensor]:
        """Selective-kernel path weights: ``{name: (B, P, C)}``."""
        return self.by_kind("paths")

    @property
    def context(self) -> dict[str, torch.Tensor]:
        """Global-context pooling weights: ``{name: (B, H, W)}``."""
        return self.by_kind("context")

    def latest(self) -> list[AttentionRecord]:
        """The records of the last forward pass, in model order."""
        last: dict[str, AttentionRecord] = {}
        for r in self.records:
            last[r.name] = r
        return sorted(last.values(), key=lambda r: r.order)

    def __iter__(self) -> Iterator[AttentionRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        kinds = {k: len(self.by_kind(k)) for k in KINDS}
        summary = ", ".join(f"{k}={n}" for k, n in kinds.items() if n)
        return (
            f"Recorder({type(self.model).__name__}, {len(self.sites)} sites, {summary or 'empty'})"
        )


def record(
    model: nn.Module,
    layers: str | Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    keep_graph: bool = False,
) -> Recorder:
    """Record the attention weights ``model`` multiplies by, inside a ``with`` block."""
    return Recorder(model, layers=layers, kinds=kinds, keep_graph=keep_graph)

"""What a recorder keeps: each weight its hooks hand over is admitted against the budget and
copied during the forward pass; the records (names, stage / block, firing, order) are built
after it, when they are first read.

A hook runs between the network's own kernels, where every Python step costs about three times
what it costs in a loop of its own (caches are cold), so the work done there is the least that
must be: the copy (the network may write into its tensor later) and the budget check (a site
over the budget is skipped before anything is allocated). A named adapter's hook does only that
(:meth:`Collector._adapter_hook`); the rest waits in a list until ``records`` is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .budget import Budget
from .observe import canonical
from .queries import QuerySpec, keep_rows
from .records import AttentionRecord, RecordSet
from .sites import AttentionSite, ModelInfo, matches, stage_block

#: a weight waiting to become a record: name, kind, value, label, source, meta, order, call,
#: and the adapter's transform still to apply to the value, with its module
Pending = tuple[str, str, torch.Tensor, str, str, "dict[str, Any] | None", "int | None", int,
                "Callable[[torch.Tensor, nn.Module], torch.Tensor] | None", "nn.Module | None"]


def in_backward() -> bool:
    """True while autograd runs a backward pass (gradient checkpointing re-runs forwards)."""
    return torch._C._current_graph_task_id() != -1


class Collector(RecordSet):
    """The records half of :class:`~attnviz.record.recorder.Recorder`: admits, copies and keeps
    the weights its hooks see; ``records`` lists them in the order they were made.

    Args:
        info: what is known of the model (orders of its modules).
        keep_graph: keep the autograd graph (no copy, no detach).
        heads: ``"all"`` or ``"mean"`` (attention maps averaged over heads).
        max_bytes: the records budget.
        queries: the query rows kept of attention maps.
        patterns, kinds: the layer patterns and kinds asked for (None: all).
    """

    def __init__(self, info: ModelInfo, keep_graph: bool, heads: str, max_bytes: int,
                 queries: QuerySpec, patterns: list[str] | None,
                 kinds: frozenset[str] | set[str] | None) -> None:
        self._pending: list[Pending] = []
        super().__init__()
        self._info, self.keep_graph, self.heads = info, keep_graph, heads
        self.queries, self._patterns, self._kinds = queries, patterns, kinds
        self.problems: list[str] = []
        self.skipped: list[str] = []  # sites left out (over the budget, internal failure)
        self._budget = Budget(max_bytes, heads, self.skipped, self.problems)
        self._firings: dict[tuple[int, str, str], int] = {}
        self._pass, self._added = -1, 0

    @property  # type: ignore[override]
    def records(self) -> list[AttentionRecord]:
        """Every record so far, in the order the weights were made."""
        if self._pending:
            self._flush()
        return self._records

    @records.setter
    def records(self, value: list[AttentionRecord]) -> None:
        self._records = value

    def _flush(self) -> None:
        pending = list(self._pending)
        self._pending.clear()  # the same list: the hooks hold it
        for name, kind, value, label, source, meta, order, call, transform, module in pending:
            try:
                if transform is not None:  # a named adapter's copy, in the kind's shape
                    value = transform(value, module)
                stage, block = stage_block(name)
                order = self._info.order(name) if order is None else order
            except Exception as e:  # an internal failure drops the site with one warning
                self._on_failure(name, e)
                continue
            firing = self._firings.get((call, name, kind), 0)
            self._firings[call, name, kind] = firing + 1
            self._records.append(AttentionRecord.made(name, kind, value, label, order, stage,
                                                      block, call, firing, source,
                                                      {} if meta is None else meta))

    def clear(self) -> None:
        """Forget what was recorded (the hooks stay)."""
        self._pending.clear()
        self._records.clear()
        self.problems.clear()
        self.skipped.clear()
        self._budget.reset()

    def _on_failure(self, name: str, error: Exception) -> None:
        """An internal failure at ``name``: drop that site with one warning; the forward goes on
        unchanged."""
        self._budget.failed(name, error)

    def _admit(self, name: str, shape: tuple[int, ...], kind: str | None = None) -> bool:
        """May a weight of ``shape`` made at ``name`` be computed and kept? Checked before it is
        allocated: a site over the budget is skipped with one warning, the forward goes on.
        ``kind`` None: not known yet (a softmax map is told apart as attention or context pooling
        once made); the kinds asked for are checked again when it is kept."""
        if in_backward() or not matches(name, self._patterns):
            return False
        if kind is not None and self._kinds is not None and kind not in self._kinds:
            return False
        return self._budget.admit(name, kind or "attention", shape)

    def _add(self, name: str, kind: str, value: torch.Tensor, label: str, source: str,
             meta: dict[str, Any], order: int | None = None, owned: bool = False) -> None:
        """Keep ``value`` (a copy, unless it was computed here: ``owned``) if admitted."""
        if kind == "attention" and value.ndim == 4 and "queries" not in meta:
            value, meta, owned = keep_rows(self.queries, value, meta, owned)
        if not self._admit(name, tuple(value.shape), kind):
            return
        if kind == "attention" and self.heads == "mean":
            value = value.mean(1, keepdim=True)
        self._budget.used += value.numel() * 4
        self._added += 1
        if self.keep_graph or owned:  # owned: computed here, nobody else holds it
            value = value.float()
        else:  # a copy: the network may write into its tensors later (in-place adds)
            value = value.clone() if value.dtype == torch.float32 else value.float()
        if meta.get("problem"):
            self.problems.append(f"{name or '(model)'}: {meta['problem']}")
        self._pending.append((name, kind, value, label, source, meta, order, max(self._pass, 0),
                              None, None))

    def _adapter_hook(self, sites: dict[nn.Module, AttentionSite]):
        """The one forward hook of every named adapter's site, registered on each module of
        ``sites`` (hook module -> its site; a named adapter's kinds are never attention maps:
        no query rows, no head mean). A float32 output (the common case) costs one copy in the
        forward: the budget is checked on its size (every adapter's transform keeps the number
        of elements), the copy is kept, and the transform to the kind's shape runs when the
        records are built. Other outputs (AMP halves, ``keep_graph``) are transformed at once,
        so that the record is what the network multiplied by, converted."""
        budget, keep_graph, pending = self._budget, self.keep_graph, self._pending
        task_id, fp32 = torch._C._current_graph_task_id, torch.float32

        def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
            site = sites.get(mod)
            if site is None or task_id() != -1:  # a deepcopy's module; a backward's re-run
                return
            try:
                nbytes = out.numel() * 4
                if budget.used + nbytes > budget.max_bytes:
                    budget.admit(site.name, site.kind, tuple(out.shape))  # skipped, warns once
                    return
                budget.used += nbytes
                self._added += 1
                transform = site.adapter.transform  # type: ignore[union-attr]
                if keep_graph or out.dtype != fp32:
                    value = transform(out if keep_graph else out.detach(), site.module).float()
                    later = None
                else:  # a copy: the network may write into its tensors later
                    value = (out.detach() if out.requires_grad else out).clone()
                    later = transform
                pending.append((site.name, site.kind, value, site.module_type, "adapter", None,
                                site.order, max(self._pass, 0), later, site.module))
            except Exception as e:
                self._on_failure(site.name, e)

        return hook

    def _output_hook(self, site: tuple[str, str, str], target: nn.Module):
        """The forward hook of a module whose output is a weight found by watching earlier."""
        name, kind, label = site

        def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
            if mod is target:
                try:
                    value = canonical(kind, out if self.keep_graph else out.detach())
                    self._add(name, kind, value, label, "observed", {})
                except Exception as e:
                    self._on_failure(name, e)

        return hook


__all__ = ["Collector", "in_backward"]

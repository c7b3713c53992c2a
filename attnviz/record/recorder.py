"""``record(model)``: hooks in on enter, typed attention records out, hooks always removed.

with attnviz.record(model) as rec:
    logits = model(x)
rec.channel   # {name: (B, C)}      rec.spatial    # {name: (B, H, W)}
rec.radix     # {name: (B, R, C)}   rec.attention  # {name: (B, heads, Q, K)}

Two paths feed one list of records. Named adapters hook known module types (timm, torchvision,
attnviz). Every other weight is found by *watching* the forward pass (``observe.py``): the first
recording of a model watches all of it; later ones watch only the modules where weights were
found, so the steady state costs about as little as plain hooks. What the hooks hand over is
admitted, copied and kept by the :class:`~attnviz.record.collect.Collector` this class extends.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_hooks

from ..errors import MemoryBudgetError, NoAttentionError, ParameterError, RecorderBusyError
from .budget import DEFAULT_MAX_BYTES
from .collect import Collector, in_backward
from .handles import ModuleHooks
from .observe import ModuleStack, Observation, Observer
from .options import check_known, check_recordable, filter_message, parse_kinds
from .queries import QuerySpec
from .sites import (
    AttentionSite,
    candidates,
    fast_path_scope,
    looks_message,
    matches,
    model_info,
    nothing_message,
    parse_layers,
)

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, Recorder] = weakref.WeakKeyDictionary()


class Recorder(Collector):
    """Context manager recording the attention weights of every forward pass of ``model``.

    Args:
        model: any ``nn.Module``.
        layers: keep only weights whose module name matches (glob, list of globs, ``re:``).
        kinds: keep only these kinds (e.g. ``("spatial",)``).
        keep_graph: keep the weights attached to the autograd graph (for training losses).
        observe: also find weights by watching the computation (default); ``False`` uses only
            the named adapters.
        heads: ``"all"`` keeps attention maps per head, ``"mean"`` averages them over heads.
        recurrent: also record the gates of recurrent cells (a module named ``*LSTM*``,
            ``*GRU*``, ``*RNN*``, ``*Recurrent*``); they are state updates, not attention, and
            left out by default.
        queries: keep only these query rows of attention maps: ``"cls"`` (row 0), an index,
            a list of indices, or a list of ``(row, col)`` pixels of the query grid;
            ``meta["queries"]`` lists the rows kept. Fused ``scaled_dot_product_attention``
            weights are computed for those rows only (see :mod:`.queries`).
        max_bytes: hold at most this many bytes of records. A weight's size is known before it
            is copied (or, for fused attention, computed), so a site over the budget is skipped
            before anything is allocated, with one ``MemoryBudgetWarning``; the forward and its
            output are untouched. If every site was skipped, leaving the block raises
            ``MemoryBudgetError``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        keep_graph: bool = False,
        *,
        observe: bool = True,
        heads: str = "all",
        max_bytes: int = DEFAULT_MAX_BYTES,
        recurrent: bool = False,
        queries: Any = None,
        _discover: bool = False,
    ) -> None:
        check_recordable(model, heads, max_bytes)
        super().__init__(model_info(model), keep_graph, heads, max_bytes,
                         QuerySpec.parse(queries), parse_layers(layers), parse_kinds(kinds))
        self.model, self.observe = model, observe
        self.max_bytes, self.recurrent = max_bytes, recurrent
        # recurrent gates are left out of what is cached: recording them watches the model
        self._discover = observe and (_discover or recurrent or self._info.observed is None)
        self._find = _discover  # find_attention returns the candidates instead of warning
        self._every_site = self._patterns is None and self._kinds is None
        self.sites: list[AttentionSite] = (
            list(self._info.adapter_sites) if self._every_site
            else [s for s in self._info.adapter_sites if self._keep(s)])
        self._handles: list[Any] = []
        self._used = False
        self._depth = 0
        self._seen: dict[str, tuple[str, str]] = {}
        self._scopes_found: set[str] = set()
        self._hooked_found: dict[str, tuple[str, str, str]] = {}
        self._observer: Observer | None = None
        self._ran: set[str] = set()
        self._compiled = False
        self.watched = 0  # how many times the observer was entered (0: hooks only)
        if not self._discover:
            self._check_known()

    def _keep(self, site: AttentionSite) -> bool:
        kind_ok = self._kinds is None or site.kind in self._kinds
        return kind_ok and matches(site.name, self._patterns)

    def _check_known(self) -> None:
        """With every site of the model known (adapters, earlier observation), refuse now."""
        check_known(self.model, self._info, self.observe, self._patterns, self._kinds)

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        if self._used:
            raise RecorderBusyError(
                "this recorder was already entered once; start a new one with "
                "`with attnviz.record(model) as rec:`"
            )
        other = _ACTIVE.get(self.model)
        if other is not None:
            raise RecorderBusyError(
                f"{type(self.model).__name__} is already being recorded by another attnviz "
                "recorder; leave that `with record(model)` block first"
            )
        self._used = True
        _ACTIVE[self.model] = self
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self

    def _install(self) -> None:
        on_root = self._on_root  # a closure, not a bound method: deepcopy(model) copies hooks

        def root_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            on_root(module, args, kwargs)

        hooks = ModuleHooks()
        self._handles.append(hooks)
        hooks.pre(self.model, root_hook, with_kwargs=True)
        if self._every_site:  # the mapping cached with the model's sites
            sites = self._info.hook_sites()
        else:
            targets = self._info.hook_targets()
            sites = {targets[site.name]: site for site in self.sites}
        hooks.forward(sites, self._adapter_hook(sites))
        if self.observe and not self._discover:
            for target_name, site in self._info.hooked.items():
                target = self.model.get_submodule(target_name)
                self._handles.append(target.register_forward_hook(self._output_hook(site, target)))
        if not self.observe or (not self._discover and not self._info.scopes
                                and self._info.all_ran()):
            return  # nothing to watch: every module ran while watched, every site is hooked
        covered = {s.module for s in self._info.adapter_sites}
        self._stack = ModuleStack(self.model, covered, keep_recurrent=self.recurrent)
        self._observer = Observer(self._stack, self._on_observation, self._on_failure,
                                  self._admit)
        self._observer.queries = self.queries
        # later recordings watch the scopes where weights were found, and any module that never
        # ran while watched (data-dependent routing): nothing a first pass saw can escape
        self._scopes = {""} if self._discover else self._info.scopes
        self._handles.append(_module_hooks.register_module_forward_pre_hook(self._on_pre))
        self._handles.append(
            _module_hooks.register_module_forward_hook(self._on_post, always_call=True)
        )

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self._remove()
        if exc_type is not None:
            return
        if self._compiled:
            raise ParameterError(
                f"a torch.compile'd copy of {type(self.model).__name__} (an OptimizedModule made "
                f"by torch.compile) was called inside record(model): compiled code runs no "
                "hooks, so nothing it computes can be recorded; call the model itself (or "
                "compiled._orig_mod) inside the block")
        if self._discover and self._pass >= 0 and not self.skipped:
            self._info.observed = dict(self._seen)
            self._info.scopes = set(self._scopes_found)
            self._info.hooked = dict(self._hooked_found)
            self._info.ran = set(self._ran)
            self._warn_candidates(quiet=self._find)
        elif self.observe and self._pass >= 0 and self._info.observed is not None:
            self._info.observed.update(self._seen)  # found in modules first run now
            self._info.scopes |= self._scopes_found
            self._info.hooked.update(self._hooked_found)
            self._info.ran |= self._ran
        if self._pass >= 0 and not self._added and self._budget.over:
            raise MemoryBudgetError(self._budget.message)
        if self._pass >= 0 and not self._added:
            known = [s.name for s in self._info.adapter_sites] + list(self._seen)
            if known:
                raise NoAttentionError(filter_message(self.model, self._patterns, self._kinds,
                                                      known))
            raise NoAttentionError(nothing_message(self.model, candidates(self.model, [])))
        if self._pass < 0 and not self._added:
            warnings.warn(
                f"no forward pass of {type(self.model).__name__} ran inside the recording, so "
                "nothing was recorded (a torch.compile'd copy of the model runs no hooks)",
                stacklevel=2,
            )

    def _remove(self) -> None:
        while self._depth > 0 and self._observer is not None:
            self._depth -= 1
            if self._depth == 0:
                self._observer.__exit__(None, None, None)
        self._depth = 0
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]

    @property
    def active(self) -> bool:
        """True while the hooks are installed."""
        return bool(self._handles)

    # -- hooks -------------------------------------------------------------------------------
    def _on_root(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if torch.compiler.is_compiling():
            self._compiled = True  # a torch.compile'd copy is tracing this model
            return
        if module is self.model and not in_backward():
            self._pass += 1
            if self._observer is not None:
                self._stack.set_input(args, kwargs)

    def _watch(self, name: str | None) -> bool:
        """Is ``name`` a module to watch: a scope where weights were found, or a module that
        never ran while watched?"""
        return name is not None and (name in self._scopes or name not in self._info.ran)

    def _on_pre(self, module: nn.Module, args: tuple) -> None:
        try:
            name = self._stack.push(module, args)
            if self._depth == 0 and not self._watch(name):
                return
            if name is not None:
                self._ran.add(name)
            if self._watch(name):
                if self._depth == 0:
                    self._observer.__enter__()
                    self.watched += 1
                self._depth += 1
        except Exception as e:
            self._on_failure(self._stack.owner(), e)

    def _on_post(self, module: nn.Module, _args: object, _out: object) -> None:
        try:
            name = self._stack.pop(module)
            if name is None:
                return
            if self._watch(name) and self._depth > 0:
                self._depth -= 1
                if self._depth == 0:
                    self._observer.flush()
                    self._observer.__exit__(None, None, None)
            elif self._depth > 0:
                self._observer.purge()
            if self._depth > 0:
                self._observer.returned(name, _out)
        except Exception as e:
            self._on_failure(self._stack.owner(), e)

    def _on_observation(self, obs: Observation) -> None:
        if in_backward():
            return
        if not self._discover and obs.hook is not None and obs.hook in self._info.hooked:
            return  # its output hook records it already
        self._seen.setdefault(obs.name, (obs.kind, obs.label))
        if obs.hook is not None:
            self._hooked_found[obs.hook] = (obs.name, obs.kind, obs.label)
        else:
            # a GraphModule runs its inlined modules in the root's forward: watch the root
            scope = "" if self._stack.fx is not None else obs.scope
            self._scopes_found.add(fast_path_scope(self.model, scope))
        self._add(obs.name, obs.kind, obs.value, obs.label, "observed", obs.meta,
                  owned=obs.owned)

    def _warn_candidates(self, quiet: bool) -> None:
        """After a watched pass: warn about modules that look like attention but gave no record,
        even when other sites were found (partial misses are never silent)."""
        if not self._added or self._patterns is not None or self._kinds is not None:
            return  # a filtered recording is about the chosen layers only
        looks = candidates(self.model, [*self._seen, *(s.name for s in self.sites)])
        self._info.candidates = looks
        if looks and not quiet:
            warnings.warn(looks_message(self.model, looks), stacklevel=3)

    # -- running -----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``model(x)`` without gradients inside the recording and return the logits."""
        if not self.active:
            raise RecorderBusyError(
                "this recorder is not recording: call it inside `with attnviz.record(model) as "
                "rec:`")
        return self.model(x)

    def __repr__(self) -> str:
        n = len(self.records)
        return f"Recorder({type(self.model).__name__}, {n} records: {self.summary()})"


def record(
    model: nn.Module,
    layers: str | Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    keep_graph: bool = False,
    **options: Any,
) -> Recorder:
    """Record the attention weights ``model`` multiplies by, inside a ``with`` block.

    ``options``: ``observe``, ``heads``, ``max_bytes``, ``recurrent``, ``queries`` (see
    :class:`Recorder`).
    """
    return Recorder(model, layers=layers, kinds=kinds, keep_graph=keep_graph, **options)

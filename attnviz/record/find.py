"""``find_attention(model, x)``: every attention site of a model, and what looks like attention
but produced nothing."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import NoAttentionError, ParameterError
from .recorder import Recorder
from .sites import (
    AttentionSite,
    SiteList,
    candidates,
    matches,
    model_info,
    nothing_message,
    parse_layers,
)


@torch.no_grad()
def find_attention(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    *,
    layers: str | Iterable[str] | None = None,
) -> SiteList:
    """Every attention site of ``model``: name, kind, shape and how it was found.

    With ``example_input`` one forward pass is watched (finding hand-written attention too) and
    ``.candidates`` names modules that look like attention but produced no record. Without it,
    the named-adapter sites and what earlier recordings of this model observed are listed.
    """
    patterns = parse_layers(layers)
    if example_input is None:
        if not isinstance(model, nn.Module):
            raise ParameterError(
                f"find_attention() needs a torch.nn.Module, got {type(model).__name__}"
            )
        info = model_info(model)
        sites = [s for s in info.adapter_sites if matches(s.name, patterns)]
        for name, (kind, label) in (info.observed or {}).items():
            if matches(name, patterns):
                sites.append(AttentionSite(name, kind, label, "observed", info.order(name),
                                           model.get_submodule(name)))
        if not sites:
            raise NoAttentionError(nothing_message(model, candidates(model, [])) + (
                "" if info.observed is not None else
                " (pass an example input, find_attention(model, x), to watch a forward pass)"))
        return SiteList(sorted(sites, key=lambda s: s.order))
    rec = Recorder(model, layers=layers, _discover=True)
    with rec:
        model(example_input)
    sites: dict[tuple[str, str], AttentionSite] = {}
    adapters = {s.name: s for s in rec.sites}
    for r in rec.latest():
        a = adapters.get(r.name)
        sites[r.key, r.kind] = AttentionSite(r.key, r.kind, r.module_type, r.source, r.order,
                                     model.get_submodule(r.name), a.adapter if a else None,
                                     tuple(r.value.shape))
    return SiteList(sites.values(), candidates(model, [r.name for r in rec.records]))

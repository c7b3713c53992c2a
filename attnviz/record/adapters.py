"""One adapter per attention module type: which submodule to hook and how to read its output.

Adding a module type = one ``Adapter(...)`` line in ``ADAPTERS``. Kinds and canonical shapes:

    channel   (B, C)      s(c), a per-channel gate in (0, 1)
    spatial   (B, H, W)   A, a spatial mask
    radix     (B, R, C)   split-attention weights, sum to 1 over R
    paths     (B, P, C)   selective-kernel path weights, sum to 1 over P
    context   (B, H, W)   global-context pooling weights, sum to 1 over H·W
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


def _flat(out: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """(B, C, 1, 1), (B, 1, C) or (B, 1, 1, C) → (B, C)."""
    return out.reshape(out.shape[0], -1)


def _mask(out: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """(B, 1, H, W) → (B, H, W)."""
    return out.squeeze(1)


def _sigmoid_flat(out: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Pre-activation logits of an inline sigmoid → (B, C)."""
    return torch.sigmoid(out).reshape(out.shape[0], -1)


def _radix(out: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Radix-major (B, R·C) → (B, R, C); radix 1 (a sigmoid gate) → (B, C)."""
    r = module.radix
    return out.reshape(out.shape[0], r, -1) if r > 1 else out.reshape(out.shape[0], -1)


def _radix_kind(module: nn.Module) -> str:
    return "radix" if module.radix > 1 else "channel"


def _paths(out: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """(B, P, C, 1, 1) → (B, P, C)."""
    return out.reshape(out.shape[0], out.shape[1], -1)


@dataclass(frozen=True)
class Adapter:
    """How to record one attention module type.

    Attributes:
        label: human name shown in messages, e.g. ``"timm SEModule"``.
        target: ``"package.module:Class"`` of the attention module.
        hook: dotted submodule whose forward output carries the weight (``""`` = the module).
        transform: ``(hooked output, attention module) -> canonical tensor``.
        kind: a kind from ``records.KINDS``, or a function of the module that picks one.
        applies: extra check on the module (e.g. an optional submodule exists).
    """

    label: str
    target: str
    hook: str
    transform: Callable[[torch.Tensor, nn.Module], torch.Tensor]
    kind: str | Callable[[nn.Module], str]
    applies: Callable[[nn.Module], bool] = field(default=lambda m: True)

    def module_type(self) -> type | None:
        return _resolve(self.target)

    def kind_of(self, module: nn.Module) -> str:
        return self.kind(module) if callable(self.kind) else self.kind


def _resolve(target: str) -> type | None:
    """The class named by ``target``, or None when its module was never imported: a model cannot
    hold instances of a class whose module is not loaded, and importing timm or torchvision just
    to look costs seconds."""
    mod_name, cls_name = target.split(":")
    module = sys.modules.get(mod_name)
    return getattr(module, cls_name, None) if module is not None else None


# Order matters: a subclass must come before its parent (LightChannelAttn < ChannelAttn).
ADAPTERS: list[Adapter] = [
    Adapter("attnviz SqueezeExcite", "attnviz.nn.se:SqueezeExcite", "gate", _flat, "channel"),
    Adapter(
        "attnviz ChannelAttention (CBAM)",
        "attnviz.nn.channel_attn:ChannelAttention",
        "gate",
        _flat,
        "channel",
    ),
    Adapter(
        "attnviz SpatialAttention (CBAM)",
        "attnviz.nn.spatial_attn:SpatialAttention",
        "gate",
        _mask,
        "spatial",
    ),
    Adapter("attnviz ECA", "attnviz.nn.eca:ECA", "gate", _flat, "channel"),
    Adapter(
        "attnviz SplitAttention",
        "attnviz.nn.split_attn:SplitAttention",
        "rsoftmax",
        _radix,
        _radix_kind,
    ),
    Adapter("timm SEModule", "timm.layers.squeeze_excite:SEModule", "gate", _flat, "channel"),
    Adapter(
        "timm EffectiveSEModule",
        "timm.layers.squeeze_excite:EffectiveSEModule",
        "gate",
        _flat,
        "channel",
    ),
    Adapter(
        "timm SqueezeExciteCl",
        "timm.layers.squeeze_excite:SqueezeExciteCl",
        "gate",
        _flat,
        "channel",
    ),
    Adapter(
        "timm LightChannelAttn",
        "timm.layers.cbam:LightChannelAttn",
        "fc2",
        _sigmoid_flat,
        "channel",
    ),
    Adapter("timm ChannelAttn (CBAM)", "timm.layers.cbam:ChannelAttn", "gate", _flat, "channel"),
    Adapter("timm SpatialAttn (CBAM)", "timm.layers.cbam:SpatialAttn", "gate", _mask, "spatial"),
    Adapter("timm LightSpatialAttn", "timm.layers.cbam:LightSpatialAttn", "gate", _mask, "spatial"),
    Adapter("timm EcaModule", "timm.layers.eca:EcaModule", "gate", _flat, "channel"),
    Adapter("timm CecaModule", "timm.layers.eca:CecaModule", "gate", _flat, "channel"),
    Adapter(
        "timm SplitAttn (ResNeSt)",
        "timm.layers.split_attn:SplitAttn",
        "rsoftmax",
        _radix,
        _radix_kind,
    ),
    Adapter(
        "timm SelectiveKernelAttn",
        "timm.layers.selective_kernel:SelectiveKernelAttn",
        "",
        _paths,
        "paths",
    ),
    Adapter(
        "timm legacy senet SEModule", "timm.models.senet:SEModule", "sigmoid", _flat, "channel"
    ),
    Adapter(
        "timm efficientnet SqueezeExcite",
        "timm.models._efficientnet_blocks:SqueezeExcite",
        "gate",
        _flat,
        "channel",
    ),
    Adapter(
        "torchvision SqueezeExcitation",
        "torchvision.ops.misc:SqueezeExcitation",
        "scale_activation",
        _flat,
        "channel",
    ),
]


#: the adapters whose module type is loaded, refreshed when ``sys.modules`` changes size
_LOADED: list = [-1, ()]
#: type -> (how many adapter types were loaded, the adapters that match it)
_BY_TYPE: dict[type, tuple[int, tuple[Adapter, ...]]] = {}


def _loaded() -> tuple[tuple[Adapter, type], ...]:
    n = len(sys.modules)
    if _LOADED[0] != n:
        _LOADED[:] = n, tuple((a, c) for a in ADAPTERS if (c := a.module_type()) is not None)
    return _LOADED[1]


def find_adapter(module: nn.Module) -> Adapter | None:
    """The first adapter whose module type ``module`` is an instance of (an answer is kept
    per type until another adapter's module is imported)."""
    t = type(module)
    loaded = _loaded()
    cached = _BY_TYPE.get(t)
    if cached is None or cached[0] != len(loaded):
        cached = _BY_TYPE[t] = len(loaded), tuple(a for a, c in loaded if issubclass(t, c))
    for adapter in cached[1]:
        if adapter.applies(module):
            return adapter
    return None


def supported_types() -> list[str]:
    """Labels of every attention module type the recorder understands."""
    return [a.label for a in ADAPTERS]

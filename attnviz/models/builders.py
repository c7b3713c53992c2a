"""ResNet, SE-, CBAM-, ECA-ResNet and ResNeSt builders (ImageNet layouts, random init).

Every builder takes ``num_classes`` and ``weights``: ``None`` (random init) or the path of a
local checkpoint (``.safetensors`` preferred; ``.pt``/``.pth`` loaded with ``weights_only=True``).
Parameter counts match the published architectures (see ``tests/test_models.py``).
"""

from __future__ import annotations

import os

from torch import nn

from ..nn import get_attn
from .blocks import BasicBlock, BoTBlock, Bottleneck, ResNeStBottleneck
from .registry import register_model
from .resnet import ResNet, _downsample

Weights = str | os.PathLike | None

_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def _finish(model: nn.Module, weights: Weights) -> nn.Module:
    if weights is not None:
        from .checkpoints import load_weights

        load_weights(model, weights)
    return model


def _resnet(depth: int, attn: str | None, weights: Weights, **kwargs: object) -> nn.Module:
    block, layers = _DEPTHS[depth]
    attn_layer = get_attn(attn) if attn else None
    return _finish(ResNet(block, layers, attn_layer=attn_layer, **kwargs), weights)


def _register_family(prefix: str, attn: str | None, doc: str) -> None:
    for depth in _DEPTHS:

        def builder(weights: Weights = None, _d: int = depth, **kwargs: object) -> nn.Module:
            return _resnet(_d, attn, weights, **kwargs)

        builder.__name__ = builder.__qualname__ = f"{prefix}{depth}"
        builder.__doc__ = f"{doc} ResNet-{depth}. ``weights``: None or a local checkpoint path."
        register_model(builder)


_register_family("resnet", None, "Plain")
_register_family("se_resnet", "se", "Squeeze-and-Excitation (r=16, FC bias)")
_register_family("cbam_resnet", "cbam", "CBAM (official layout: shared MLP, 7×7 conv + BN)")
_register_family("eca_resnet", "eca", "ECA (adaptive k)")


def _resnest(layers: tuple[int, ...], weights: Weights, **kwargs: object) -> nn.Module:
    defaults: dict[str, object] = dict(
        stem="deep", stem_width=32, avg_down=True, radix=2, cardinality=1, base_width=64
    )
    defaults.update(kwargs)
    return _finish(ResNet(ResNeStBottleneck, layers, **defaults), weights)


@register_model
def resnest14(weights: Weights = None, **kwargs: object) -> nn.Module:
    """ResNeSt-14 (radix 2, deep stem, avg-down, avd). ``weights``: None or a local path."""
    return _resnest((1, 1, 1, 1), weights, **kwargs)


@register_model
def resnest26(weights: Weights = None, **kwargs: object) -> nn.Module:
    """ResNeSt-26 (radix 2, deep stem, avg-down, avd). ``weights``: None or a local path."""
    return _resnest((2, 2, 2, 2), weights, **kwargs)


@register_model
def resnest50(weights: Weights = None, **kwargs: object) -> nn.Module:
    """ResNeSt-50 (radix 2, cardinality 1, deep stem 32, avg-down, avd): 27,483,240 params."""
    return _resnest((3, 4, 6, 3), weights, **kwargs)


@register_model
def resnest101(weights: Weights = None, **kwargs: object) -> nn.Module:
    """ResNeSt-101 (stem width 64): 48,275,016 params. ``weights``: None or a local path."""
    kwargs.setdefault("stem_width", 64)
    return _resnest((3, 4, 23, 3), weights, **kwargs)


# Small 64-px models for the offline demo (widths 16/32/64/128, one 3×3/2 stem conv).
_DEMO: dict[str, object] = dict(
    widths=(16, 32, 64, 128),
    stem="small",
    stem_width=16,
    num_classes=5,
    input_norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
)


@register_model
def demo_cbam_resnet(weights: Weights = None, **kwargs: object) -> nn.Module:
    """Small CBAM ResNet-18 layout for 64-px images (ratio 8; spatial gate conv+bias, no BN)."""
    attn = get_attn("cbam", reduction=8, spatial_norm=False, spatial_bias=True)
    return _finish(
        ResNet(BasicBlock, (2, 2, 2, 2), attn_layer=attn, **{**_DEMO, **kwargs}), weights
    )


@register_model
def demo_se_resnet(weights: Weights = None, **kwargs: object) -> nn.Module:
    """Small SE ResNet-18 layout for 64-px images (ratio 8)."""
    attn = get_attn("se", reduction=8)
    return _finish(
        ResNet(BasicBlock, (2, 2, 2, 2), attn_layer=attn, **{**_DEMO, **kwargs}), weights
    )


@register_model
def demo_resnest(weights: Weights = None, **kwargs: object) -> nn.Module:
    """Small ResNeSt (radix 2, one block per stage) for 64-px images."""
    cfg = {**_DEMO, "widths": (8, 16, 32, 64), "avg_down": True, "radix": 2, **kwargs}
    return _finish(ResNet(ResNeStBottleneck, (1, 1, 1, 1), **cfg), weights)


@register_model
def demo_botnet(weights: Weights = None, **kwargs: object) -> nn.Module:
    """Small bottleneck-transformer ResNet for 64-px images: the last stage's 3×3 conv is
    4-head self-attention over its 8×8 positions (stride 1 there, 64 tokens)."""
    cfg = {**_DEMO, "widths": (8, 16, 32, 64), "avg_down": True, **kwargs}
    model = ResNet(Bottleneck, (1, 1, 1, 1), **cfg)
    inplanes, planes = cfg["widths"][2] * 4, cfg["widths"][3]  # type: ignore[index]
    down = _downsample(inplanes, planes * 4, 1, True)
    model.layer4 = nn.Sequential(BoTBlock(inplanes, planes, 1, down, heads=4, grid=(8, 8)))
    return _finish(model, weights)

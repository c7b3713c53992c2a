"""A ResNet with a pluggable attention module in every block (torchvision layout by default)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ParameterError
from .blocks import AttnFactory


class Normalize(nn.Module):
    """(x - mean) / std inside the model, so the model takes images in [0, 1] as they are."""

    attnviz_plain = True  # its own forward makes no attention weight (attnviz.record)

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _stem(kind: str, stem_width: int, in_chans: int) -> tuple[nn.Module, int]:
    if kind == "imagenet":  # 7×7/2 conv + 3×3/2 max-pool
        return nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ), stem_width
    if kind == "deep":  # three 3×3 convs (ResNet-D / ResNeSt) + max-pool
        out = stem_width * 2
        return nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ), out
    if kind == "small":  # one 3×3/2 conv, for small images (the demo models)
        return nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        ), stem_width
    raise ParameterError(f"unknown stem {kind!r}; choose 'imagenet', 'deep' or 'small'")


class ResNet(nn.Module):
    """ResNet body: stem → ``layer1..layer4`` → global pool → ``fc``.

    Args:
        block: a block class from :mod:`attnviz.models.blocks`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        attn_layer: ``channels -> module`` factory placed in every block before the add.
        widths: planes of the four stages (64, 128, 256, 512 as in the paper).
        stem: ``"imagenet"``, ``"deep"`` or ``"small"``.
        avg_down: shortcut downsampling by avg-pool then 1×1 conv (ResNet-D).
        input_norm: ``(mean, std)`` applied inside the model (inputs then in [0, 1]).
        block_kwargs: passed to every block (e.g. ``radix`` for ResNeSt).
    """

    attnviz_plain = True  # its own forward makes no attention weight (attnviz.record)

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        num_classes: int = 1000,
        attn_layer: AttnFactory | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        stem_width: int = 64,
        avg_down: bool = False,
        in_chans: int = 3,
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        **block_kwargs: object,
    ) -> None:
        super().__init__()
        _check_block_options(block, block_kwargs)
        self.num_classes = num_classes
        self.normalize = Normalize(*input_norm) if input_norm is not None else nn.Identity()
        self.stem, inplanes = _stem(stem, stem_width, in_chans)
        expansion: int = block.expansion  # type: ignore[attr-defined]
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if s != 1 or inplanes != planes * expansion:
                    down = _downsample(inplanes, planes * expansion, s, avg_down)
                blocks.append(block(inplanes, planes, s, down, attn_layer, **block_kwargs))
                inplanes = planes * expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.global_pool(self.forward_features(x)), 1))


def _downsample(inplanes: int, out: int, stride: int, avg_down: bool) -> nn.Module:
    if avg_down:
        pool = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1
            else nn.Identity()
        )
        return nn.Sequential(pool, nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out))
    return nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))


def _check_block_options(block: type[nn.Module], options: dict) -> None:
    """Refuse options no block takes (the blocks would swallow them silently)."""
    params = inspect.signature(block.__init__).parameters
    known = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    unknown = sorted(set(options) - known)
    if unknown:
        takes = sorted(known - {"self", "inplanes", "planes", "stride", "downsample"})
        raise ParameterError(f"unknown option(s) {unknown} for {block.__name__}; it takes {takes}")

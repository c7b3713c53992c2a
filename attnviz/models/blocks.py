"""Residual blocks with an attention module on the residual branch, before the add.

y = act( shortcut(x) + attn( F(x) ) )       (SE, CBAM and ECA papers)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..nn import MultiHeadSelfAttention2d, SplitAttention

AttnFactory = Callable[[int], "nn.Module | None"]


def _attn_or_identity(factory: AttnFactory | None, channels: int) -> nn.Module:
    module = factory(channels) if factory is not None else None
    return module if module is not None else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34)."""

    attnviz_plain = True  # its own forward makes no attention weight (attnviz.record)

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn_layer: AttnFactory | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = _attn_or_identity(attn_layer, planes)
        self.downsample = downsample
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.act2(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here, 'ResNet v1.5') → 1×1 ×4 (ResNet-50/101)."""

    attnviz_plain = True  # its own forward makes no attention weight (attnviz.record)

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn_layer: AttnFactory | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.attn = _attn_or_identity(attn_layer, out)
        self.downsample = downsample
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.act3(out + shortcut)


class ResNeStBottleneck(nn.Module):
    """ResNeSt bottleneck: the 3×3 conv is a split-attention conv; stride by avg-pool (avd)."""

    attnviz_plain = True  # its own forward makes no attention weight (attnviz.record)

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn_layer: AttnFactory | None = None,
        radix: int = 2,
        cardinality: int = 1,
        base_width: int = 64,
        **_: object,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * cardinality
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = SplitAttention(width, width, 3, 1, groups=cardinality, radix=radix)
        self.avd = nn.AvgPool2d(3, stride, padding=1) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.attn = _attn_or_identity(attn_layer, out)
        self.downsample = downsample
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.avd(self.conv2(out))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.act3(out + shortcut)


class BoTBlock(nn.Module):
    """Bottleneck whose 3×3 conv is multi-head self-attention (BoTNet): 1×1 → MHSA (then a
    2×2 average pool when strided) → 1×1 ×4."""

    attnviz_plain = True  # its own forward makes no attention weight (attnviz.record)

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn_layer: AttnFactory | None = None,
        heads: int = 4,
        grid: tuple[int, int] | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.mhsa = MultiHeadSelfAttention2d(planes, heads, grid)
        self.pool = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = downsample
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.pool(self.mhsa(out))))
        return self.act3(self.bn3(self.conv3(out)) + shortcut)

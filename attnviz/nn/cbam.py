"""CBAM = channel attention, then spatial attention:  F'' = (F × s(c)) × A."""

from __future__ import annotations

import torch
from torch import nn

from .channel_attn import ChannelAttention
from .spatial_attn import SpatialAttention


class CBAM(nn.Module):
    """Convolutional Block Attention Module (channel first, then spatial)."""

    attnviz_plain = True  # its own forward makes no attention weight (attnviz.record)

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        spatial_norm: bool = True,
        spatial_bias: bool = False,
    ) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size, norm=spatial_norm, bias=spatial_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))

"""CBAM channel attention (Woo et al., 2018), official layout.

M_c(F) = σ( MLP(AvgPool(F)) + MLP(MaxPool(F)) )     one MLP shared by both descriptors
F' = F × M_c(F)
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """CBAM channel gate; ``self.gate`` outputs s(c) with shape (B, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=bias),
        )
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean((2, 3), keepdim=True))
        mx = self.mlp(x.amax((2, 3), keepdim=True))
        s = self.gate(avg + mx)
        return x * s

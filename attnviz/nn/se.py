"""Squeeze-and-Excitation (Hu et al., 2018).

z = GAP(F)                      squeeze:    (B, C)
s = σ(W2 · δ(W1 · z))           excitation: (B, C), each s(c) in (0, 1)
O = F × s                       scale every channel by its weight
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """SE block. ``s = self.gate(...)`` is the channel weight s(c) the block multiplies by."""

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)  # W1
        self.act = nn.ReLU(inplace=True)  # δ
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)  # W2
        self.gate = nn.Sigmoid()  # σ → s(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean((2, 3), keepdim=True)
        s = self.gate(self.fc2(self.act(self.fc1(z))))
        return x * s

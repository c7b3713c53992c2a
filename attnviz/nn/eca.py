"""Efficient Channel Attention (Wang et al., 2020).

s = σ( conv1d_k( GAP(F) ) ),   k = |log2(C)/γ + b/γ|_odd  (γ = 2, b = 1)
O = F × s
"""

from __future__ import annotations

import math

import torch
from torch import nn


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """Kernel size from the ECA formula: the odd integer nearest to t = |log2(C)/γ + b/γ|, ties
    going up (the official code: truncate t, then add 1 if even); C = 64 gives t = 3.5, k = 3."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """ECA block; ``self.gate`` outputs s(c) with shape (B, 1, C)."""

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C)
        s = self.gate(self.conv(z))  # (B, 1, C)
        return x * s.view(x.shape[0], -1, 1, 1)

"""CBAM spatial attention (Woo et al., 2018).

M_s(F) = σ( BN( conv_{k×k}([AvgPool_c(F); MaxPool_c(F)]) ) )    a mask A of shape H × W
F'' = F × A
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ParameterError


class SpatialAttention(nn.Module):
    """CBAM spatial gate; ``self.gate`` outputs the mask A with shape (B, 1, H, W).

    Args:
        kernel_size: any odd k (padding k // 2 keeps the map size).
        norm: BatchNorm after the conv, as in the official code (its weight starts at 0,
            so an untrained mask is exactly 0.5 everywhere).
        bias: conv bias (used when ``norm`` is False).
    """

    def __init__(self, kernel_size: int = 7, norm: bool = True, bias: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ParameterError(
                f"SpatialAttention kernel_size must be a positive odd int, got {kernel_size}"
            )
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias)
        self.bn = nn.BatchNorm2d(1) if norm else nn.Identity()
        if norm:
            nn.init.zeros_(self.bn.weight)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        a = self.gate(self.bn(self.conv(pooled)))
        return x * a

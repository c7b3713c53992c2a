"""Multi-head self-attention over the positions of a feature map (BoTNet's MHSA).

    attn = softmax(QKᵀ / √d)       Q, K, V = 1×1 conv of (x + P), P a learned position map
    out  = attn @ V                 (B, heads, H·W, H·W) weights, rows sum to 1 over the keys
"""

from __future__ import annotations

import torch
from torch import nn


class MultiHeadSelfAttention2d(nn.Module):
    """Self-attention between all H·W positions, ``heads`` heads of ``channels // heads``.

    Args:
        channels: input = output channels.
        heads: number of heads.
        grid: (H, W) of a learned absolute position map added to x first (None: none).
    """

    def __init__(self, channels: int, heads: int = 4, grid: tuple[int, int] | None = None):
        super().__init__()
        if channels % heads:
            from ..errors import ParameterError

            raise ParameterError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.dim = heads, channels // heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.pos = nn.Parameter(torch.randn(1, channels, *grid) * 0.02) if grid else None
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.pos is not None:
            x = x + self.pos
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, self.dim, h * w).unbind(1)
        attn = self.softmax(q.transpose(-1, -2) @ k * self.dim**-0.5)  # (B, heads, HW, HW)
        out = attn @ v.transpose(-1, -2)  # (B, heads, HW, d)
        return out.transpose(-1, -2).reshape(b, c, h, w)

"""ResNeSt split attention (Zhang et al., 2020).

A k×k grouped conv makes R splits U_1..U_R per cardinal group (radix-major channels).

    s   = GAP( Σ_r U_r )
    a   = rSoftmax( fc2( δ( BN( fc1(s) ) ) ) )   softmax over r inside each cardinal group
                                                  (σ instead when R = 1)
    V   = Σ_r a_r × U_r
"""

from __future__ import annotations

import torch
from torch import nn


class RSoftmax(nn.Module):
    """Softmax over the radix axis for each cardinal group; output (B, R·C), radix-major."""

    def __init__(self, radix: int, cardinality: int) -> None:
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.radix > 1:
            x = x.view(b, self.cardinality, self.radix, -1).transpose(1, 2)
            return torch.softmax(x, dim=1).reshape(b, -1)
        return torch.sigmoid(x).reshape(b, -1)


def _make_divisible(v: float, divisor: int = 8, min_value: int = 32) -> int:
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SplitAttention(nn.Module):
    """Split-attention conv: ``self.rsoftmax`` outputs the radix weights a (B, R·C)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        radix: int = 2,
        reduction_ratio: float = 0.25,
        min_hidden: int = 32,
    ) -> None:
        super().__init__()
        self.radix = radix
        mid = out_channels * radix
        hidden = _make_divisible(in_channels * radix * reduction_ratio, 8, min_hidden)
        self.conv = nn.Conv2d(
            in_channels,
            mid,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups * radix,
            bias=False,
        )
        self.bn0 = nn.BatchNorm2d(mid)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, hidden, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, mid, 1, groups=groups)
        self.rsoftmax = RSoftmax(radix, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.act0(self.bn0(self.conv(x)))
        b, rc, h, w = u.shape
        if self.radix > 1:
            u = u.view(b, self.radix, rc // self.radix, h, w)  # U_1..U_R
            s = u.sum(1).mean((2, 3), keepdim=True)
        else:
            s = u.mean((2, 3), keepdim=True)
        a = self.rsoftmax(self.fc2(self.act1(self.bn1(self.fc1(s)))))
        if self.radix > 1:
            return (u * a.view(b, self.radix, -1, 1, 1)).sum(1)
        return u * a.view(b, -1, 1, 1)

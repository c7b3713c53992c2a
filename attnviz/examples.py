"""Attention modules written by hand, the way tutorials, blog posts and papers' repositories
write them. attnviz has no adapter for any of them: the recorder finds every weight by watching
the computation. Used by the tests, the benchmarks and notebook 06.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TutorialChannelAttention(nn.Module):
    """CBAM channel attention that *returns* σ(MLP(avg) + MLP(max)); the block multiplies."""

    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, c // r, 1, bias=False), nn.ReLU(),
                                nn.Conv2d(c // r, c, 1, bias=False))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


class TutorialSpatialAttention(nn.Module):
    """Returns σ(conv7×7([mean_c; max_c]))."""

    def __init__(self, k: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        return self.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))


class TutorialCBAMBlock(nn.Module):
    """``out = self.ca(out) * out; out = self.sa(out) * out`` inside a residual block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.ca = TutorialChannelAttention(c)
        self.sa = TutorialSpatialAttention()

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.ca(out) * out
        out = self.sa(out) * out
        return torch.relu(out + x)


class InlineChannelGate(nn.Module):
    """Official-CBAM style: ``torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)``."""

    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c)
        )

    def forward(self, x):
        att = self.mlp(F.avg_pool2d(x, x.shape[2:])) + self.mlp(F.max_pool2d(x, x.shape[2:]))
        scale = torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)
        return x * scale


class SequentialSE(nn.Module):
    """SE with ``nn.Sequential(Linear, ReLU, Linear, Sigmoid)`` and ``.view(b, c, 1, 1)``."""

    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c // r, c, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class Conv1dECA(nn.Module):
    """ECA: a conv1d over the transposed pooled vector."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        y = self.sigmoid(y)
        return x * y.expand_as(x)


class DetectorGate(nn.Module):
    """Detector style: ``x * self.act(self.fc(self.pool(x)))`` with a hard sigmoid."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(c, c, 1)
        self.act = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.act(self.fc(self.pool(x)))


class HandSplitAttention(nn.Module):
    """ResNeSt split attention by hand: rSoftmax, ``torch.split``, weighted sum.

    ``wrong_axis=True`` is the circulating bug: softmax over channels instead of over radix.
    """

    def __init__(self, c: int, radix: int = 2, cardinality: int = 2, wrong_axis: bool = False):
        super().__init__()
        self.radix, self.card, self.wrong_axis = radix, cardinality, wrong_axis
        self.conv = nn.Conv2d(c, c * radix, 3, padding=1, groups=cardinality * radix)
        self.bn = nn.BatchNorm2d(c * radix)
        inter = max(c // 2, 8)
        self.fc1 = nn.Conv2d(c, inter, 1, groups=cardinality)
        self.fc2 = nn.Conv2d(inter, c * radix, 1, groups=cardinality)

    def rsoftmax(self, x):
        b = x.size(0)
        if self.wrong_axis:
            x = x.view(b, self.card * self.radix, -1)
            return F.softmax(x, dim=2).reshape(b, -1)
        x = x.view(b, self.card, self.radix, -1).transpose(1, 2)
        return F.softmax(x, dim=1).reshape(b, -1)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        b, rchannel = x.shape[:2]
        splits = torch.split(x, rchannel // self.radix, dim=1)
        gap = F.adaptive_avg_pool2d(sum(splits), 1)
        atten = self.rsoftmax(self.fc2(torch.relu(self.fc1(gap)))).view(b, -1, 1, 1)
        attens = torch.split(atten, rchannel // self.radix, dim=1)
        return sum(att * split for att, split in zip(attens, splits, strict=True))


class HandCoordAttention(nn.Module):
    """Coordinate attention: ``x * a_w * a_h``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, 8, 1)
        self.conv_h, self.conv_w = nn.Conv2d(8, c, 1), nn.Conv2d(8, c, 1)

    def forward(self, x):
        n, c, h, w = x.size()
        x_h = x.mean(3, keepdim=True)
        x_w = x.mean(2, keepdim=True).permute(0, 1, 3, 2)
        y = torch.relu(self.conv1(torch.cat([x_h, x_w], dim=2)))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
        return x * a_w * a_h


class HandNonLocal(nn.Module):
    """Non-local block: softmax(θᵀφ) then bmm with g."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.theta, self.phi, self.g = (nn.Conv2d(c, c // 2, 1) for _ in range(3))
        self.w = nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        theta = self.theta(x).view(b, c // 2, -1).permute(0, 2, 1)
        phi = self.phi(x).view(b, c // 2, -1)
        g = self.g(x).view(b, c // 2, -1).permute(0, 2, 1)
        f = F.softmax(torch.bmm(theta, phi), dim=-1)
        y = torch.bmm(f, g).permute(0, 2, 1).reshape(b, c // 2, h, w)
        return x + self.w(y)


class HandMHSA(nn.Module):
    """Multi-head self-attention replacing a 3×3 conv (bottleneck-transformer style)."""

    def __init__(self, c: int, heads: int = 4, fused: bool = False) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.out = nn.Identity()

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))  # (B, heads, HW, d)
        if self.fused:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-1, -2) / math.sqrt(c // self.heads)).softmax(dim=-1)
            o = attn @ v
        return self.out(o.transpose(-1, -2).reshape(b, c, h, w))


class Net(nn.Module):
    """A stem conv, then the given attention module(s), then a classifier."""

    def __init__(self, *blocks: nn.Module, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.layer1 = nn.Sequential(*blocks)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


def tutorial_cbam_resnet(c: int = 16, blocks: int = 2) -> Net:
    """A small ResNet made of :class:`TutorialCBAMBlock` s."""
    return Net(*(TutorialCBAMBlock(c) for _ in range(blocks)), c=c)


class TutorialCBAMBottleneck(nn.Module):
    """A torchvision ``Bottleneck`` with tutorial-style CBAM after its last BN."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        c = block.bn3.num_features
        self.ca, self.sa = TutorialChannelAttention(c, 16), TutorialSpatialAttention()

    def forward(self, x):
        b = self.block
        out = b.relu(b.bn1(b.conv1(x)))
        out = b.relu(b.bn2(b.conv2(out)))
        out = b.bn3(b.conv3(out))
        out = self.ca(out) * out
        out = self.sa(out) * out
        identity = x if b.downsample is None else b.downsample(x)
        return b.relu(out + identity)


def tutorial_cbam_resnet50(num_classes: int = 1000) -> nn.Module:
    """ResNet-50 (torchvision) whose 16 blocks use :class:`TutorialCBAMBottleneck`."""
    import torchvision

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for i, block in enumerate(stage):
            stage[i] = TutorialCBAMBottleneck(block)
    return model

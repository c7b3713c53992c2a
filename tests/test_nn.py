"""attnviz.nn reference modules against from-scratch formulas (plain tensor algebra)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_bn
from hypothesis import given, settings
from hypothesis import strategies as st

from attnviz.nn import (
    CBAM,
    ECA,
    ChannelAttention,
    RSoftmax,
    SpatialAttention,
    SplitAttention,
    SqueezeExcite,
    create_attn,
    eca_kernel_size,
    get_attn,
)


def _randomize_params(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    randomize_bn(module, seed)


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode BatchNorm by hand."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (bn.running_var + bn.eps).rsqrt().view(shape)
    return (x - bn.running_mean.view(shape)) * inv * bn.weight.view(shape) + bn.bias.view(shape)


def _mat(conv: torch.nn.Conv2d) -> torch.Tensor:
    return conv.weight[:, :, 0, 0]


def _sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-x))


def test_squeeze_excite_formula():
    m = SqueezeExcite(32, reduction=4).eval()
    _randomize_params(m)
    x = torch.randn(2, 32, 5, 7)
    z = x.mean((2, 3))  # (B, C)
    h = torch.clamp(z @ _mat(m.fc1).T + m.fc1.bias, min=0)  # δ(W1 z)
    s = _sigmoid(h @ _mat(m.fc2).T + m.fc2.bias)  # σ(W2 ·)
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out, x * s[:, :, None, None])
    assert m.fc1.out_channels == 8 and s.std() > 0.05


def test_squeeze_excite_reduction_sizes():
    assert SqueezeExcite(64).fc1.out_channels == 4  # r = 16
    assert SqueezeExcite(8).fc1.out_channels == 1  # never 0
    assert SqueezeExcite(64, bias=False).fc1.bias is None


def test_cbam_channel_shared_mlp_on_avg_and_max():
    m = ChannelAttention(32, reduction=4).eval()
    _randomize_params(m)
    x = torch.randn(2, 32, 6, 6)
    w1, b1, w2, b2 = _mat(m.mlp[0]), m.mlp[0].bias, _mat(m.mlp[2]), m.mlp[2].bias

    def mlp(v):
        return torch.clamp(v @ w1.T + b1, min=0) @ w2.T + b2

    s = _sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out, x * s[:, :, None, None])
    # one MLP shared by both descriptors, not two
    assert sum(isinstance(c, torch.nn.Conv2d) for c in m.modules()) == 2
    # avg-only would be a different gate: the max branch matters
    assert not torch.allclose(s, _sigmoid(2 * mlp(x.mean((2, 3)))), atol=1e-3)


@pytest.mark.parametrize("k", [3, 5, 7, 9])
@pytest.mark.parametrize("norm", [True, False])
def test_cbam_spatial_formula(k, norm):
    m = SpatialAttention(k, norm=norm, bias=not norm).eval()
    _randomize_params(m, seed=k)
    x = torch.randn(2, 8, 11, 9)
    pooled = torch.stack([x.mean(1), x.amax(1)], 1)  # [avg; max] over channels
    w = m.conv.weight[0]  # (2, k, k)
    p = k // 2
    padded = F.pad(pooled, (p, p, p, p))
    y = torch.zeros(2, 11, 9)
    for i in range(k):
        for j in range(k):
            y += (padded[:, :, i : i + 11, j : j + 9] * w[:, i, j].view(1, 2, 1, 1)).sum(1)
    if m.conv.bias is not None:
        y = y + m.conv.bias
    y = y[:, None]
    if norm:
        y = _bn(y, m.bn)
    a = _sigmoid(y)
    with torch.no_grad():
        out = m(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x * a, atol=1e-5, rtol=1e-5)
    assert a.std() > 0.01


@pytest.mark.parametrize("k", [0, 2, 4, 6, 8, -1])
def test_cbam_spatial_even_kernel_raises(k):
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(k)


def test_cbam_spatial_untrained_is_half():
    """Official init: spatial BN weight 0, so an untrained mask is exactly 0.5."""
    m = SpatialAttention().eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), x * 0.5)


def test_cbam_is_channel_then_spatial():
    m = CBAM(16, reduction=4, kernel_size=5).eval()
    _randomize_params(m)
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        expected = m.spatial(m.channel(x))
        assert not torch.allclose(expected, m.channel(m.spatial(x)), atol=1e-4)
        torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize(
    ("channels", "k"), [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)]
)
def test_eca_kernel_size_table(channels, k):
    assert eca_kernel_size(channels) == k
    assert ECA(channels).conv.kernel_size == (k,)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=1 << 16))
def test_eca_kernel_size_formula(c):
    t = int(abs((math.log2(c) + 1) / 2))
    k = eca_kernel_size(c)
    assert k % 2 == 1 and k in (t, t + 1)


def test_eca_formula():
    m = ECA(64).eval()  # k = 3
    _randomize_params(m)
    x = torch.randn(2, 64, 4, 4)
    z = x.mean((2, 3))
    w = m.conv.weight[0, 0]  # (3,)
    zp = F.pad(z, (1, 1))  # zero padding k // 2 at both ends of the channel axis
    y = w[0] * zp[:, :-2] + w[1] * zp[:, 1:-1] + w[2] * zp[:, 2:]
    s = _sigmoid(y)
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out, x * s[:, :, None, None])
    assert sum(p.numel() for p in m.parameters()) == 3


def test_rsoftmax_radix_major_and_sums_to_one():
    b, g, r, c = 2, 3, 4, 5
    x = torch.randn(b, g * r * c)  # fc2 logits: cardinal-major [g][r][c]
    out = RSoftmax(r, g)(x)
    assert out.shape == (b, r * g * c)
    e = torch.exp(x.view(b, g, r, c))
    expected = (e / e.sum(2, keepdim=True)).permute(0, 2, 1, 3)  # → radix-major [r][g][c]
    torch.testing.assert_close(out.view(b, r, g, c), expected)
    torch.testing.assert_close(out.view(b, r, -1).sum(1), torch.ones(b, g * c))


def test_rsoftmax_radix1_is_sigmoid():
    x = torch.randn(2, 12, 1, 1)
    out = RSoftmax(1, 3)(x)
    torch.testing.assert_close(out, _sigmoid(x).reshape(2, -1))
    assert not torch.allclose(out, torch.ones_like(out))


@pytest.mark.parametrize(("radix", "groups"), [(2, 1), (4, 2), (1, 1), (1, 2)])
def test_split_attention_formula(radix, groups):
    m = SplitAttention(16, 16, 3, 1, groups=groups, radix=radix).eval()
    _randomize_params(m)
    x = torch.randn(2, 16, 6, 6)
    u = F.conv2d(x, m.conv.weight, None, 1, 1, groups=groups * radix)
    u = torch.clamp(_bn(u, m.bn0), min=0)  # (B, R·C, H, W), radix-major splits
    us = u.view(2, radix, 16, 6, 6)
    s = us.sum(1).mean((2, 3), keepdim=True)
    h = torch.clamp(_bn(F.conv2d(s, m.fc1.weight, m.fc1.bias, groups=groups), m.bn1), min=0)
    logits = F.conv2d(h, m.fc2.weight, m.fc2.bias, groups=groups).view(2, groups, radix, -1)
    if radix > 1:
        e = torch.exp(logits)
        a = (e / e.sum(2, keepdim=True)).transpose(1, 2).reshape(2, radix, 16)
        torch.testing.assert_close(a.sum(1), torch.ones(2, 16))
    else:
        a = _sigmoid(logits).reshape(2, 1, 16)
    expected = sum(a[:, r, :, None, None] * us[:, r] for r in range(radix))
    with torch.no_grad():
        out = m(x)
    assert out.shape == (2, 16, 6, 6)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert a.std() > 0.01


def test_split_attention_hidden_width():
    # ResNeSt: max(in·radix·0.25, 32) rounded to a multiple of 8
    assert SplitAttention(64, 64).fc1.out_channels == 32
    assert SplitAttention(256, 256).fc1.out_channels == 128
    assert SplitAttention(128, 128, radix=4).fc1.out_channels == 128


def test_create_attn():
    assert create_attn(None, 8) is None and create_attn("none", 8) is None
    assert isinstance(create_attn("se", 32), SqueezeExcite)
    assert isinstance(create_attn("cbam", 32), CBAM)
    assert isinstance(create_attn("cbam_channel", 32), ChannelAttention)
    assert isinstance(create_attn("eca", 32), ECA)
    m = get_attn("se", reduction=4)(32)
    assert isinstance(m, SqueezeExcite) and m.fc1.out_channels == 8
    assert get_attn(None)(32) is None


def test_create_attn_unknown_name():
    with pytest.raises(ValueError) as e:
        create_attn("transformer", 32)
    msg = str(e.value)
    assert "'transformer'" in msg
    for name in ("se", "cbam", "cbam_channel", "eca"):
        assert f"'{name}'" in msg

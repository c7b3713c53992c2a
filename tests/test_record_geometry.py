"""Recorder v3 (issue 21): geometry from the tensors — windowed attention kept apart and
mapped back to pixels (Swin, Twins), and kinds / grids only where the axes are known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import capture
from torch import nn

import attnviz
from attnviz.record import window_pixels, window_to_image

ATOL = RTOL = 1e-5

def _close(a, b, what=""):
    torch.testing.assert_close(a.float(), b.float(), atol=ATOL, rtol=RTOL, msg=what)


# -- (f) windowed attention ---------------------------------------------------------------------


@pytest.mark.parametrize("shift,fused", [(0, True), (2, True), (2, False)])
def test_swin_windows_are_kept_apart_and_map_back_to_pixels(shift, fused):
    from timm.models.swin_transformer import SwinTransformerBlock

    blk = SwinTransformerBlock(16, (8, 8), num_heads=2, window_size=4, shift_size=shift).eval()
    blk.attn.fused_attn = fused
    x = torch.randn(2, 8, 8, 16)
    cap = capture(blk, ["norm1"], ["attn", "attn.proj"])
    with torch.no_grad(), attnviz.record(blk) as rec:
        blk(x)
    cap.remove()
    (r,) = rec.records
    attn = r.value
    assert r.name == "attn" and attn.shape == (2, 2, 4, 16, 16)  # (B, heads, windows, Q, K)
    assert r.meta["window"] == (4, 4) and r.meta["shift"] == (shift, shift)
    assert r.meta["grid"] == (8, 8) and r.meta["window_grid"] == (2, 2)
    # every query / key token maps back to its pixel: the windows hold exactly these inputs
    pix = window_pixels(r.meta)
    img, windows = cap.outputs["norm1"][0], cap.inputs["attn"][0]
    _close(img[:, pix[..., 0], pix[..., 1]].reshape(8, 16, 16), windows, "window tokens")
    with torch.no_grad():
        v = blk.attn.qkv(windows).reshape(8, 16, 3, 2, 8).permute(2, 0, 3, 1, 4)[2]
    v = v.reshape(2, 4, 2, 16, 8).transpose(1, 2)  # (B, heads, windows, K, d)
    o = (attn @ v).permute(0, 2, 3, 1, 4).reshape(8, 16, 16)
    _close(o, cap.inputs["attn.proj"][0], "out = attn @ V per window and head")
    with torch.no_grad(), attnviz.record(blk, heads="mean") as mean:
        blk(x)
    assert mean.attention["attn"].shape == (2, 1, 4, 16, 16)  # windows never averaged
    # the same map at its place in the image: (B, heads, H·W, H·W) over unshifted pixels
    dense = window_to_image(attn, r.meta)
    idx = (pix[..., 0] * 8 + pix[..., 1]).flatten()  # image position of each window token
    v_img = torch.zeros(2, 2, 64, 8)
    v_img[:, :, idx] = v.reshape(2, 2, 64, 8)  # (window, token) order, as idx
    o_img = torch.zeros(2, 64, 16)
    o_img[:, idx] = cap.inputs["attn.proj"][0].reshape(2, 64, 16)
    _close((dense @ v_img).transpose(1, 2).reshape(2, 64, 16), o_img, "image-level attn @ V")
    _close(dense.sum(-1), torch.ones(2, 2, 64), "each query's row sums to 1 over its window")

def test_twins_locally_grouped_windows_map_back_to_pixels():
    from timm.models.twins import LocallyGroupedAttn

    m = LocallyGroupedAttn(16, num_heads=2, ws=3).eval()
    m.fused_attn = False
    x = torch.randn(2, 6 * 5, 16)  # a 6×5 token grid, padded to 6×6: 4 windows of 3×3
    cap = capture(m, [], ["proj"])
    with torch.no_grad(), attnviz.record(m) as rec:
        m(x, (6, 5))
    cap.remove()
    (r,) = rec.records
    assert r.value.shape == (2, 2, 4, 9, 9) and r.meta["grid"] == (6, 6)
    assert r.meta["image"] == (6, 5)
    pix = window_pixels(r.meta)
    j = torch.arange(9)
    w = torch.arange(4)[:, None]
    rows, cols = (w // 2) * 3 + j // 3, (w % 2) * 3 + j % 3  # the padded grid, row-major
    real = cols < 5
    assert torch.equal(pix[..., 0][real], rows[real]) and torch.equal(pix[..., 1][real],
                                                                      cols[real])
    assert (pix[~real] == -1).all()
    with torch.no_grad():  # V of every token of the padded grid (padding = zero features)
        xp = F.pad(x.view(2, 6, 5, 16), (0, 0, 0, 1))
        v = m.qkv(xp).reshape(2, 6, 6, 3, 2, 8)[:, :, :, 2]  # (B, H, W, heads, d)
    vw = v[:, rows, cols]  # (B, windows, K, heads, d)
    o = torch.einsum("bhwqk,bwkhd->bwqhd", r.value, vw).reshape(2, 4, 9, 16)
    o = o[:, real]  # real queries, in (window, token) order
    expected = cap.inputs["proj"][0].reshape(2, 6, 5, 16)[:, pix[real][:, 0], pix[real][:, 1]]
    _close(o, expected, "out = attn @ V per window, at each token's pixel")

# -- (g) kinds and grids that are true ------------------------------------------------------------


class TripletBranch(nn.Module):
    """Triplet attention: a sigmoid gate over two axes of a permuted feature map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(pooled))


class Triplet(nn.Module):
    def __init__(self):
        super().__init__()
        self.cw, self.hc, self.hw = TripletBranch(), TripletBranch(), TripletBranch()

    def forward(self, x):
        a = self.cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3)
        b = self.hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1)
        return (a + b + self.hw(x)) / 3


def test_triplet_attention_branches_are_not_spatial_masks():
    m = Triplet().eval()
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    assert list(rec.spatial) == ["hw"] and rec.spatial["hw"].shape == (2, 5, 7)
    assert sorted(rec.gates) == ["cw", "hc"]
    assert "HCW" in next(r for r in rec if r.name == "cw").meta["axes"]
    xc, xh = x.permute(0, 2, 1, 3), x.permute(0, 3, 2, 1)
    a = (xc * rec.gates["cw"]).permute(0, 2, 1, 3)
    b = (xh * rec.gates["hc"]).permute(0, 3, 2, 1)
    _close((a + b + x * rec.spatial["hw"][:, None]) / 3, out, "out from the three gates")


class ChannelAttentionDANet(nn.Module):
    """DANet's CAM: a C×C softmax map over channels, applied to the flattened features."""

    def forward(self, x):
        b, c, h, w = x.shape
        q = x.view(b, c, -1)
        energy = torch.bmm(q, q.permute(0, 2, 1))
        attn = torch.softmax(energy, -1)
        return torch.bmm(attn, x.view(b, c, -1)).view(b, c, h, w)


def test_channel_by_channel_map_gets_no_pixel_grid():
    m = ChannelAttentionDANet().eval()
    x = torch.randn(2, 64, 8, 8)  # 64 channels = 8·8 pixels: shapes alone cannot tell
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    (r,) = rec.records
    assert r.value.shape == (2, 1, 64, 64)
    assert r.meta["q_grid"] is None and r.meta["k_grid"] is None and "channels" in r.meta["axes"]
    _close((r.value[:, 0] @ x.view(2, 64, 64)).view(2, 64, 8, 8), out, "out = attn @ V")


def test_cross_attention_keys_get_their_own_grid():
    class Cross(nn.Module):
        def forward(self, x, y):  # queries from x (8×8), keys/values from y (4×16)
            q = x.flatten(2).transpose(1, 2)  # (B, 64, C)
            kv = y.flatten(2).transpose(1, 2)
            attn = (q @ kv.transpose(1, 2)).softmax(-1)
            return attn @ kv

    m = Cross()
    x, y = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 16)
    with torch.no_grad(), attnviz.record(m) as rec:
        m(x, y)
    (r,) = rec.records
    assert r.meta["k_grid"] == (4, 16) and r.meta["q_grid"] == (8, 8)


def test_softmax_over_a_projection_has_no_query_grid():
    """CoaT-style factorised attention: softmax(k) over tokens, kᵀ @ v: rows are channels."""

    class Factorised(nn.Module):
        def __init__(self):
            super().__init__()
            self.k, self.v = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            k = self.k(x).flatten(2).transpose(1, 2).softmax(1)  # (B, N, C) over tokens
            v = self.v(x).flatten(2).transpose(1, 2)
            return k.transpose(1, 2) @ v  # (B, C, C)

    m = Factorised().eval()
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    (r,) = rec.records
    assert r.meta["q_grid"] is None and "not query tokens" in r.meta["axes"]
    with torch.no_grad():
        v = m.v(x).flatten(2).transpose(1, 2)
    _close(r.value[:, 0] @ v, out, "out = w @ V")


def test_separable_softmax_weights_are_not_a_spatial_mask():
    """MobileViTv2: softmax over patches, multiplied into the keys: not a sigmoid mask."""

    class Separable(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Conv2d(8, 17, 1)

        def forward(self, x):  # x: (B, C, P, N)
            q, k, v = self.qkv(x).split([1, 8, 8], 1)
            scores = q.softmax(-1)
            ctx = (k * scores).sum(-1, keepdim=True)
            return torch.relu(v) * ctx

    m = Separable().eval()
    with torch.no_grad(), attnviz.record(m) as rec:
        m(torch.randn(1, 8, 4, 9))
    assert rec.spatial == {} and list(rec.gates) == [""]


@pytest.mark.parametrize("layout", ["windows_in_batch", "heads_first", "heads_in_batch"])
def test_windows_of_an_unknown_partition_are_kept_apart(layout):
    """No window size to map them to pixels (Hiera's mask units, MaxViT's grid): the windows
    still stay apart from the heads, and carry no pixel grid."""

    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = 2
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):  # (B, 4 groups · 6 tokens, C)
            b = x.shape[0]
            qkv = self.qkv(x).reshape(b, 4, 6, 3, 2, 4)
            if layout == "windows_in_batch":
                q, k, v = qkv.reshape(b * 4, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)  # (B·4, h, 6, d)
            elif layout == "heads_in_batch":  # HaloNet: (B·heads, windows, 6, d)
                q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).reshape(3, b * 2, 4, 6, 4)
            else:
                q, k, v = qkv.permute(3, 0, 4, 1, 2, 5)  # (B, heads, 4, 6, d)
            attn = (q @ k.transpose(-1, -2)).softmax(-1)
            return attn @ v

    m = Grouped().eval()
    x = torch.randn(3, 24, 8)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    (r,) = rec.records
    assert r.value.shape == (3, 2, 4, 6, 6) and r.meta["windows"] == 4
    assert r.meta["q_grid"] is None and "window" not in r.meta
    with torch.no_grad():
        v = m.qkv(x).reshape(3, 4, 6, 3, 2, 4)[:, :, :, 2].permute(0, 3, 1, 2, 4)  # (B,h,W,6,d)
    o = r.value @ v
    expected = {"windows_in_batch": lambda: out.reshape(3, 4, 2, 6, 4).transpose(1, 2),
                "heads_in_batch": lambda: out.reshape(3, 2, 4, 6, 4)}.get(layout, lambda: out)()
    _close(o, expected, "out = attn @ V per head and window")
    with torch.no_grad(), attnviz.record(m, heads="mean") as mean:
        m(x)
    assert mean.attention[""].shape == (3, 1, 4, 6, 6)

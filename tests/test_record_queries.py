"""record(model, queries=...): only the chosen query rows, equal to those rows of the full map;
fused SDPA computes only those rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnviz
from attnviz.examples import HandMHSA, Net
from attnviz.record import ops
from attnviz.record.queries import QuerySpec


class CausalSDPA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)

    def forward(self, x):  # (B, T, 16)
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, 8).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


def _both(model, x, queries):
    with torch.no_grad(), attnviz.record(model) as full:
        model(x)
    with torch.no_grad(), attnviz.record(model, queries=queries) as some:
        model(x)
    return full.records, some.records


def test_cls_rows_of_a_vit_are_the_full_maps_rows(monkeypatch) -> None:
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64).eval()
    x = torch.rand(2, 3, 64, 64)
    full, some = _both(vit, x, "cls")
    assert len(full) == len(some) == 2
    for f, s in zip(full, some, strict=True):
        assert s.value.shape == (2, f.value.shape[1], 1, f.value.shape[3])
        assert s.meta["queries"] == [0]
        torch.testing.assert_close(s.value, f.value[:, :, :1], rtol=1e-5, atol=1e-6)
    # fused attention computed only the kept rows: the weights' query axis is 1
    seen = []
    real = ops.sdpa_weights
    monkeypatch.setattr(ops, "sdpa_weights", lambda q, k, *a: seen.append(q.shape[-2]) or
                        real(q, k, *a))
    with torch.no_grad(), attnviz.record(vit, queries="cls"):
        vit(x)
    assert seen == [1, 1]


def test_pixel_queries_on_a_grid_and_causal_rows() -> None:
    torch.manual_seed(0)
    net = Net(HandMHSA(16), c=16).eval()
    x = torch.rand(1, 3, 8, 8)
    full, some = _both(net, x, [(2, 3), (7, 7)])
    (f,), (s,) = full, some
    assert f.meta["q_grid"] == (8, 8) and s.meta["queries"] == [2 * 8 + 3, 63]
    torch.testing.assert_close(s.value, f.value[:, :, [19, 63]])

    causal = CausalSDPA().eval()
    t = torch.rand(2, 6, 16)
    full, some = _both(causal, t, [0, 3, -1])
    (f,), (s,) = full, some
    assert s.meta["queries"] == [0, 3, 5]
    torch.testing.assert_close(s.value, f.value[:, :, [0, 3, 5]], rtol=1e-5, atol=1e-6)
    assert s.value[0, 0, 1, 4:].abs().max() == 0  # row 3 attends to keys 0..3 only


def test_bad_queries_are_one_error() -> None:
    with pytest.raises(attnviz.ParameterError, match="queries must be"):
        attnviz.record(nn.Linear(2, 2), queries="everything")
    assert QuerySpec.parse([(1, 2)]).rows(10, None) is None  # pixels need a known grid

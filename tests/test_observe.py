"""Attention in any model: weights found by watching the computation are exactly the operands
the network multiplied by. Each test rebuilds the module's output (x·s, x·A, x·a_w·a_h,
Σ a_r U_r, attn @ V) from the record and the module's own input, and a wrong reading of the
same numbers (transposed map, other radix layout) must not fit."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import SelfAttentionBlock, capture, hook_count, randomize_bn
from torch import nn

import attnviz
from attnviz.examples import (
    Conv1dECA,
    DetectorGate,
    HandCoordAttention,
    HandMHSA,
    HandNonLocal,
    HandSplitAttention,
    InlineChannelGate,
    Net,
    SequentialSE,
    TutorialChannelAttention,
    tutorial_cbam_resnet,
)
from attnviz.record import sdpa_weights
from attnviz.record.sites import stage_block

ATOL = RTOL = 1e-5


def _close(a, b, what=""):
    torch.testing.assert_close(a.float(), b.float(), atol=ATOL, rtol=RTOL, msg=what)


def _run(model, x, names=(), pre=(), **kw):
    randomize_bn(model, 0)
    model.eval()
    cap = capture(model, names, pre)
    try:
        with torch.no_grad(), attnviz.record(model, **kw) as rec:
            out = model(x)
    finally:
        cap.remove()
    return rec, cap, out


def _only(rec, prefix):
    found = [r for r in rec.records if r.name == prefix or r.name.startswith(prefix + ".")]
    assert found, f"nothing recorded under {prefix!r}: {[r.name for r in rec.records]}"
    return found


# -- hand-written styles ------------------------------------------------------------------------


def test_tutorial_cbam_block_is_recorded_exactly():
    model = tutorial_cbam_resnet(16, 2)
    x = torch.randn(2, 3, 12, 12)
    names = ["layer1.0", "layer1.0.ca", "layer1.0.sa"]
    rec, cap, _ = _run(model, x, names)
    assert list(rec.channel) == ["layer1.0.ca", "layer1.1.ca"]
    assert list(rec.spatial) == ["layer1.0.sa", "layer1.1.sa"]
    s, a = rec.channel["layer1.0.ca"], rec.spatial["layer1.0.sa"]
    assert s.shape == (2, 16) and a.shape == (2, 12, 12)
    f, g = cap.inputs["layer1.0.ca"][0], cap.inputs["layer1.0.sa"][0]
    _close(g, f * s[:, :, None, None], "sa input = F·s(c)")
    block_in, block_out = cap.inputs["layer1.0"][0], cap.outputs["layer1.0"][0]
    _close(block_out, torch.relu(g * a[:, None] + block_in), "out = relu(F·s·A + x)")
    wrong = a.transpose(-1, -2)
    assert not torch.allclose(block_out, torch.relu(g * wrong[:, None] + block_in), atol=1e-3)
    r = rec.records[0]
    assert r.source == "observed" and "TutorialChannelAttention" in r.module_type
    assert (r.stage, r.block, r.call, r.firing) == (1, 0, 0, 0)


@pytest.mark.parametrize(
    "make",
    [lambda: InlineChannelGate(16), lambda: SequentialSE(16), lambda: Conv1dECA(),
     lambda: DetectorGate(16)],
    ids=["inline-expand_as", "sequential-se", "conv1d-eca", "detector-hardsigmoid"],
)
def test_channel_gate_styles(make):
    model = Net(make())
    rec, cap, _ = _run(model, torch.randn(3, 3, 10, 10), ["layer1.0"])
    (r,) = _only(rec, "layer1.0")
    assert r.kind == "channel" and r.value.shape == (3, 16)
    inp, out = cap.inputs["layer1.0"][0], cap.outputs["layer1.0"][0]
    _close(out, inp * r.value[:, :, None, None], "out = in·s(c)")
    assert not torch.allclose(out, inp * r.value.flip(1)[:, :, None, None], atol=1e-3)


def _split_u(m: HandSplitAttention, x):
    u = torch.relu(m.bn(m.conv(x)))
    return torch.stack(torch.split(u, u.shape[1] // m.radix, dim=1), 1)


@pytest.mark.parametrize("radix,card", [(2, 1), (2, 2), (4, 2)])
def test_hand_split_attention(radix, card):
    model = Net(HandSplitAttention(16, radix, card))
    rec, cap, _ = _run(model, torch.randn(2, 3, 8, 8), ["layer1.0"])
    a = rec.radix["layer1.0"]
    assert a.shape == (2, radix, 16) and not rec.problems
    _close(a.sum(1), torch.ones(2, 16), "radix weights sum to 1")
    m, inp, out = model.layer1[0], cap.inputs["layer1.0"][0], cap.outputs["layer1.0"][0]
    with torch.no_grad():
        u = _split_u(m, inp)
    _close(out, (u * a[..., None, None]).sum(1), "out = Σ_r a_r·U_r")
    if card > 1:  # a cardinal-major reading of the same numbers must not fit
        wrong = a.reshape(2, card, radix, 16 // card).transpose(1, 2).reshape(2, radix, 16)
        assert not torch.allclose(out, (u * wrong[..., None, None]).sum(1), atol=1e-3)


def test_wrong_axis_rsoftmax_is_reported():
    model = Net(HandSplitAttention(16, 2, 2, wrong_axis=True))
    rec, cap, _ = _run(model, torch.randn(2, 3, 8, 8), ["layer1.0"])
    a = rec.radix["layer1.0"]
    assert not torch.allclose(a.sum(1), torch.ones(2, 16), atol=1e-2)
    assert len(rec.problems) == 1 and "do not sum to 1" in rec.problems[0]
    with torch.no_grad():
        u = _split_u(model.layer1[0], cap.inputs["layer1.0"][0])
    _close(cap.outputs["layer1.0"][0], (u * a[..., None, None]).sum(1), "still what it used")


def test_hand_coordinate_attention():
    model = Net(HandCoordAttention(16))
    rec, cap, _ = _run(model, torch.randn(2, 3, 9, 9), ["layer1.0"])
    gates = rec.gates
    a_w, a_h = gates["layer1.0"], gates["layer1.0#1"]
    assert a_w.shape == (2, 16, 1, 9) and a_h.shape == (2, 16, 9, 1)
    inp, out = cap.inputs["layer1.0"][0], cap.outputs["layer1.0"][0]
    _close(out, inp * a_w * a_h, "out = x·a_w·a_h")
    swapped = a_w.transpose(-1, -2) * a_h.transpose(-1, -2)
    assert not torch.allclose(out, inp * swapped, atol=1e-3)


def test_hand_non_local():
    model = Net(HandNonLocal(16))
    rec, cap, _ = _run(model, torch.randn(2, 3, 6, 6), ["layer1.0"], pre=["layer1.0.w"])
    attn = rec.attention["layer1.0"]
    assert attn.shape == (2, 1, 36, 36)
    (r,) = _only(rec, "layer1.0")
    assert r.meta["q_grid"] == r.meta["k_grid"] == (6, 6)
    _close(attn.sum(-1), torch.ones(2, 1, 36), "rows sum to 1")
    m, inp = model.layer1[0], cap.inputs["layer1.0"][0]
    with torch.no_grad():
        g = m.g(inp).flatten(2).transpose(1, 2)
    y = cap.inputs["layer1.0.w"][0].flatten(2).transpose(1, 2)
    _close(y, attn[:, 0] @ g, "y = attn @ g")
    assert not torch.allclose(y, attn[:, 0].transpose(1, 2) @ g, atol=1e-3)


@pytest.mark.parametrize("fused", [False, True], ids=["matmul", "sdpa"])
def test_hand_mhsa(fused):
    model = Net(HandMHSA(16, heads=4, fused=fused))
    rec, cap, _ = _run(model, torch.randn(2, 3, 5, 5), ["layer1.0"], pre=["layer1.0.out"])
    attn = rec.attention["layer1.0"]
    assert attn.shape == (2, 4, 25, 25)
    m, inp = model.layer1[0], cap.inputs["layer1.0"][0]
    with torch.no_grad():
        v = m.qkv(inp).reshape(2, 3, 4, 4, 25).unbind(1)[2].transpose(-1, -2)
    o = cap.inputs["layer1.0.out"][0]
    _close(o, (attn @ v).transpose(-1, -2).reshape(2, 16, 5, 5), "o = attn @ V")
    bad = (attn.transpose(-1, -2) @ v).transpose(-1, -2).reshape(2, 16, 5, 5)
    assert not torch.allclose(o, bad, atol=1e-3)


def test_silu_written_by_hand_is_not_attention():
    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    model = Net(Swish(), SequentialSE(16))
    rec, _, _ = _run(model, torch.randn(1, 3, 6, 6))
    assert [r.name for r in rec.records] == ["layer1.1.fc"]


def test_sdpa_weights_with_mask_and_causal():
    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8)
    v = torch.randn(2, 3, 7, 4)
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True
    for kw in (dict(attn_mask=mask), dict(attn_mask=torch.randn(5, 7)), dict(scale=0.3)):
        w = sdpa_weights(q, k, **kw)
        _close(w @ v, F.scaled_dot_product_attention(q, k, v, **kw), str(kw))
    q7 = torch.randn(2, 3, 7, 8)
    w = sdpa_weights(q7, k, is_causal=True)
    _close(w @ v, F.scaled_dot_product_attention(q7, k, v, is_causal=True), "causal")


# -- recorder behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hooked", "scoped"])
def test_second_recording_is_cheap_and_agrees(kind):
    """After the first (fully watched) pass, a weight that *is* a module's output is taken by a
    plain forward hook, and other weights are watched only inside the module that makes them."""
    from attnviz.record.sites import model_info

    model = tutorial_cbam_resnet(8, 2) if kind == "hooked" else Net(HandMHSA(16), HandMHSA(16))
    randomize_bn(model, 3)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), attnviz.record(model) as first:
        model(x)
    info = model_info(model)
    with torch.no_grad(), attnviz.record(model) as second:
        model(x)
        if kind == "hooked":
            assert second._observer is None and info.scopes == set()
            assert set(info.hooked) == {f"layer1.{b}.{m}.sigmoid" for b in (0, 1)
                                        for m in ("ca", "sa")}
            assert hook_count(model) == 4
        else:
            assert info.scopes == {"layer1.0", "layer1.1"} and info.hooked == {}
    assert [(r.key, r.kind, r.source) for r in first] == [(r.key, r.kind, r.source) for r in second]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.value, b.value)
    assert hook_count(model) == 0


def test_module_called_twice_per_pass_and_two_passes():
    se = SequentialSE(16)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.se = se

        def forward(self, x):
            return self.se(self.se(x))

    model = Net(Twice())
    randomize_bn(model, 0)
    model.eval()
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.randn(2, 3, 6, 6))
        model(torch.randn(3, 3, 6, 6))
    assert set(rec.channel) == {"layer1.0.se.fc", "layer1.0.se.fc#1"}
    assert rec.channel["layer1.0.se.fc"].shape == (5, 16)
    assert [(r.call, r.firing) for r in rec] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_passes_at_two_sizes():
    model = tutorial_cbam_resnet(8, 1)
    model.eval()
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.randn(1, 3, 8, 8))
        model(torch.randn(2, 3, 12, 12))
    assert "spatial=1" in repr(rec)
    with pytest.raises(attnviz.ParameterError, match="different sizes"):
        _ = rec.spatial
    first, second = rec.passes()
    assert first.spatial["layer1.0.sa"].shape == (1, 8, 8)
    assert second.spatial["layer1.0.sa"].shape == (2, 12, 12)
    assert rec.channel["layer1.0.ca"].shape == (3, 8)  # same shape: concatenated


def test_gradient_checkpointing_does_not_double_records():
    from torch.utils.checkpoint import checkpoint

    block = tutorial_cbam_resnet(8, 1).layer1[0]

    class Ckpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, x):
            return checkpoint(self.block, x, use_reentrant=False).sum()

    model = Ckpt().train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    with attnviz.record(model) as rec:
        model(x).backward()
    assert len(rec) == 2 and rec.channel["block.ca"].shape == (2, 8)


def test_deepcopy_inside_recording_does_not_write_to_it():
    model = tutorial_cbam_resnet(8, 1).eval()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(x)
        twin = copy.deepcopy(model)
        twin(x)
    assert len(rec) == 2
    twin(x)
    assert len(rec) == 2 and hook_count(twin) == 0


def test_reentering_a_recorder_is_refused():
    model = tutorial_cbam_resnet(8, 1).eval()
    rec = attnviz.record(model)
    with torch.no_grad(), rec:
        model(torch.randn(1, 3, 6, 6))
        with pytest.raises(attnviz.RecorderBusyError):
            with rec:
                pass
    with pytest.raises(attnviz.RecorderBusyError, match="already entered"):
        with rec:
            pass
    assert hook_count(model) == 0


def test_compiled_model_is_refused_clearly():
    model = tutorial_cbam_resnet(8, 1).eval()
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(attnviz.ParameterError, match="_orig_mod"):
        attnviz.record(compiled)


def test_no_forward_pass_warns():
    model = tutorial_cbam_resnet(8, 1).eval()
    with pytest.warns(UserWarning, match="no forward pass"):
        with attnviz.record(model):
            pass


@pytest.mark.parametrize(
    "name,expected",
    [("layer3.0.attn.spatial", (3, 0)), ("0.layer3.1.se", (3, 1)), ("model.0.layer2.1.ca", (2, 1)),
     ("stages.2.blocks.0.attn", (2, 0)), ("blocks.3.1.se", (3, 1)),
     ("trunk_output.block1.block1-0.f.se", (1, 0)), ("se", (None, None))],
)
def test_stage_block(name, expected):
    assert stage_block(name) == expected


def test_find_attention_lists_sites_and_candidates():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.softmax = nn.Softmax(dim=1)

        def forward(self, x):
            return x + self.softmax(x)  # made, never multiplied: not recorded

    model = Net(SequentialSE(16), Unused(), HandNonLocal(16)).eval()
    sites = attnviz.find_attention(model, torch.randn(1, 3, 6, 6))
    assert [(s.name, s.kind, s.source) for s in sites] == [
        ("layer1.0.fc", "channel", "observed"), ("layer1.2", "attention", "observed")]
    assert sites[1].shape == (1, 1, 36, 36)
    assert sites.candidates == ["layer1.1"]
    assert "layer1.1" in sites.table()
    bare = Net(nn.Identity(), TutorialChannelAttention(16))  # σ made, never multiplied
    with pytest.raises(attnviz.NoAttentionError, match="layer1.1"):
        attnviz.find_attention(bare, torch.randn(1, 3, 6, 6))


def test_layer_filter_matching_nothing_observed():
    model = tutorial_cbam_resnet(8, 1).eval()
    with pytest.raises(attnviz.NoAttentionError, match="layer9"):
        with torch.no_grad(), attnviz.record(model, layers="layer9*"):
            model(torch.randn(1, 3, 6, 6))
    with pytest.raises(attnviz.NoAttentionError, match="layer9"):  # now known: at once
        attnviz.record(model, layers="layer9*")
    with torch.no_grad(), attnviz.record(model, layers="*.sa") as rec:
        model(torch.randn(1, 3, 6, 6))
    assert list(rec.spatial) == ["layer1.0.sa"] and rec.channel == {}


def test_memory_budget_and_head_mean():
    model = Net(HandMHSA(16, heads=4)).eval()
    x = torch.randn(2, 3, 8, 8)  # 2·4·64·64 floats = 128 KiB
    with pytest.raises(attnviz.MemoryBudgetError, match="heads='mean'"):  # nothing fitted
        with torch.no_grad(), pytest.warns(UserWarning, match="max_bytes"):
            with attnviz.record(model, max_bytes=100_000):
                model(x)
    assert hook_count(model) == 0
    with torch.no_grad(), attnviz.record(model, max_bytes=100_000, heads="mean") as rec:
        model(x)
    with torch.no_grad(), attnviz.record(model) as full:
        model(x)
    _close(rec.attention["layer1.0"], full.attention["layer1.0"].mean(1, keepdim=True))
    assert math.isclose(float(rec.attention["layer1.0"].sum(-1).mean()), 1.0, rel_tol=1e-5)


# -- timm and torchvision modules that have no named adapter ----------------------------------


def _standalone(module: nn.Module, c: int = 16) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), module)


def _gate_product(rec, prefix):
    prod = None
    for r in _only(rec, prefix):
        v = r.value
        v = v[:, :, None, None] if r.kind == "channel" else v[:, None] if r.kind == "spatial" else v
        prod = v if prod is None else prod * v
    return prod


@pytest.mark.parametrize("cls", ["CoordAttn", "EfficientLocalAttn", "SimpleCoordAttn",
                                 "StripAttn"])
def test_timm_coordinate_family(cls):
    from timm.layers import coord_attn

    model = _standalone(getattr(coord_attn, cls)(16))
    rec, cap, _ = _run(model, torch.randn(2, 3, 7, 9), ["2"])
    inp, out = cap.inputs["2"][0], cap.outputs["2"][0]
    expected = inp * _gate_product(rec, "2")
    if getattr(model[2], "has_skip", False):
        expected = expected + inp
    _close(out, expected, f"{cls}: out = x·Π gates")


@pytest.mark.parametrize("extent", [0, 2])
def test_timm_gather_excite(extent):
    from timm.layers.gather_excite import GatherExcite

    model = _standalone(GatherExcite(16, feat_size=(8, 8), extent=extent, use_mlp=False))
    rec, cap, _ = _run(model, torch.randn(2, 3, 8, 8), ["2"])
    (r,) = _only(rec, "2")
    assert r.kind == ("channel" if extent == 0 else "gate")
    _close(cap.outputs["2"][0], cap.inputs["2"][0] * _gate_product(rec, "2"), "out = x·gate")


def test_timm_global_context_scale_and_add():
    from timm.layers import GlobalContext

    model = _standalone(GlobalContext(16, fuse_add=True, fuse_scale=True))
    rec, cap, _ = _run(model, torch.randn(2, 3, 6, 5), ["2"], pre=["2.mlp_scale"])
    ctx, s = rec.context["2"], rec.channel["2"]
    assert ctx.shape == (2, 6, 5) and s.shape == (2, 16)
    _close(ctx.flatten(1).sum(1), torch.ones(2), "context weights sum to 1")
    inp, gc = cap.inputs["2"][0], model[2]
    pooled = torch.einsum("bchw,bhw->bc", inp, ctx)[..., None, None]
    _close(cap.inputs["2.mlp_scale"][0], pooled, "context = Σ softmax·x")
    with torch.no_grad():
        expected = inp * s[:, :, None, None] + gc.mlp_add(pooled)
    _close(cap.outputs["2"][0], expected, "out = x·σ(mlp_scale(ctx)) + mlp_add(ctx)")
    bad = torch.einsum("bchw,bhw->bc", inp, ctx.flip(-1))[..., None, None]
    assert not torch.allclose(cap.inputs["2.mlp_scale"][0], bad, atol=1e-3)


def test_timm_non_local():
    from timm.layers.non_local_attn import NonLocalAttn

    model = _standalone(NonLocalAttn(16))
    rec, cap, _ = _run(model, torch.randn(2, 3, 5, 6), ["2"], pre=["2.z"])
    attn = rec.attention["2"]
    assert attn.shape == (2, 1, 30, 30)
    with torch.no_grad():
        g = model[2].g(cap.inputs["2"][0]).flatten(2).transpose(1, 2)
    y = cap.inputs["2.z"][0].flatten(2).transpose(1, 2)
    _close(y, attn[:, 0] @ g, "y = attn @ g")


def _first(model, cls_name):
    return next(n for n, m in model.named_modules() if type(m).__name__ == cls_name)


def test_timm_botnet_bottleneck_attention():
    import timm

    model = timm.create_model("botnet26t_256", pretrained=False, num_classes=5)
    name = _first(model, "BottleneckAttn")
    rec, cap, _ = _run(model, torch.randn(1, 3, 256, 256), [name], pre=[f"{name}.pool"])
    m = model.get_submodule(name)
    attn = rec.attention[name]
    b, heads, n, _ = attn.shape
    assert heads == m.num_heads and rec.records[0].meta["q_grid"] is not None
    with torch.no_grad():
        qkv = m.qkv(cap.inputs[name][0])
    v = qkv[:, -m.dim_out_v:].reshape(b, heads, m.dim_head_v, n).transpose(-1, -2)
    h, w = cap.inputs[name][0].shape[-2:]
    expected = (attn @ v).transpose(-1, -2).reshape(b, m.dim_out_v, h, w)
    _close(cap.inputs[f"{name}.pool"][0], expected, "BoTNet: out = attn @ V")


def test_timm_vit_fused_attention_is_recomputed_exactly():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5,
                              img_size=64)
    name = "blocks.0.attn"
    rec, cap, _ = _run(model, torch.randn(2, 3, 64, 64), [name], pre=[f"{name}.proj"])
    m = model.get_submodule(name)
    attn = rec.attention[name]
    assert len(rec.attention) == 12 and attn.shape == (2, m.num_heads, 17, 17)
    x = cap.inputs[name][0]
    b, n, c = x.shape
    with torch.no_grad():
        v = m.qkv(x).reshape(b, n, 3, m.num_heads, c // m.num_heads).permute(2, 0, 3, 1, 4)[2]
    o = cap.inputs[f"{name}.proj"][0]
    _close(o, (attn @ v).transpose(1, 2).reshape(b, n, c), "ViT: out = attn @ V")


def test_timm_hgnet_ese():
    import timm

    model = timm.create_model("hgnet_tiny", pretrained=False, num_classes=5)
    name = _first(model, "EseModule")
    rec, cap, _ = _run(model, torch.randn(1, 3, 64, 64), [name])
    (r,) = _only(rec, name)
    assert r.kind == "channel"
    _close(cap.outputs[name][0], cap.inputs[name][0] * r.value[:, :, None, None], "out = x·s(c)")


def _count(model, *cls_names):
    return sum(type(m).__name__ in cls_names for m in model.modules())


COVERAGE = {  # model: (input size, module classes holding attention, expected kinds)
    "halonet26t": (256, ("HaloAttn",), {"attention"}),
    "sebotnet33ts_256": (256, ("BottleneckAttn", "SEModule"), {"attention", "channel"}),
    "eca_botnext26ts_256": (256, ("BottleneckAttn", "EcaModule"), {"attention", "channel"}),
    "maxvit_nano_rw_256": (256, ("AttentionCl", "SEModule"), {"attention", "channel"}),
    "coatnet_nano_rw_224": (224, ("Attention2d", "SEModule"), {"attention", "channel"}),
    "gcvit_xxtiny": (224, ("WindowAttentionGlobal", "SEModule"), {"attention", "channel"}),
    "mobilevit_xxs": (256, ("Attention",), {"attention"}),
}


@pytest.mark.parametrize("name", list(COVERAGE))
def test_timm_attention_models_have_no_silent_misses(name):
    import timm

    size, classes, kinds = COVERAGE[name]
    model = timm.create_model(name, pretrained=False, num_classes=5)
    rec, _, _ = _run(model, torch.randn(1, 3, size, size))
    assert {r.kind for r in rec} == kinds
    assert len({r.key for r in rec}) == _count(model, *classes)
    for a in rec.attention.values():
        _close(a.sum(-1), torch.ones_like(a[..., 0]), f"{name}: rows sum to 1")


def test_torchvision_maxvit_and_ghostnetv2_dfc():
    import timm
    import torchvision

    model = torchvision.models.maxvit_t(weights=None, num_classes=5)
    rec, _, _ = _run(model, torch.randn(1, 3, 224, 224))
    assert len(rec.attention) == _count(model, "RelativePositionalMultiHeadAttention") == 22
    assert len(rec.channel) == _count(model, "SqueezeExcitation")
    ghost = timm.create_model("ghostnetv2_100", pretrained=False, num_classes=5)
    rec, _, _ = _run(ghost, torch.randn(1, 3, 64, 64))
    dfc = [m for m in ghost.modules() if type(m).__name__ == "GhostModuleV2"]
    assert len(rec.gates) == len(dfc) > 0


def test_clear_inside_the_block_is_not_mistaken_for_nothing_recorded():
    model = tutorial_cbam_resnet(8, 1).eval()
    with torch.no_grad(), attnviz.record(model) as rec:
        for _ in range(2):
            model(torch.randn(1, 3, 6, 6))
            assert len(rec.latest()) == 2
            rec.clear()
    assert len(rec) == 0


@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_multihead_attention(batch_first):
    """nn.MultiheadAttention called with need_weights=False (torchvision's ViT): the weights are
    recomputed from the same call; attn @ V through the module's own projections is its output."""
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()

    model = SelfAttentionBlock(mha)
    x = torch.randn(2, 7, 16) if batch_first else torch.randn(7, 2, 16)
    with torch.no_grad(), attnviz.record(model) as rec:
        out = model(x)
    attn = rec.attention["attn"]
    assert attn.shape == (2, 4, 7, 7)
    xb = x if batch_first else x.transpose(0, 1)  # (B, L, E)
    v = F.linear(xb, mha.in_proj_weight[32:], mha.in_proj_bias[32:]).reshape(2, 7, 4, 4)
    o = (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(2, 7, 16)
    expected = mha.out_proj(o)
    _close(out if batch_first else out.transpose(0, 1), expected, "out = proj(attn @ V)")

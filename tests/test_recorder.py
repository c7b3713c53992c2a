"""The recorder's weights are exactly the weights the network multiplied by.

For every adapter in ``attnviz.record.ADAPTERS`` a real model holding that module type is built
(random init, randomised BatchNorm statistics, eval mode) and every attention module's output is
rebuilt from the recorded weights and the module's own captured input (see ``helpers.py``).
"""

from __future__ import annotations

import functools

import pytest
import timm
import torch
import torchvision
from helpers import capture, hook_count, randomize_bn, run_and_verify
from timm.layers.squeeze_excite import SqueezeExciteCl
from torch import nn

import attnviz
from attnviz.models import create_model
from attnviz.record import ADAPTERS, RecordSet

# -- one real model per adapter ---------------------------------------------------------------


def _timm(name: str, **kw):
    return functools.partial(timm.create_model, name, pretrained=False, num_classes=10, **kw)


def _timm_attn(attn: str):
    return _timm("resnet18", block_args=dict(attn_layer=attn))


def _ours(name: str, **kw):
    return functools.partial(create_model, name, num_classes=10, **kw)


def _tv(name: str):
    return functools.partial(getattr(torchvision.models, name), weights=None, num_classes=10)


class _Standalone(nn.Module):
    """A conv feeding one attention module (so its input is not just the raw image)."""

    def __init__(self, attn: nn.Module, channels: int, channels_last: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, 1, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.attn = attn
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        if self.channels_last:
            return self.attn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.attn(x)


L_SE, L_CH, L_SP = (
    "attnviz SqueezeExcite",
    "attnviz ChannelAttention (CBAM)",
    "attnviz SpatialAttention (CBAM)",
)
L_ECA, L_SPLIT = "attnviz ECA", "attnviz SplitAttention"
TV_SE = "torchvision SqueezeExcitation"

# id: (factory, image size, batch, adapter labels the model must exercise)
CASES: dict[str, tuple] = {
    "attnviz-se_resnet18": (_ours("se_resnet18"), 64, 2, {L_SE}),
    "attnviz-cbam_resnet18": (_ours("cbam_resnet18"), 64, 2, {L_CH, L_SP}),
    "attnviz-demo_cbam": (_ours("demo_cbam_resnet"), 32, 2, {L_CH, L_SP}),
    "attnviz-eca_resnet18": (_ours("eca_resnet18"), 64, 2, {L_ECA}),
    "attnviz-eca_resnet50": (_ours("eca_resnet50"), 32, 1, {L_ECA}),
    "attnviz-resnest14": (_ours("resnest14"), 64, 2, {L_SPLIT}),
    "attnviz-resnest14-radix1": (_ours("resnest14", radix=1), 64, 2, {L_SPLIT}),
    "attnviz-resnest14-r4c2": (_ours("resnest14", radix=4, cardinality=2), 32, 2, {L_SPLIT}),
    "timm-seresnet18": (_timm("seresnet18"), 64, 2, {"timm SEModule"}),
    "timm-resnest14d": (_timm("resnest14d"), 64, 2, {"timm SplitAttn (ResNeSt)"}),
    "timm-resnest50d_1s4x24d": (_timm("resnest50d_1s4x24d"), 32, 1, {"timm SplitAttn (ResNeSt)"}),
    "timm-resnest50d_4s2x40d": (_timm("resnest50d_4s2x40d"), 32, 1, {"timm SplitAttn (ResNeSt)"}),
    "timm-ecaresnet26t": (_timm("ecaresnet26t"), 32, 2, {"timm EcaModule"}),
    "timm-resnet18-ceca": (_timm_attn("ceca"), 64, 2, {"timm CecaModule"}),
    "timm-skresnet18": (_timm("skresnet18"), 64, 2, {"timm SelectiveKernelAttn"}),
    "timm-legacy_seresnet18": (_timm("legacy_seresnet18"), 64, 2, {"timm legacy senet SEModule"}),
    "timm-efficientnet_b0": (_timm("efficientnet_b0"), 64, 2, {"timm efficientnet SqueezeExcite"}),
    "timm-ese_vovnet19b_dw": (_timm("ese_vovnet19b_dw"), 64, 2, {"timm EffectiveSEModule"}),
    "timm-SqueezeExciteCl": (
        lambda: _Standalone(SqueezeExciteCl(32), 32, channels_last=True),
        8,
        2,
        {"timm SqueezeExciteCl"},
    ),
    "timm-resnet18-cbam": (
        _timm_attn("cbam"),
        64,
        2,
        {"timm ChannelAttn (CBAM)", "timm SpatialAttn (CBAM)"},
    ),
    "timm-resnet18-lcbam": (
        _timm_attn("lcbam"), 64, 2, {"timm LightChannelAttn", "timm LightSpatialAttn"}
    ),
    "tv-efficientnet_b0": (_tv("efficientnet_b0"), 64, 2, {TV_SE}),
    "tv-mobilenet_v3_small": (_tv("mobilenet_v3_small"), 64, 2, {TV_SE}),
    "tv-regnet_y_400mf": (_tv("regnet_y_400mf"), 64, 2, {TV_SE}),
}

EXERCISED: dict[str, set[str]] = {}


def _build(case: str, seed: int = 0) -> nn.Module:
    factory = CASES[case][0]
    model = factory()
    assert randomize_bn(model, seed) > 0
    return model.eval()


def _image(case: str) -> torch.Tensor:
    _, size, batch, _ = CASES[case]
    return torch.randn(batch, 3, size, size)


def test_cases_cover_every_adapter():
    declared = set().union(*(c[3] for c in CASES.values()))
    assert declared == set(attnviz.supported_types()) == {a.label for a in ADAPTERS}


@pytest.mark.parametrize("case", list(CASES))
def test_exact_reconstruction(case):
    model = _build(case)
    verified, rec = run_and_verify(model, _image(case))
    assert verified == CASES[case][3]
    assert len(rec.records) == len(rec.sites) > 0
    EXERCISED[case] = verified


def test_lcbam_spatial_half_is_recorded():
    model = _build("timm-resnet18-lcbam")
    with torch.no_grad(), attnviz.record(model) as rec:
        model(_image("timm-resnet18-lcbam"))
    assert len(rec.channel) == 8  # the channel half is there
    assert len(rec.spatial) == 8


def test_radix1_is_a_sigmoid_channel_gate():
    model = _build("timm-resnest50d_1s4x24d")
    with torch.no_grad(), attnviz.record(model) as rec:
        model(_image("timm-resnest50d_1s4x24d"))
    assert rec.radix == {} and len(rec.channel) == 16
    assert {r.kind for r in rec.records} == {"channel"}
    # sigmoid, not a softmax over a single split (which would be exactly 1)
    assert all(((v > 0) & (v < 1)).all() and v.std() > 0 for v in rec.channel.values())


# -- shapes ------------------------------------------------------------------------------------


def test_shapes_of_channel_and_spatial():
    model = _build("attnviz-cbam_resnet18")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(x)
    assert list(rec.channel) == [f"layer{s}.{b}.attn.channel" for s in (1, 2, 3, 4) for b in (0, 1)]
    assert list(rec.spatial) == [f"layer{s}.{b}.attn.spatial" for s in (1, 2, 3, 4) for b in (0, 1)]
    for stage, (c, hw) in enumerate([(64, 16), (128, 8), (256, 4), (512, 2)], start=1):
        assert rec.channel[f"layer{stage}.0.attn.channel"].shape == (2, c)
        assert rec.spatial[f"layer{stage}.1.attn.spatial"].shape == (2, hw, hw)
    for v in [*rec.channel.values(), *rec.spatial.values()]:
        assert ((v > 0) & (v < 1)).all()
    r = rec.records[0]
    assert (r.stage, r.block, r.call) == (1, 0, 0)


def test_shapes_of_radix():
    model = _build("timm-resnest14d")
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.randn(2, 3, 64, 64))
    assert len(rec.radix) == 4 and rec.channel == {}
    for (name, v), c in zip(rec.radix.items(), (64, 128, 256, 512), strict=True):
        assert v.shape == (2, 2, c), name
        torch.testing.assert_close(v.sum(1), torch.ones(2, c))
        assert v.std() > 0


def test_split_attention_layout_is_radix_major():
    """Radix-major (B, R, C): the weights must multiply U.view(B, R, C, H, W); with any other
    layout (cardinal-major) the reconstruction fails, so the identity check is not vacuous."""
    model = _build("attnviz-resnest14-r4c2")
    name = "layer2.0.conv2"
    cap = capture(model, [name])
    try:
        with torch.no_grad(), attnviz.record(model, layers=name) as rec:
            model(torch.randn(2, 3, 32, 32))
    finally:
        cap.remove()
    a = rec.radix[name]
    b, r, c = a.shape
    module = model.get_submodule(name)
    with torch.no_grad():
        u = module.act0(module.bn0(module.conv(cap.inputs[name][0])))
    u = u.view(b, r, c, *u.shape[-2:])
    out = cap.outputs[name][0]
    torch.testing.assert_close(out, (u * a[..., None, None]).sum(1))
    g = 2  # cardinality: a cardinal-major reading of the same numbers must not fit
    wrong = a.reshape(b, g, r, c // g).transpose(1, 2).reshape(b, r, c)
    assert not torch.allclose(out, (u * wrong[..., None, None]).sum(1), atol=1e-4)


# -- hooks -------------------------------------------------------------------------------------


def _small():
    model = create_model("demo_cbam_resnet")
    randomize_bn(model, 1)
    return model.eval()


def test_hooks_removed_on_exit():
    model = _small()
    before = hook_count(model)
    with attnviz.record(model) as rec:
        assert hook_count(model) == before + len(rec.sites) == before + 16
        assert rec.active
        rec(torch.randn(1, 3, 32, 32))
    assert hook_count(model) == before
    assert not rec.active
    n = len(rec.records)
    model(torch.randn(1, 3, 32, 32))
    assert len(rec.records) == n == 16


def _hook_dicts(model: nn.Module) -> list[dict]:
    """Every hook dictionary of every module (forward, pre, their kwargs / always-called
    flags, backward)."""
    names = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
             "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
             "_backward_pre_hooks")
    return [dict(getattr(m, n)) for m in model.modules() for n in names]


def test_recording_leaves_the_users_hooks_as_it_found_them():
    """The recorder's hooks go in under one id and come out again: the user's own hooks (made
    before, and during, the recording) stay, keep firing, and are removed by their handles."""
    model = _small()
    fired: list[str] = []
    mine = [model.layer1.register_forward_hook(lambda m, a, o: fired.append("after")),
            model.register_forward_pre_hook(lambda m, a, k: fired.append("pre"),
                                            with_kwargs=True)]
    before = _hook_dicts(model)
    x = torch.randn(1, 3, 32, 32)
    with attnviz.record(model) as rec:
        during = model.layer2.register_forward_hook(lambda m, a, o: fired.append("during"))
        rec(x)
        assert _hook_dicts(model) != before
    assert len(rec.records) == 16 and fired == ["pre", "after", "during"]
    fired.clear()
    model(x)
    assert fired == ["pre", "after", "during"]
    during.remove()
    assert _hook_dicts(model) == before
    for h in mine:
        h.remove()
    assert all(not d for d in _hook_dicts(model))


def test_hooks_removed_when_forward_raises():
    model = _small()
    before = hook_count(model)
    with pytest.raises(RuntimeError):
        with attnviz.record(model):
            model(torch.randn(1, 4, 32, 32))  # wrong channel count: the stem conv raises
    assert hook_count(model) == before
    with attnviz.record(model) as rec:  # not left marked busy either
        model(torch.randn(1, 3, 32, 32))
    assert len(rec.records) == 16


def test_many_recordings_leave_no_hooks():
    model = _small()
    x = torch.randn(1, 3, 16, 16)
    before = hook_count(model)
    for _ in range(50):
        with torch.no_grad(), attnviz.record(model) as rec:
            model(x)
        assert len(rec.records) == 16
    assert hook_count(model) == before == 0


def test_model_without_attention():
    """Nothing to record is said clearly: after the first watched pass, and at once later."""
    model = torchvision.models.resnet18(weights=None).eval()
    with pytest.raises(attnviz.NoAttentionError) as e:
        with torch.no_grad(), attnviz.record(model):
            model(torch.randn(1, 3, 32, 32))
    msg = str(e.value)
    assert "ResNet has no attention" in msg and "sigmoid or softmax" in msg
    assert "timm SEModule" not in msg or "supported_types()" in msg
    assert hook_count(model) == 0
    with pytest.raises(attnviz.NoAttentionError, match="ResNet has no attention"):
        attnviz.record(model)  # known now: refused before any forward pass
    assert hook_count(model) == 0


def test_layers_restricts_and_bad_pattern_raises():
    model = _small()
    with torch.no_grad(), attnviz.record(model, layers="layer4") as rec:
        model(torch.randn(1, 3, 32, 32))
    names = {r.name for r in rec.records}
    assert names == {f"layer4.{b}.attn.{k}" for b in (0, 1) for k in ("channel", "spatial")}
    with torch.no_grad(), attnviz.record(model, layers="*.spatial", kinds=["spatial"]) as rec:
        model(torch.randn(1, 3, 32, 32))
    assert len(rec.spatial) == 8 and rec.channel == {}
    with pytest.raises(attnviz.NoAttentionError, match="layer9"):
        attnviz.record(model, layers="layer9*")
    assert hook_count(model) == 0


def test_nested_recorder_is_refused_and_first_keeps_working():
    model = _small()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), attnviz.record(model) as first:
        model(x)
        with pytest.raises(attnviz.RecorderBusyError):
            with attnviz.record(model):
                pass
        assert hook_count(model) == 16
        model(x)
        assert first.active
    assert len(first.records) == 32
    assert [r.call for r in first.records if r.name == "layer1.0.attn.channel"] == [0, 1]
    assert hook_count(model) == 0


# -- dtypes, layouts, in-place ops ------------------------------------------------------------


def test_autocast_bfloat16_records_float32():
    model = _build("timm-resnest14d")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), attnviz.record(model) as rec:
        out = model(torch.randn(1, 3, 32, 32))
    assert out.dtype == torch.bfloat16  # autocast really was on
    assert rec.records and all(r.value.dtype == torch.float32 for r in rec.records)
    for v in rec.radix.values():
        torch.testing.assert_close(v.sum(1), torch.ones_like(v[:, 0]), atol=2e-2, rtol=0)


@pytest.mark.parametrize("case", ["attnviz-cbam_resnet18", "timm-skresnet18"])
def test_autocast_bfloat16_identities(case):
    model = _build(case)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        verified, rec = run_and_verify(model, _image(case), atol=2e-2, rtol=2e-2)
    assert verified == CASES[case][3]
    assert all(r.value.dtype == torch.float32 for r in rec.records)


@pytest.mark.parametrize("case", ["attnviz-cbam_resnet18", "timm-resnest14d", "timm-seresnet18"])
def test_channels_last(case):
    model = _build(case).to(memory_format=torch.channels_last)
    x = _image(case).contiguous(memory_format=torch.channels_last)
    verified, _ = run_and_verify(model, x)
    assert verified == CASES[case][3]


def test_inplace_residual_add_does_not_corrupt_records():
    """timm's block does ``x = self.se(x)`` then ``x += shortcut``: the SE *output* is
    overwritten in place. The recorded gate must still equal σ(fc2(act(fc1(GAP(in)))))."""
    model = _build("timm-seresnet18")
    name = "layer1.0.se"
    se = model.get_submodule(name)
    kept = {}

    def keep_uncloned(_m, inp, out):
        kept["in"], kept["out"] = inp[0].clone(), out  # no clone of the output: the trap

    h = se.register_forward_hook(keep_uncloned)
    try:
        with torch.no_grad(), attnviz.record(model, layers=name) as rec:
            model(torch.randn(2, 3, 64, 64))
    finally:
        h.remove()
    s = rec.channel[name]
    with torch.no_grad():
        z = kept["in"].mean((2, 3), keepdim=True)
        expected = torch.sigmoid(se.fc2(se.act(se.bn(se.fc1(z))))).flatten(1)
    torch.testing.assert_close(s, expected, atol=1e-6, rtol=1e-6)
    # the trap is real: the uncloned SE output no longer equals in·s(c)
    assert not torch.allclose(kept["out"], kept["in"] * s[:, :, None, None], atol=1e-3)


def test_two_passes_concatenate_along_batch():
    model = _build("attnviz-resnest14")
    x1, x2 = torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32)
    verified, rec = run_and_verify(model, [x1, x2])
    assert verified == {L_SPLIT}
    with torch.no_grad(), attnviz.record(model) as r1:
        model(x1)
    with torch.no_grad(), attnviz.record(model) as r2:
        model(x2)
    assert rec.radix.keys() == r1.radix.keys()
    for name, v in rec.radix.items():
        assert v.shape[0] == 3
        torch.testing.assert_close(v[:1], r1.radix[name])
        torch.testing.assert_close(v[1:], r2.radix[name])
    assert [r.name for r in rec.latest()] == list(rec.radix)
    assert all(r.call == 1 for r in rec.latest())


def test_cpu_returns_the_same_records():
    model = _small()
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.randn(1, 3, 32, 32))
    before = [r.value.clone() for r in rec.records]
    moved = rec.cpu()
    assert moved is not rec and type(moved) is RecordSet
    assert moved.summary() == rec.summary() and len(rec.records) == len(before)
    assert all(r.value.device.type == "cpu" for r in moved.records)
    for a, b in zip(before, moved.records, strict=True):
        torch.testing.assert_close(a, b.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", ["attnviz-cbam_resnet18", "timm-resnest14d", "timm-skresnet18"])
def test_cuda_amp_identity(case):
    model = _build(case).cuda()
    x = _image(case).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        verified, rec = run_and_verify(model, x, atol=5e-3, rtol=5e-3)
    assert verified == CASES[case][3]
    assert all(r.value.dtype == torch.float32 and r.value.is_cuda for r in rec.records)
    rec.cpu()
    assert all(r.value.device.type == "cpu" for r in rec.records)


def test_every_adapter_was_exercised():
    """Runs last in this file: the labels the exactness tests verified are all the adapters."""
    if set(EXERCISED) != set(CASES):
        pytest.skip("only part of the exactness tests ran (-k / deselection)")
    assert set().union(*EXERCISED.values()) == set(attnviz.supported_types())

"""Recorder v3 (issue 21): every pass as complete as the first (fast paths, routing, fx),
batch from the data flow (keyword calls, sequence-first), the memory budget checked before
allocation, and clear refusals (TorchScript, a compiled copy)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import SelfAttentionBlock, capture, hook_count
from torch import nn

import attnviz
from attnviz.examples import SequentialSE
from attnviz.record import MemoryBudgetWarning

ATOL = RTOL = 1e-5

def _close(a, b, what=""):
    torch.testing.assert_close(a.float(), b.float(), atol=ATOL, rtol=RTOL, msg=what)


# -- (b) steady state = first pass ---------------------------------------------------------------


def test_transformer_encoder_fast_path_every_recording():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2,
                                enable_nested_tensor=False).eval()
    x = torch.randn(2, 5, 16)
    attnviz.find_attention(enc, x)
    shapes = []
    for _ in range(3):
        with torch.no_grad(), attnviz.record(enc) as rec:
            out = enc(x)
        shapes.append({k: tuple(v.shape) for k, v in rec.attention.items()})
    assert shapes == [{"layers.0.self_attn": (2, 4, 5, 5), "layers.1.self_attn": (2, 4, 5, 5)}] * 3
    with torch.no_grad():
        _close(out, enc(x), "the forward is unchanged")


class Router(nn.Module):
    """Top-1 routing: each image goes to expert 0 or 1 by the sign of its mean."""

    def __init__(self):
        super().__init__()
        self.experts = nn.ModuleList([SequentialSE(8), SequentialSE(8)])

    def forward(self, x):
        return torch.cat([self.experts[int(xi.mean() > 0)](xi[None]) for xi in x])


def test_top1_router_records_experts_the_first_pass_never_ran():
    torch.manual_seed(0)
    model = Router().eval()
    neg, pos = -torch.rand(1, 8, 3, 3) - 0.1, torch.rand(1, 8, 3, 3) + 0.1
    with torch.no_grad(), attnviz.record(model) as first:
        model(neg)
    assert list(first.channel) == ["experts.0.fc"]
    with torch.no_grad(), attnviz.record(model) as both:
        model(torch.cat([neg, pos]))
    assert sorted(both.channel) == ["experts.0.fc", "experts.1.fc"]
    with torch.no_grad(), attnviz.record(model) as only1:
        out = model(pos)
    assert list(only1.channel) == ["experts.1.fc"]
    cap = capture(model, ["experts.1"])
    with torch.no_grad():
        model(pos)
    cap.remove()
    s = only1.channel["experts.1.fc"]
    _close(cap.outputs["experts.1"][0], pos * s[:, :, None, None], "out = x·s")
    _close(out, cap.outputs["experts.1"][0])

# -- (c) batch from the data flow ----------------------------------------------------------------


class HFStyle(nn.Module):
    """A HuggingFace-style model: ``forward(pixel_values=...)``, bmm attention (B·heads, T, T)."""

    def __init__(self, dim=16, heads=4):
        super().__init__()
        self.h = heads
        self.embed = nn.Conv2d(3, dim, 2, 2)
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, pixel_values=None, output_attentions=False):
        t = self.embed(pixel_values).flatten(2).transpose(1, 2)  # (B, T, C)
        b, n, c = t.shape
        qkv = self.qkv(t).reshape(b, n, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4)
        q, k, v = (z.reshape(b * self.h, n, c // self.h) for z in qkv)
        attn = torch.bmm(q, k.transpose(1, 2)).softmax(-1)
        return torch.bmm(attn, v).reshape(b, self.h, n, -1)


def test_keyword_call_keeps_batch_and_heads_apart():
    model = HFStyle().eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad(), attnviz.record(model) as rec:
        out = model(pixel_values=x)
    attn = rec.attention[""]
    assert attn.shape == (3, 4, 16, 16)
    with torch.no_grad():
        t = model.embed(x).flatten(2).transpose(1, 2)
        v = model.qkv(t).reshape(3, 16, 3, 4, 4).permute(2, 0, 3, 1, 4)[2]
    _close(attn @ v, out, "out = attn @ V per image and head")


def test_sequence_first_input():
    class SeqFirst(nn.Module):
        def __init__(self, dim=16, heads=2):
            super().__init__()
            self.h, self.qkv = heads, nn.Linear(dim, 3 * dim)

        def forward(self, x):  # (T, B, C)
            t, b, c = x.shape
            q, k, v = self.qkv(x).reshape(t, b * self.h, 3, c // self.h).permute(2, 1, 0, 3)
            attn = (q @ k.transpose(1, 2)).softmax(-1)  # (B·heads, T, T)
            return attn @ v

    model = SeqFirst().eval()
    x = torch.randn(7, 3, 16)
    with torch.no_grad(), attnviz.record(model) as rec:
        out = model(x)
    attn = rec.attention[""]
    assert attn.shape == (3, 2, 7, 7)  # not (7, ...): the batch is the input's second axis
    with torch.no_grad():
        v = model.qkv(x).reshape(7, 6, 3, 8).permute(2, 1, 0, 3)[2]
    _close(attn.reshape(6, 7, 7) @ v, out, "out = attn @ V")

# -- (h) budget before memory -----------------------------------------------------------------


def test_budget_is_checked_before_the_map_is_computed(monkeypatch):
    from attnviz.record import ops

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            q = self.a(x).reshape(2, 10, 2, 4).transpose(1, 2)
            small = F.scaled_dot_product_attention(q[:, :, :2], q[:, :, :2], q[:, :, :2])
            q2 = self.b(x).reshape(2, 10, 2, 4).transpose(1, 2)
            return F.scaled_dot_product_attention(q2, q2, q2), small

    computed = []
    real = ops.sdpa_weights
    monkeypatch.setattr(ops, "sdpa_weights", lambda q, k, *a, **kw: computed.append(
        (q.shape[-2], k.shape[-2])) or real(q, k, *a, **kw))
    m = Fused().eval()
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        plain = m(x)
    # the small map (2·1·2·2 floats = 32 B with heads='mean') fits, the big one (2·10·10) not
    with torch.no_grad(), pytest.warns(MemoryBudgetWarning, match="max_bytes"):
        with attnviz.record(m, heads="mean", max_bytes=100) as rec:
            out = m(x)
    assert computed == [(2, 2)]  # the big map was never built
    assert torch.equal(out[0], plain[0]) and torch.equal(out[1], plain[1])
    assert list(rec.attention) == [""] and rec.attention[""].shape == (2, 1, 2, 2)
    assert rec.skipped == [""] or rec.skipped

_PEAK = """
import resource, sys, warnings, torch, timm, attnviz
torch.set_num_threads(1)
m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=768).eval()
x = torch.randn(1, 3, 768, 768)
with torch.no_grad():
    m(x)  # warm: allocator pools and timm buffers exist before the measurement
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.argv[1] == "record":
        out = None
        try:
            with warnings.catch_warnings(record=True) as w, attnviz.record(
                    m, heads="mean", max_bytes=2**20):
                out = m(x)
        except attnviz.MemoryBudgetError:  # nothing fitted: said after the forward
            pass
        assert out.shape == (1, 1000) and any("max_bytes" in str(i.message) for i in w)
    else:
        out = m(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


@pytest.mark.slow
def test_budget_at_768_px_by_peak_memory():
    """vit at 768 px (2305 tokens), heads='mean', max_bytes=1 MiB: the first map (21 MB even
    averaged) is refused before it exists; peak memory stays that of a plain forward and the
    output is kept. (The old recorder rose by the full per-head map before refusing.)"""
    import subprocess
    import sys

    def rise(mode):
        res = subprocess.run([sys.executable, "-c", _PEAK, mode], capture_output=True,
                             text=True, timeout=600, check=True)
        return int(res.stdout.split()[-1]) / 1024  # MiB (ru_maxrss is in KiB on Linux)

    plain, recorded = rise("plain"), rise("record")
    assert recorded < plain + 16, (plain, recorded)

# -- also ------------------------------------------------------------------------------------


def test_jit_models_are_refused_clearly():
    m = SequentialSE(4).eval()
    traced = torch.jit.trace(m, torch.randn(1, 4, 3, 3))
    for jm in (traced, torch.jit.script(m)):
        with pytest.raises(attnviz.AttnvizError, match="TorchScript"):
            attnviz.record(jm)


def test_recorder_call_outside_the_block_is_an_attnviz_error():
    rec = attnviz.record(SequentialSE(4))
    with pytest.raises(attnviz.AttnvizError, match="inside"):
        rec(torch.randn(1, 4, 3, 3))

def test_compiled_copy_called_inside_the_block_is_named():
    from attnviz.examples import tutorial_cbam_resnet

    model = tutorial_cbam_resnet(8, 1).eval()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(attnviz.ParameterError, match="compile'd copy of Net"):
            with attnviz.record(model):
                compiled(torch.randn(1, 3, 6, 6))
    assert hook_count(model) == 0
    torch._dynamo.reset()

def test_fx_graph_module_keeps_site_names():
    from attnviz.examples import HandMHSA, Net

    model = Net(HandMHSA(16), SequentialSE(16)).eval()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad(), attnviz.record(model) as ref:
        model(x)
    for _ in range(2):  # the first, watched recording and a later one
        with torch.no_grad(), attnviz.record(gm) as rec:
            gm(x)
        assert [(r.name, r.kind) for r in rec] == [(r.name, r.kind) for r in ref]
        assert [r.name for r in ref] == ["layer1.0", "layer1.1.fc"]
        for a, b in zip(rec, ref, strict=True):
            _close(a.value, b.value)


def test_budget_refuses_multihead_attention_before_recomputing(monkeypatch):
    import functools
    import inspect

    import torch.nn.functional as F

    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    calls = []
    real = F.multi_head_attention_forward

    @functools.wraps(real)
    def spy(*a, **k):
        calls.append(inspect.signature(real).bind(*a, **k).arguments.get("need_weights"))
        return real(*a, **k)

    monkeypatch.setattr(F, "multi_head_attention_forward", spy)
    model = SelfAttentionBlock(mha)
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        plain = model(x)
    calls.clear()
    with torch.no_grad(), pytest.warns(MemoryBudgetWarning), pytest.raises(
            attnviz.MemoryBudgetError):
        with attnviz.record(model, max_bytes=64) as rec:
            out = model(x)
    # watching switches MHA's fused fast path off: the same math, rounded differently
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=1e-6)
    assert rec.skipped == ["attn"] and calls and True not in calls  # never recomputed


class _Stack(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        from attnviz.nn.se import SqueezeExcite

        self.blocks = nn.ModuleList(SqueezeExcite(8, reduction=2) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


def _gates(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each SE block's s(c), by hand (a hook on its gate), keyed by the block's current name."""
    out: dict[str, torch.Tensor] = {}
    handles = [b.gate.register_forward_hook(
        lambda _m, _i, o, n=name: out.__setitem__(n, o.flatten(1).clone()))
        for name, b in model.named_modules() if hasattr(b, "gate")]
    model(x)
    for h in handles:
        h.remove()
    return out


class _Flat(nn.Sequential):
    """SE blocks that are the root's own children."""

    def __init__(self, n: int) -> None:
        from attnviz.nn.se import SqueezeExcite

        super().__init__(*(SqueezeExcite(8, reduction=2) for _ in range(n)))


@pytest.mark.parametrize("change", ["delete", "replace", "append", "delete at the root"])
def test_a_changed_tree_is_seen_by_the_next_recording(change):
    """What a recording knows of a model is cached between recordings; deleting a block (which
    renames the ones after it and registers nothing, also when it is the root's own child),
    replacing one or adding one (a registration) must show in the next recording's sites,
    names and values."""
    from attnviz.nn.se import SqueezeExcite

    model = (_Flat(3) if change == "delete at the root" else _Stack(3)).eval()
    x = torch.rand(2, 8, 4, 4)
    with torch.no_grad():
        for _ in range(2):
            with attnviz.record(model) as rec:
                model(x)
        assert list(rec.channel) == list(_gates(model, x)) and len(rec.channel) == 3
        if change == "delete":
            del model.blocks[0]
        elif change == "delete at the root":
            del model[0]
        elif change == "replace":
            model.blocks[1] = SqueezeExcite(8, reduction=2).eval()
        else:  # every known site stays where it was: only the registration shows it
            model.blocks.append(SqueezeExcite(8, reduction=2).eval())
        with attnviz.record(model) as rec:
            model(x)
        expected = _gates(model, x)
    assert list(rec.channel) == list(expected) == [s.name for s in rec.sites]
    for name, gate in expected.items():
        torch.testing.assert_close(rec.channel[name], gate, atol=0, rtol=0)


@pytest.mark.parametrize("first", [None, ("context",), ("channel",)])
def test_kinds_filter_a_module_with_two_kinds(first):
    """timm's GlobalContext makes a context pooling map (a softmax found when it is made) and a
    channel gate; ``kinds=`` picks either, in a first recording and in later ones (where the
    gate is read by an output hook), and never refuses the model."""
    from timm.layers import GlobalContext

    from attnviz.examples import Net

    torch.manual_seed(0)
    model = Net(GlobalContext(16, fuse_add=True, fuse_scale=True)).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        with attnviz.record(model, kinds=first) as rec:
            model(x)
        assert {r.kind for r in rec.records} == set(first or ("context", "channel"))
        for kinds in (("context",), ("channel",), None):
            with attnviz.record(model, kinds=kinds) as rec:
                model(x)
            assert {r.kind for r in rec.records} == set(kinds or ("context", "channel"))


@pytest.mark.parametrize("bare", [False, True])
def test_what_is_known_of_a_model_does_not_keep_it_alive(bare):
    """The per-model cache is keyed weakly: recording a model — also one that is itself an
    attention module — must not keep it in memory."""
    import gc
    import weakref

    from attnviz.nn.se import SqueezeExcite
    from attnviz.record.records import AttentionRecord

    model = SqueezeExcite(8, reduction=2).eval() if bare else _Stack(2).eval()
    with torch.no_grad():
        for _ in range(2):
            with attnviz.record(model) as rec:
                model(torch.rand(1, 8, 4, 4))
    assert isinstance(rec.records[0], AttentionRecord)
    ref = weakref.ref(model)
    del model, rec
    gc.collect()
    assert ref() is None


def test_the_recorders_constructor_makes_the_same_record():
    from dataclasses import FrozenInstanceError, fields

    from attnviz.record.records import AttentionRecord

    values = ("a.b", "channel", torch.ones(1, 2), "t", 3, 1, 0, 2, 1, "adapter", {"x": 1})
    fast, slow = AttentionRecord.made(*values), AttentionRecord(*values)
    assert fast == slow and list(vars(fast)) == [f.name for f in fields(AttentionRecord)]
    with pytest.raises(FrozenInstanceError):
        fast.name = "c"  # type: ignore[misc]


def _recorded(rec) -> list[tuple[str, str, torch.Tensor]]:
    return [(r.name, r.kind, r.value) for r in rec.records]


@pytest.mark.parametrize("arch", ["demo_cbam_resnet", "demo_se_resnet", "demo_resnest"])
def test_a_model_its_adapters_explain_is_not_watched_even_the_first_time(arch):
    """attnviz's ResNets hold only named adapters and modules whose forward makes no weight:
    the first recording watches nothing, and records what a fully watched pass records."""
    from helpers import randomize_bn

    model = attnviz.create_model(arch)
    randomize_bn(model)
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        with attnviz.record(model) as first:
            model(x)
        with attnviz.record(model, _discover=True) as watched:  # what find_attention does
            model(x)
    assert first.watched == 0 and watched.watched > 0
    got, expected = _recorded(first), _recorded(watched)
    assert [(n, k) for n, k, _ in got] == [(n, k) for n, k, _ in expected] and got
    for (_, _, a), (_, _, b) in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_subclass_that_adds_a_gate_is_watched_from_the_first_recording():
    """A block's ``attnviz_plain`` vouches for that class's forward only: a subclass whose
    forward adds a gate, or a block whose forward was replaced, is not taken on trust, and the
    first recording finds the gate."""
    from attnviz.models.blocks import BasicBlock

    class GatedBlock(BasicBlock):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            return out * torch.sigmoid(out.mean((2, 3), keepdim=True))

    model = attnviz.create_model("demo_cbam_resnet").eval()
    model.layer2[0].__class__ = GatedBlock
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.rand(2, 3, 64, 64))
    assert rec.watched > 0
    assert "layer2.0" in rec.channel and len(rec.records) == 17

    patched = attnviz.create_model("demo_cbam_resnet").eval()  # the same gate, set per instance
    block = patched.layer2[0]

    def gated(x: torch.Tensor) -> torch.Tensor:
        out = BasicBlock.forward(block, x)
        return out * torch.sigmoid(out.mean((2, 3), keepdim=True))

    block.forward = gated
    with torch.no_grad(), attnviz.record(patched) as rec:
        patched(torch.rand(2, 3, 64, 64))
    assert rec.watched > 0 and "layer2.0" in rec.channel

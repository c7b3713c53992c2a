"""Recorder, third version: hostile cases (issue 21). Each test rebuilds what the network
computed from the record (``attn @ V``, ``x · gate``) or proves the recorder stayed out of the
way (the forward's output is bit-identical to a plain forward)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import capture, hook_count
from torch import nn

import attnviz
from attnviz.examples import SequentialSE
from attnviz.record import window_pixels
from attnviz.record.recorder import MemoryBudgetWarning

ATOL = RTOL = 1e-5


def _close(a, b, what=""):
    torch.testing.assert_close(a.float(), b.float(), atol=ATOL, rtol=RTOL, msg=what)


class Heads(nn.Module):
    """Multi-head self-attention over tokens (B, N, C) with a pluggable step after the softmax
    (``post``), the weights that multiply V returned for checking."""

    def __init__(self, dim=16, heads=4, post=None, n=6):
        super().__init__()
        self.h, self.post = heads, post
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mix = nn.Linear(heads, heads)  # talking heads
        self.gating = nn.Parameter(torch.randn(1, heads, 1, 1))
        self.pos = nn.Parameter(torch.randn(heads, n, n))
        self.drop = nn.Dropout(0.3)
        self.used = None

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-1, -2)) * (c // self.h) ** -0.5
        w = a.softmax(-1)
        if self.post == "talking":
            w = self.mix(w.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        elif self.post == "convit":
            g = torch.sigmoid(self.gating)
            p = self.pos.expand(b, -1, -1, -1).softmax(-1)
            w = (1.0 - g) * w + g * p
            w /= w.sum(dim=-1).unsqueeze(-1)
        elif self.post == "masked":
            mask = torch.zeros(n, n, dtype=torch.bool)
            mask[:, 0] = True
            w = w.masked_fill(mask, 0.0)
            w = w / w.sum(-1, keepdim=True)
        elif self.post == "two":
            w = 0.5 * w + 0.5 * (a * 2).softmax(-1)
        elif self.post == "dropout":
            w = self.drop(w)
        self.used = w.detach().clone()
        return (w @ v).transpose(1, 2).reshape(b, n, c)


def _v(m: Heads, x):
    b, n, c = x.shape
    return m.qkv(x).reshape(b, n, 3, m.h, c // m.h).permute(2, 0, 3, 1, 4)[2]


# -- (a) never in the user's way -----------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2])
def test_convit_mix_at_batch_2_is_recorded_as_the_map_that_multiplies_v(batch):
    m = Heads(post="convit").eval()
    x = torch.randn(batch, 6, 16)
    with torch.no_grad():
        plain = m(x)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    assert torch.equal(out, plain)
    assert [(r.kind, r.name) for r in rec] == [("attention", "")]  # no ingredient as a gate
    attn = rec.attention[""]
    assert attn.shape == (batch, 4, 6, 6) and "sum of two weights" in rec.records[0].meta["mixed"]
    with torch.no_grad():
        _close((attn @ _v(m, x)).transpose(1, 2).reshape(batch, 6, 16), out, "out = attn @ V")
    _close(attn, m.used)


def test_timm_convit_records_every_mixed_map_at_batch_2():
    import timm

    model = timm.create_model("convit_tiny", pretrained=False, img_size=32, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
    with torch.no_grad(), attnviz.record(model) as rec:
        out = model(x)
    assert torch.equal(out, plain)
    gpsa = [n for n, mod in model.named_modules() if type(mod).__name__ == "GPSA"]
    mhsa = [n for n, mod in model.named_modules() if type(mod).__name__ == "MHSA"]
    assert set(rec.attention) == set(gpsa) | set(mhsa) and len(gpsa) == 10
    assert rec.gates == {} and rec.channel == {}
    assert all("mixed" in r.meta for r in rec if r.name in gpsa)


def test_injected_failure_drops_one_site_with_one_warning(monkeypatch):
    from attnviz.record import observe

    model = nn.Sequential(SequentialSE(8), Heads(8, 2)).eval()
    x = torch.randn(2, 8, 3, 3)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.se, self.attn = model[0], model[1]

        def forward(self, x):
            y = self.se(x)
            return self.attn(y.flatten(2).transpose(1, 2))

    net = Wrap().eval()
    with torch.no_grad():
        plain = net(x)

    def broken(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(observe, "classify", broken)  # every gate classification fails
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with attnviz.record(net) as rec:
            out = net(x)
            out2 = net(x)
    assert torch.equal(out, plain) and torch.equal(out2, plain)
    msgs = [str(w.message) for w in caught if "could not record" in str(w.message)]
    assert len(msgs) == 1 and "'se'" in msgs[0] and "injected" in msgs[0]
    assert list(rec.attention) == ["attn"] and rec.channel == {}
    assert rec.skipped == ["se"] and hook_count(net) == 0


def test_injected_failure_in_a_hook_keeps_the_forward(monkeypatch):
    from attnviz.record import recorder

    net = nn.Sequential(SequentialSE(8), SequentialSE(8)).eval()
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        plain = net(x)
        with attnviz.record(net):
            net(x)  # discovered: the second recording uses output hooks
    calls = []

    def flaky(name):
        calls.append(name)
        if name.startswith("0."):
            raise ValueError("injected")
        return None, None

    monkeypatch.setattr(recorder, "stage_block", flaky)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="'0.fc'.*injected"):
        with attnviz.record(net) as rec:
            out = net(x)
    assert torch.equal(out, plain) and list(rec.channel) == ["1.fc"]


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


# -- (e) the map that multiplies V -------------------------------------------------------------


@pytest.mark.parametrize("post", ["talking", "masked", "two"])
def test_the_map_that_multiplies_v(post):
    m = Heads(post=post).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    (r,) = rec.records
    assert r.kind == "attention" and r.meta["mixed"]
    with torch.no_grad():
        _close((r.value @ _v(m, x)).transpose(1, 2).reshape(2, 6, 16), out, f"{post}: attn @ V")
    _close(r.value, m.used)


def test_attention_dropout_in_train_records_the_map_used():
    torch.manual_seed(1)
    m = Heads(post="dropout").train()
    x = torch.randn(2, 6, 16)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    (r,) = rec.records
    assert "dropout p=0.3" in r.meta["mixed"] and (r.value == 0).any()
    with torch.no_grad():
        _close((r.value @ _v(m, x)).transpose(1, 2).reshape(2, 6, 16), out, "attn @ V")


def test_fused_sdpa_dropout_is_noted():
    class Fused(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q, dropout_p=0.2)

    m = Fused()
    with torch.no_grad(), attnviz.record(m) as rec:
        m(torch.randn(2, 3, 5, 4))
    assert "p=0.2" in rec.records[0].meta["dropout"]


def test_timm_cait_talking_heads_are_all_recorded():
    import timm

    model = timm.create_model("cait_xxs24_224", pretrained=False, img_size=32, num_classes=3)
    model.eval()
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.randn(1, 3, 32, 32))
    units = [n for n, mod in model.named_modules()
             if type(mod).__name__ in ("TalkingHeadAttn", "ClassAttn")]
    assert len(units) == 26 and sorted(rec.attention) == sorted(units)


# -- (d) gates in every form; activations are not attention -------------------------------------


class GateForm(nn.Module):
    def __init__(self, form, c=8):
        super().__init__()
        self.form = form
        self.fc = nn.Conv2d(c, c, 1)
        self.used = None

    def forward(self, x):
        s = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
        f = self.form
        if f == "1+s":
            g = 1 + s
        elif f == "2s":
            g = 2 * s
        elif f == "where":
            g = torch.where(s > 0.5, s, torch.ones_like(s))
        elif f == "repeat":
            g = s.repeat(1, 1, x.shape[2], x.shape[3])
        elif f == "cat":
            a, b = s.chunk(2, 1)
            g = torch.cat([b, a], 1)
        elif f == "addcmul":
            self.used = 1 + s
            return torch.addcmul(x, x, s)
        self.used = g
        return x * g


@pytest.mark.parametrize("form", ["1+s", "2s", "where", "repeat", "cat", "addcmul"])
def test_gate_forms_are_recorded_with_the_multiplier_used(form):
    m = GateForm(form).eval()
    x = torch.randn(2, 8, 4, 5)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    (r,) = rec.records
    g = r.value
    g = g[:, :, None, None] if r.kind == "channel" else g
    _close(x * g, out, f"{form}: out = x·gate")
    _close(g.expand_as(x), m.used.expand_as(x))


def test_two_chunks_of_one_sigmoid_are_two_gates():
    class Halves(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Conv2d(8, 16, 1)

        def forward(self, x):
            a, b = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True))).chunk(2, 1)
            return x * a + x.flip(1) * b

    m = Halves().eval()
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    assert [(r.kind, r.key) for r in rec] == [("channel", ""), ("channel", "#1")]
    a, b = (r.value[:, :, None, None] for r in rec)
    _close(x * a + x.flip(1) * b, out, "out = x·a + x'·b")


@pytest.mark.parametrize("act", ["quickgelu", "swish_beta", "clone", "hardswish"])
def test_activations_are_not_recorded(act):
    class Act(nn.Module):
        def __init__(self):
            super().__init__()
            self.beta = nn.Parameter(torch.tensor(1.3))

        def forward(self, x):
            if act == "quickgelu":
                return x * torch.sigmoid(1.702 * x)
            if act == "swish_beta":
                return x * torch.sigmoid(self.beta * x)
            if act == "clone":
                return x * torch.sigmoid(x.clone())
            return x * F.hardsigmoid(x + 0.5)

    model = nn.Sequential(Act(), SequentialSE(8)).eval()
    with torch.no_grad(), attnviz.record(model) as rec:
        model(torch.randn(2, 8, 4, 4))
    assert [r.name for r in rec] == ["1.fc"]


def test_full_size_spatial_gate_of_another_tensor_is_still_recorded():
    class Full(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return x * torch.sigmoid(self.conv(x))

    m = Full().eval()
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    _close(x * rec.gates[""], out)


def test_conv_lstm_gates_are_out():
    class ConvLSTMCell(nn.Module):
        def __init__(self, c=4):
            super().__init__()
            self.conv = nn.Conv2d(2 * c, 4 * c, 3, padding=1)

        def forward(self, x, h, cc):
            i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), x.shape[1], 1)
            i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
            c2 = f * cc + i * g
            return o * torch.tanh(c2), c2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell, self.se = ConvLSTMCell(), SequentialSE(4)

        def forward(self, x):
            h = c = torch.zeros_like(x)
            for _ in range(2):
                h, c = self.cell(x, h, c)
            return self.se(h)

    net = Net().eval()
    with torch.no_grad(), attnviz.record(net) as rec:
        net(torch.randn(1, 4, 3, 3))
    assert [r.name for r in rec] == ["se.fc"]
    with torch.no_grad(), attnviz.record(net, recurrent=True) as rec:
        net(torch.randn(1, 4, 3, 3))
    assert {r.name for r in rec} == {"cell", "se.fc"}  # on request


def test_partial_misses_are_warned_and_listed():
    class SELayer(nn.Module):  # looks like attention, multiplies nothing
        def __init__(self):
            super().__init__()
            self.fc = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return x + self.fc(x)

    model = nn.Sequential(SequentialSE(8), SELayer()).eval()
    x = torch.randn(1, 8, 3, 3)
    with torch.no_grad(), pytest.warns(UserWarning, match=r"look like attention.*\b1\b"):
        with attnviz.record(model) as rec:
            model(x)
    assert list(rec.channel) == ["0.fc"]
    assert attnviz.find_attention(model, x).candidates == ["1"]


@pytest.mark.parametrize("cls", ["SELayer", "SEBlock", "SCSEModule", "SKConv", "BAM",
                                 "PAM_Module"])
def test_candidate_class_names(cls):
    from attnviz.record.sites import candidates

    unit = type(cls, (nn.Module,), {"forward": lambda self, x: x})()
    unit.proj = nn.Conv2d(2, 2, 1)
    assert candidates(nn.Sequential(nn.Conv2d(2, 2, 1), unit), []) == ["1"]


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

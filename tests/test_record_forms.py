"""Recorder v3 (issue 21): the weights the network really multiplied by — mixed softmax maps
(ConViT, talking heads, masking, dropout) rebuild ``attn @ V``, gates in every form rebuild
``x · gate``; activations and recurrent gates are not attention; a recorder failure never
reaches the forward."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import hook_count
from torch import nn

import attnviz
from attnviz.examples import SequentialSE

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


@pytest.mark.parametrize("where", ["canonical", "stage_block"])
def test_injected_failure_in_a_hook_keeps_the_forward(monkeypatch, where):
    """An internal failure — in a hook during the forward (``canonical``) or while the records
    are built from what the hooks kept (``stage_block``) — drops that site with one warning;
    the forward and the other sites are untouched."""
    from attnviz.record import collect

    net = nn.Sequential(SequentialSE(8), SequentialSE(8)).eval()
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        plain = net(x)
        with attnviz.record(net):
            net(x)  # discovered: the second recording uses output hooks
    real = getattr(collect, where)

    def flaky(*args):
        name = args[0] if where == "stage_block" else ""
        if where == "canonical" and flaky.calls == 0 or name.startswith("0."):
            flaky.calls += 1
            raise ValueError("injected")
        flaky.calls += 1
        return real(*args)

    flaky.calls = 0
    monkeypatch.setattr(collect, where, flaky)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="'0.fc'.*injected"):
        with attnviz.record(net) as rec:
            out = net(x)
        assert list(rec.channel) == ["1.fc"]
    assert torch.equal(out, plain) and flaky.calls == 2

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


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_full_size_spatial_gate_of_another_tensor_is_still_recorded(scale):
    """Also when the gate is ~0.5 everywhere and the features tiny (random init, GhostNetV2's
    2×2 DFC gate): only an exact relation to x makes an activation."""

    class Full(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return x * torch.sigmoid(self.conv(x))

    m = Full().eval()
    with torch.no_grad():
        m.conv.weight.mul_(scale)
        m.conv.bias.mul_(scale)
    x = torch.randn(2, 8, 4, 4) * scale
    with torch.no_grad(), attnviz.record(m) as rec:
        out = m(x)
    torch.testing.assert_close(x * rec.gates[""], out, atol=1e-5 * scale, rtol=1e-5)


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

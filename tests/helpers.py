"""Test helpers: non-trivial BatchNorm statistics and exact reconstruction of attention outputs.

The reconstruction never trusts the recorder: every identity is checked against the input and
output of the attention module, captured (and cloned) by hooks installed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

import attnviz
from attnviz.record import find_attention

ATOL = 1e-5
RTOL = 1e-5


def randomize_bn(model: nn.Module, seed: int = 0) -> int:
    """Randomise every BatchNorm's weight, bias, running_mean and running_var (var > 0).

    timm zero-initialises the last BN of each residual block (``zero_init_last``) and the CBAM
    spatial BN starts at weight 0, so without this the input of an attention module can be all
    zeros (or a mask exactly 0.5 everywhere) and an identity check proves nothing.
    Returns the number of BatchNorm layers changed.
    """
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            c = m.num_features

            def rnd(lo: float, hi: float, c: int = c) -> torch.Tensor:
                return torch.rand(c, generator=g) * (hi - lo) + lo

            if m.weight is not None:
                m.weight.copy_(rnd(0.5, 1.5))
            if m.bias is not None:
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            if m.running_var is not None:
                m.running_var.copy_(rnd(0.5, 2.0))
            n += 1
    return n


def descendants_running(parent, word: str) -> list:
    """The live descendants of a ``psutil.Process`` whose command line contains ``word``.

    A server or launcher spawns short-lived helpers; one that ends (or is a zombie) while we
    read its command line is skipped, not an error.
    """
    import psutil

    found = []
    for proc in parent.children(recursive=True):
        try:
            if word in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess included
            pass
    return found


def hook_count(model: nn.Module) -> int:
    """Forward hooks installed anywhere in ``model``."""
    return sum(len(m._forward_hooks) for m in model.modules())


def _clone(t):
    return t.detach().clone() if isinstance(t, torch.Tensor) else t


@dataclass
class Capture:
    """Cloned inputs and outputs of some modules, per forward call, keyed by module name."""

    inputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    outputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    handles: list = field(default_factory=list)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def capture(model: nn.Module, names: Iterable[str], pre_only: Iterable[str] = ()) -> Capture:
    """Hook ``names`` (input and output) and ``pre_only`` (input only) of ``model``."""
    cap = Capture()

    def fwd(name: str):
        def hook(_m, inp, out):
            cap.inputs.setdefault(name, []).append(_clone(inp[0]))
            cap.outputs.setdefault(name, []).append(_clone(out))

        return hook

    def pre(name: str):
        def hook(_m, inp):
            cap.inputs.setdefault(name, []).append(_clone(inp[0]))

        return hook

    for name in dict.fromkeys(names):
        cap.handles.append(model.get_submodule(name).register_forward_hook(fwd(name)))
    for name in dict.fromkeys(pre_only):
        cap.handles.append(model.get_submodule(name).register_forward_pre_hook(pre(name)))
    return cap


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol=ATOL, rtol=RTOL) -> None:
    torch.testing.assert_close(
        actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}"
    )


def _nontrivial(t: torch.Tensor, what: str) -> None:
    """Guard against vacuous identities (an all-zero input, a constant gate)."""
    assert t.abs().amax() > 1e-3, f"{what} is all zeros: the identity check would prove nothing"


def _nonconstant(t: torch.Tensor, what: str) -> None:
    assert t.float().std() > 1e-4, f"{what} is constant: the identity check would prove nothing"


def _split_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """U = act0(bn0(conv(x))) of a split-attention conv (timm or attnviz), recomputed."""
    u = module.conv(x)
    u = module.bn0(u)
    if hasattr(module, "drop"):
        u = module.drop(u)
    return module.act0(u)


def _cbam_parents(model: nn.Module) -> dict[str, tuple[str, str]]:
    """``{parent: (channel site, spatial site)}`` for CBAM modules (attnviz or timm)."""
    out: dict[str, tuple[str, str]] = {}
    for name, m in model.named_modules():
        ch, sp = getattr(m, "channel", None), getattr(m, "spatial", None)
        if isinstance(ch, nn.Module) and isinstance(sp, nn.Module):
            out[name] = (
                f"{name}.channel" if name else "channel",
                f"{name}.spatial" if name else "spatial",
            )
    return out


def run_and_verify(
    model: nn.Module,
    x: torch.Tensor | list[torch.Tensor],
    atol: float = ATOL,
    rtol: float = RTOL,
    **record_kwargs,
) -> tuple[set[str], attnviz.Recorder]:
    """Run ``model`` on ``x`` (one tensor or several forward passes) inside ``attnviz.record``
    and rebuild every attention module's output from the recorded weights.

    Returns the adapter labels that were verified and the recorder.
    """
    xs = x if isinstance(x, list) else [x]
    sites = find_attention(model, layers=record_kwargs.get("layers"))
    names = [s.name for s in sites]
    parents = [_parent(s.name) for s in sites if s.kind == "paths"]
    cbam = {p: v for p, v in _cbam_parents(model).items() if v[0] in names and v[1] in names}
    cap = capture(model, names + parents + list(cbam))
    try:
        with torch.no_grad(), attnviz.record(model, **record_kwargs) as rec:
            for xi in xs:
                model(xi)
    finally:
        cap.remove()

    verified: set[str] = set()
    by_name: dict[str, list] = {}
    for r in rec.records:
        by_name.setdefault(r.name, []).append(r)
    assert set(by_name) == set(names), "every attention site must fire"
    with torch.no_grad():
        for site in sites:
            recs = by_name[site.name]
            assert [r.call for r in recs] == list(range(len(xs)))
            for call, r in enumerate(recs):
                assert r.value.dtype == torch.float32
                assert r.kind == site.kind and r.module_type == site.adapter.label
                inp = cap.inputs[site.name][call]
                out = cap.outputs[site.name][call]
                _verify_one(model, site, r.value, inp, out, cap, call, atol, rtol)
            verified.add(site.adapter.label)
        for parent, (ch, sp) in cbam.items():
            for call in range(len(xs)):
                inp = cap.inputs[parent][call]
                out = cap.outputs[parent][call]
                s = by_name[ch][call].value
                a = by_name[sp][call].value
                b, c = s.shape
                expected = inp.float() * s.view(b, c, 1, 1) * a[:, None]
                _close(out, expected, f"CBAM {parent!r}: out = in·s(c)·A", atol, rtol)
    return verified, rec


def _verify_one(model, site, value, inp, out, cap, call, atol, rtol) -> None:
    label, kind, name, module = site.adapter.label, site.kind, site.name, site.module
    what = f"{label} at {name!r}"
    b = inp.shape[0]
    assert value.shape[0] == b
    if kind == "paths":
        # module = SelectiveKernelAttn: input (B, P, C, H, W) stacked paths, output weights.
        assert value.ndim == 3
        _close(value.sum(1), torch.ones_like(value[:, 0]), f"{what}: paths sum to 1", atol, rtol)
        parent_name = _parent(name)
        sk = model.get_submodule(parent_name)
        px = cap.inputs[parent_name][call]
        pout = cap.outputs[parent_name][call]
        if sk.split_input:
            splits = torch.split(px, sk.in_channels // sk.num_paths, 1)
            u = torch.stack([op(splits[i]) for i, op in enumerate(sk.paths)], 1)
        else:
            u = torch.stack([op(px) for op in sk.paths], 1)
        _close(inp, u, f"{what}: recomputed paths U_p", atol, rtol)
        _nontrivial(u, f"{what} paths")
        _nonconstant(value, f"{what} weights")
        expected = (u.float() * value[..., None, None]).sum(1)
        _close(pout, expected, f"{what}: SK output = Σ_p a_p·U_p", atol, rtol)
        return
    _nontrivial(inp, f"{what} input")
    _nonconstant(value, f"{what} weights")
    if kind == "radix":
        u = _split_inputs(module, inp)
        _, rc, h, w = u.shape
        r = module.radix
        assert value.shape == (b, r, rc // r)
        _close(value.sum(1), torch.ones_like(value[:, 0]), f"{what}: radix sums to 1", atol, rtol)
        u = u.view(b, r, rc // r, h, w).float()
        expected = sum(value[:, i, :, None, None] * u[:, i] for i in range(r))
        _close(out, expected, f"{what}: out = Σ_r a_r·U_r", atol, rtol)
        return
    if kind == "spatial":
        assert value.shape == (b, *inp.shape[-2:])
        _close(out, inp.float() * value[:, None], f"{what}: out = in·A", atol, rtol)
        return
    assert kind == "channel", kind
    assert value.ndim == 2
    if getattr(module, "radix", None) == 1:  # split attention with radix 1: sigmoid gate on U
        u = _split_inputs(module, inp).float()
        assert value.shape == u.shape[:2]
        _close(out, u * value[:, :, None, None], f"{what}: out = U·σ", atol, rtol)
        return
    if label == "timm SqueezeExciteCl":  # channels-last layout (B, H, W, C)
        assert value.shape == (b, inp.shape[-1])
        _close(out, inp.float() * value[:, None, None, :], f"{what}: out = in·s(c)", atol, rtol)
        return
    assert value.shape == inp.shape[:2]
    _close(out, inp.float() * value[:, :, None, None], f"{what}: out = in·s(c)", atol, rtol)


class SelfAttentionBlock(nn.Module):
    """``nn.MultiheadAttention`` called as torchvision's ViT calls it: ``need_weights=False``."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = mha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]

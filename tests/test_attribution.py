"""Attention next to attribution: agreement metrics on known maps, Grad-CAM against a hand-written
one, IG completeness, in-place models (timm), and the user's model left untouched."""
from __future__ import annotations

import io

import pytest
import torch
from helpers import randomize_bn
from torch import nn

import attnviz
from attnviz import agreement as G
from attnviz import attribution as A
from attnviz.attribution_plots import plot_agreement, plot_attention_vs_attribution
from attnviz.datasets import make_shapes
from attnviz.errors import ParameterError

MASK = "layer3.0.attn.spatial"


@pytest.fixture(scope="module")
def demo() -> nn.Module:
    torch.manual_seed(0)
    model = attnviz.create_model("demo_cbam_resnet").eval()
    randomize_bn(model, seed=1)
    return model


@pytest.fixture(scope="module")
def seresnet() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("seresnet18", num_classes=5).eval()
    randomize_bn(model, seed=2)
    return model


def _x(b: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _model_state(model: nn.Module) -> dict:
    return {
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     + len(m._backward_pre_hooks) for m in model.modules()),
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters() if p.grad is not None],
        "training": [m.training for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _model_state(model)
    for key in ("inplace", "hooks", "requires_grad", "grads", "training"):
        assert after[key] == before[key], key
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


def manual_gradcam(model: nn.Module, x: torch.Tensor, layer: str, target: torch.Tensor):
    """Grad-CAM by hand: hook the layer output A, dlogit/dA, w_c = mean_hw, ReLU(sum_c w_c A_c).

    The hook hands a clone downstream, so in-place code after the layer cannot change A.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        store["A"] = out
        return out.clone()

    h = model.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        h.remove()
    act = store["A"]
    score = logits.gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(score, act)
    weights = grad.mean((2, 3), keepdim=True)
    return torch.relu((weights * act).sum(1)).detach()


# -- agreement metrics on constructed maps ---------------------------------------------------
def test_agreement_identical_reversed_disjoint():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 8, 8, generator=g)
    same = G.agreement(mask, mask.clone())
    assert torch.allclose(same["spearman"], torch.ones(3))
    assert torch.allclose(same["iou"], torch.ones(3))
    rev = G.agreement(mask, -mask)
    assert torch.allclose(rev["spearman"], -torch.ones(3))
    assert torch.allclose(rev["iou"], torch.zeros(3))  # top 20% of -m = bottom 20% of m

    # top-20% sets that do not overlap: left columns vs right columns
    left = torch.zeros(1, 10, 10)
    left[..., :2] = 1 + torch.arange(20.0).reshape(10, 2) / 100
    right = left.flip(-1)
    assert G.agreement(left, right, topk=0.2)["iou"].item() == 0.0


def test_agreement_aligns_a_finer_map_and_handles_ties():
    # a 64×64 map that is the 8×8 mask upsampled by blocks: after aligning, ranks agree exactly
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 8, 8, generator=g)
    fine = mask.repeat_interleave(8, -1).repeat_interleave(8, -2)
    out = G.agreement(mask, fine)
    assert torch.allclose(out["spearman"], torch.ones(2), atol=1e-6)
    assert torch.allclose(out["iou"], torch.ones(2))
    # ReLU'd maps are full of ties; tied cells get their average rank (independent of position)
    relu = torch.relu(mask - 0.5)
    flipped = G.agreement(relu.flip(-1).flip(-2), relu.flip(-1).flip(-2))["spearman"]
    assert torch.allclose(G.agreement(relu, relu)["spearman"], flipped)
    assert G.agreement(torch.ones(1, 4, 4), mask[:1, :4, :4])["spearman"].item() == 0.0


def test_pointing_game_on_known_object():
    objects = torch.zeros(2, 64, 64, dtype=torch.bool)
    objects[:, 40:56, 8:24] = True
    inside = torch.zeros(2, 8, 8)
    inside[:, 6, 2] = 1.0  # cell (6, 2) of an 8×8 grid = pixels 48..55 × 16..23: in the object
    attr = torch.zeros(2, 64, 64)
    attr[0, 45, 12] = 1.0  # peak inside
    attr[1, 5, 60] = 1.0  # peak far away
    out = G.agreement(inside, attr, objects)
    assert out["pointing_attention"].tolist() == [True, True]
    assert out["pointing_attribution"].tolist() == [True, False]


def test_align_shapes_and_values():
    m = torch.rand(2, 8, 8)
    assert G.align(m, 64).shape == (2, 64, 64)
    assert G.align(m[0], (16, 32)).shape == (16, 32)
    assert G.align(m[:, None], 4).shape == (2, 1, 4, 4)
    assert torch.equal(G.align(m, 8), m)
    big = torch.rand(1, 64, 64)
    assert torch.allclose(G.align(big, 1).flatten(), big.mean().reshape(1), atol=1e-2)
    with pytest.raises(ParameterError):
        G.align(torch.rand(2, 3, 8, 8), 4)


# -- Grad-CAM ----------------------------------------------------------------------------------
def test_layer_for_mask(demo):
    assert A.layer_for_mask(demo, MASK) == "layer3.0"
    assert A.layer_for_mask(demo, "layer4.1.attn.spatial") == "layer4.1"
    with pytest.raises(ParameterError):
        A.layer_for_mask(demo, "layer9.0.attn.spatial")


def test_gradcam_matches_manual_computation(demo):
    x = _x(4)
    before = _model_state(demo)
    for target in (None, 3):
        cam = A.gradcam(demo, x, A.layer_for_mask(demo, MASK), target=target)
        t = demo(x).argmax(1) if target is None else torch.full((4,), target)
        ref = manual_gradcam(demo, x, "layer3.0", t)
        assert cam.shape == (4, 8, 8)
        assert ref.abs().max() > 0 and (ref > 0).float().mean() > 0.05  # a non-trivial map
        torch.testing.assert_close(cam, ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-4)
        assert torch.allclose(cam, ref, atol=1e-5)
    _assert_unchanged(demo, before)
    # the Grad-CAM grid is the mask's grid
    mask, _ = G.attention_mask(demo, x, MASK)
    assert mask.shape == cam.shape


def test_gradcam_module_argument_and_errors(demo):
    x = _x(2)
    by_name = A.gradcam(demo, x, "layer2.1", target=torch.tensor([0, 1]))
    by_module = A.gradcam(demo, x, demo.layer2[1], target=torch.tensor([0, 1]))
    assert torch.equal(by_name, by_module) and by_name.shape == (2, 16, 16)
    with pytest.raises(ParameterError):
        A.gradcam(demo, x, "nope")
    with pytest.raises(ParameterError):
        A.gradcam(demo, x, nn.Conv2d(1, 1, 1))
    with pytest.raises(ParameterError):
        A.gradcam(demo, x, "layer2.1", target=torch.tensor([0, 1, 2]))


def test_copy_is_cached_and_refreshed_after_in_place_update():
    model = attnviz.create_model("demo_cbam_resnet").eval()
    randomize_bn(model, seed=3)
    x, t = _x(2, seed=4), torch.tensor([1, 2])
    twin = A.attribution_model(model)
    assert A.attribution_model(model) is twin
    assert all(not getattr(m, "inplace", False) for m in twin.modules())
    first = A.gradcam(model, x, "layer3.0", t)
    with torch.no_grad():
        model.layer3[0].conv2.weight.mul_(-1.5)  # in place, like an optimizer step
    assert A.attribution_model(model) is not twin
    second = A.gradcam(model, x, "layer3.0", t)
    assert not torch.allclose(first, second)
    assert torch.allclose(second, manual_gradcam(model, x, "layer3.0", t), atol=1e-5)


def test_recorder_on_the_model_does_not_see_attribution_passes(demo):
    x = _x(1)
    with attnviz.record(demo, layers=MASK) as rec:
        A.clear_cache()  # the copy is made while the recorder's hooks are installed
        A.gradcam(demo, x, "layer3.0")
        A.saliency(demo, x)
        assert len(rec) == 0
        demo(x)
        assert len(rec) == 1


# -- integrated gradients ------------------------------------------------------------------------
def test_integrated_gradients_completeness(demo):
    x = _x(2, seed=5)
    t = torch.tensor([0, 4])
    raw, delta = A.integrated_gradients(demo, x, t, n_steps=32, reduce="none", return_delta=True)
    assert raw.shape == (2, 3, 64, 64) and delta.shape == (2,)
    with torch.no_grad():
        diff = (demo(x) - demo(torch.zeros_like(x))).gather(1, t[:, None])[:, 0]
    total = raw.sum((1, 2, 3))
    # completeness: Σ attributions ≈ f(x) − f(0); Captum's delta is exactly that difference
    assert torch.allclose(total - diff, delta, atol=1e-4)
    assert (delta.abs() <= 0.05 * diff.abs() + 1e-3).all(), (delta, diff)
    m = A.integrated_gradients(demo, x, t, n_steps=32)
    assert m.shape == (2, 64, 64) and (m >= 0).all()
    assert torch.allclose(m, raw.abs().sum(1))


# -- timm with in-place ops -------------------------------------------------------------------
def test_timm_seresnet18_in_place_ops(seresnet):
    inplace = [m for m in seresnet.modules() if getattr(m, "inplace", False)]
    assert inplace, "seresnet18 should have in-place activations"
    before = _model_state(seresnet)
    x = _x(2, seed=6)
    t = torch.tensor([1, 3])
    # block output, and the SE output that timm's `x += shortcut` then modifies in place
    for layer in ("layer3.0", "layer3.0.se"):
        cam = A.gradcam(seresnet, x, layer, t)
        ref = manual_gradcam(seresnet, x, layer, t)
        assert cam.shape == (2, 4, 4)
        torch.testing.assert_close(cam, ref, atol=1e-5 * float(ref.abs().max()) + 1e-7,
                                   rtol=1e-4)
    ig, delta = A.integrated_gradients(seresnet, x, t, n_steps=8, internal_batch_size=8,
                                       return_delta=True)
    assert ig.shape == (2, 64, 64) and torch.isfinite(delta).all()
    assert A.saliency(seresnet, x, t).shape == (2, 64, 64)
    _assert_unchanged(seresnet, before)


# -- batch API, table, plots ---------------------------------------------------------------------
def test_attribute_shapes_and_table(demo):
    data = make_shapes(4, seed=1)
    before = _model_state(demo)
    maps = A.attribute(
        demo, data.images[:2], methods=("gradcam", "ig", "saliency", "occlusion"),
        mask_layer=MASK, options={"ig": {"n_steps": 8}, "occlusion": {"window": 16, "stride": 8}},
    )
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "gradcam": (2, 8, 8), "ig": (2, 64, 64), "saliency": (2, 64, 64), "occlusion": (2, 64, 64)
    }
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in maps.values())
    with pytest.raises(ParameterError):
        A.attribute(demo, data.images[:2], methods=("gradcam",))
    with pytest.raises(ParameterError):
        A.attribute(demo, data.images[:2], methods=("lime",), mask_layer=MASK)

    rows = G.agreement_table(demo, data.images, data.masks, MASK, batch_size=3,
                             options={"ig": {"n_steps": 8}})
    assert [r["method"] for r in rows] == ["gradcam", "ig", "saliency"]
    # the table's numbers are the per-image agreements of the same maps, averaged
    mask, logits = G.attention_mask(demo, data.images, MASK)
    direct = A.attribute(demo, data.images, ("gradcam", "saliency"), mask_layer=MASK,
                         target=logits.argmax(1))
    for r in rows:
        assert r["n"] == 4
        if r["method"] in direct:
            agree = G.agreement(mask, direct[r["method"]], data.masks)
            assert r["spearman_mean"] == pytest.approx(agree["spearman"].mean().item(), abs=1e-5)
            assert r["iou_mean"] == pytest.approx(agree["iou"].float().mean().item(), abs=1e-5)
            assert r["pointing_attention"] == pytest.approx(
                agree["pointing_attention"].float().mean().item())
    assert len({r["pointing_attention"] for r in rows}) == 1  # same mask for every method
    text = G.format_agreement(rows)
    assert "Spearman" in text and "gradcam" in text and len(text.splitlines()) == 5
    _assert_unchanged(demo, before)

    mask, _ = G.attention_mask(demo, data.images[:1], MASK)
    fig = plot_attention_vs_attribution(
        data.images[0], mask[0], {k: v[0] for k, v in maps.items()}, title="demo"
    )
    assert len(fig.axes) == 2 + len(maps) + 1  # + the mask colour bar
    assert "normalised" in fig.axes[-1].get_title() or any(
        "normalised" in ax.get_title() for ax in fig.axes
    )
    fig2 = plot_agreement(rows)
    for f in (fig, fig2):
        f.savefig(io.BytesIO(), format="png", dpi=40)


class _Counting(nn.Module):
    """A tiny CNN that counts its forward passes (in every deep copy too)."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        type(self).calls += 1
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_target_none_is_one_forward_pass(method) -> None:
    net = _Counting().eval()
    x = torch.rand(3, 3, 8, 8)
    A.clear_cache()
    before = _Counting.calls
    kw = {"layer": "conv"} if method == "gradcam" else {}
    fn = getattr(A, method)
    picked = fn(net, x, **kw)
    assert _Counting.calls - before == 1  # the pass that picks the class feeds the backward
    explicit = fn(net, x, target=net(x).argmax(1), **kw)
    assert torch.allclose(picked, explicit, atol=1e-6)

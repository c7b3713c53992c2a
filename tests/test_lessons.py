"""attnviz.lessons: the helpers the teaching notebooks call are right, not just runnable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.contour import QuadContourSet
from matplotlib.text import Text

import attnviz
from attnviz import lessons, metrics, plot
from attnviz.datasets import make_shapes
from attnviz.evaluate import random_baseline


@pytest.fixture(scope="module")
def data():
    return make_shapes(40, seed=1)


def test_spatial_scores_match_the_metrics(data) -> None:
    model = lessons.architecture_init("demo-cbam", seed=3)
    scores = lessons.spatial_scores([model], data, batch_size=16)
    with torch.no_grad(), attnviz.record(model, kinds=["spatial"]) as rec:
        model(data.images)
    assert scores.layers == list(rec.spatial)
    for j, mask in enumerate(rec.spatial.values()):
        assert scores.pointing[0, j] == pytest.approx(metrics.pointing_game(mask, data.masks))
        assert scores.energy[0, j] == pytest.approx(
            metrics.energy_in_box(mask, data.masks).mean().item(), rel=1e-5)
        assert scores.mask_mean[0, j] == pytest.approx(mask.mean().item())


def test_architecture_init_is_the_builders_and_seeded() -> None:
    a, b = (lessons.architecture_init("demo-cbam", seed=5) for _ in range(2))
    c = lessons.architecture_init("demo-cbam", seed=6)
    state = torch.get_rng_state()
    lessons.architecture_init("demo-cbam", seed=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    w = "layer1.0.conv1.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    torch.manual_seed(5)
    expected = attnviz.create_model("demo_cbam_resnet", num_classes=5)
    assert torch.equal(a.state_dict()[w], expected.state_dict()[w])
    # PyTorch's reset_parameters() is another initialisation (kaiming_uniform, a=sqrt(5))
    default = random_baseline(a, seed=5).state_dict()[w]
    assert abs(default.std().item() - a.state_dict()[w].std().item()) > 0.05


def test_baselines_and_tables(data) -> None:
    seeds = lessons.init_baselines("demo-cbam", data, seeds=range(3))
    assert seeds.pointing.shape == (3, 8) and seeds.energy.shape == (3, 8)
    trained = lessons.spatial_scores([attnviz.load_model("demo-cbam", device="cpu")], data)
    table = lessons.baseline_table(trained, seeds, metric="energy").splitlines()
    assert len(table) == 9 and "3 seeds" in table[0]
    assert table[5].startswith("layer3.0.attn.spatial")
    both = lessons.compare_table({"a": trained, "b": seeds}).splitlines()
    assert len(both) == 10 and f"{trained.energy[0, 4]:6.2f}" in both[6]


def test_pointing_chance_is_the_grown_object_share(data) -> None:
    grown = metrics._dilate(data.masks, 3).float().mean().item()
    assert lessons.pointing_chance(data) == pytest.approx(grown)
    assert 0.05 < grown < 0.3


def test_receptive_fields_of_the_demo_architecture() -> None:
    model = lessons.architecture_init("demo-cbam", seed=0)
    fields = lessons.receptive_fields(model, kernel_sizes=(3, 7))
    side = {(f.layer, f.kernel_size): f.side for f in fields}
    # stem 3x3/2, then two 3x3 convs: 1 + 2 + 2*2*2 = 11 px; the gate adds (k - 1) * 2 px
    assert side["layer1.0.attn.spatial", 3] == 11 + 2 * 2
    assert side["layer1.0.attn.spatial", 7] == 11 + 6 * 2
    assert side["layer4.1.attn.spatial", 3] == 64  # clipped to the image
    for k in (3, 7):
        sides = [f.side for f in fields if f.kernel_size == k]
        assert sides == sorted(sides)
    assert "layer1.0.attn.spatial     32×32" in lessons.receptive_table(fields)


def test_cost_table_counts_the_published_parameters() -> None:
    assert lessons.parameter_count("resnet50") == 25_557_032
    table = lessons.cost_table(("resnet50", "se_resnet50")).splitlines()
    assert "28,088,024" in table[2] and "+2,530,992" in table[2]


def test_figures_outline_the_object(data) -> None:
    model = attnviz.load_model("demo-cbam", device="cpu")
    with torch.no_grad(), attnviz.record(model, kinds=["spatial"]) as rec:
        model(data.images[:2])
    fig = lessons.outline_objects(plot.spatial_grid(data.images, rec.spatial, index=0),
                                  data.masks[0])
    for ax in fig.axes:
        contours = [c for c in ax.get_children() if isinstance(c, QuadContourSet)]
        assert len(contours) == (ax.get_label() != "<colorbar>")
    side = lessons.masks_side_by_side(data.images, data.masks,
                                      {"a": rec.spatial, "b": rec.spatial},
                                      ["layer2.0.attn.spatial", "layer3.0.attn.spatial"])
    assert len([ax for ax in side.axes if ax.images]) == 4
    s = torch.rand(40, 32)
    heat = lessons.class_channel_heatmap(s, data.labels, data.classes, k=7)
    assert heat.axes[0].images[0].get_array().shape == (5, 7)


def test_projection_enlarges_text_once() -> None:
    fig = plot.radix_heatmap(torch.rand(2, 2, 8))
    title = next(t for t in fig.findobj(Text) if t.get_text().startswith("radix"))
    size = title.get_fontsize()
    lessons.enlarge(fig, 1.5)
    lessons.enlarge(fig, 1.5)  # a figure shown twice is not enlarged twice
    assert title.get_fontsize() == pytest.approx(1.5 * size)
    lessons.projection()  # outside IPython: only remembered, no error
    from attnviz.lessons.projection import _STATE

    assert _STATE["scale"] == 1.6
    lessons.projection(False)
    assert _STATE["scale"] == 1.0
    assert np.isfinite(size)

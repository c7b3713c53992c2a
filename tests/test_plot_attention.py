"""Figures of attention maps and gates draw exactly the recorded numbers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers import randomize_bn

import attnviz
from attnviz import metrics
from attnviz import plot_attention as pa
from attnviz.examples import HandCoordAttention, HandMHSA, Net
from attnviz.vis import LOG_SPAN, to_unit


@pytest.fixture(scope="module")
def mhsa_record():
    model = Net(HandMHSA(16, heads=4))
    randomize_bn(model, 0)
    model.eval()
    x = torch.rand(2, 3, 6, 5)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(x)
    (r,) = rec.records
    return x, r


def _drawn_map(fig):
    ax = fig.axes[0]
    return np.asarray(ax.images[-1].get_array())


def _weights_of(unit: np.ndarray) -> np.ndarray:
    """Back from the drawn 0..1 value to the key weight (inverse of the uniform log scale)."""
    return 2.0 ** ((unit - 0.5) * 2 * LOG_SPAN) / unit.size


def test_key_map_is_the_recorded_row(mhsa_record):
    x, r = mhsa_record
    a = r.value
    assert r.meta["q_grid"] == (6, 5)
    q = (4, 2)
    flat = 4 * 5 + 2
    for head in (None, 0, 3):
        km = pa.key_map(a, q, r.meta["q_grid"], r.meta["k_grid"], head, index=1)
        row = a[1, :, flat].mean(0) if head is None else a[1, head, flat]
        np.testing.assert_array_equal(km, row.reshape(6, 5).numpy())
    fig = pa.attention_overlay(x, a, q, r.meta["q_grid"], r.meta["k_grid"], head=2, index=1)
    row = a[1, 2, flat].reshape(6, 5).numpy()
    drawn = _drawn_map(fig)  # the honest scale: a multiple of uniform 1/30, log
    np.testing.assert_array_equal(drawn, to_unit(row, "attention", 30)[0])
    inside = (row > 2**-LOG_SPAN / 30) & (row < 2**LOG_SPAN / 30)
    np.testing.assert_allclose(_weights_of(drawn)[inside], row[inside], rtol=1e-5)
    assert fig.axes[0].images[-1].get_clim() == (0.0, 1.0)
    bar = fig.axes[-1]
    assert "uniform" in bar.get_ylabel() and "1×" in [t.get_text() for t in bar.get_yticklabels()]
    stretched = pa.attention_overlay(x, a, q, r.meta["q_grid"], r.meta["k_grid"], head=2,
                                     index=1, stretch=True)
    np.testing.assert_array_equal(_drawn_map(stretched), row)
    assert "STRETCHED" in stretched.axes[-1].get_ylabel()
    assert "query (4, 2) · head 2" in fig.axes[0].get_title()
    wrong = a[1, 2, :, flat].reshape(6, 5).numpy()  # the transposed reading (a column)
    assert not np.allclose(_drawn_map(fig), wrong)


def test_bad_query_and_head_are_clear(mhsa_record):
    _, r = mhsa_record
    with pytest.raises(attnviz.ParameterError, match="outside the 6×5 query grid"):
        pa.key_map(r.value, (6, 0), r.meta["q_grid"])
    with pytest.raises(attnviz.ParameterError, match="head 4 out of range"):
        pa.key_map(r.value, (0, 0), r.meta["q_grid"], head=4)
    with pytest.raises(attnviz.ParameterError, match="not a square grid"):
        pa.key_map(r.value, (0, 0))


def test_heads_figure_and_statistics(mhsa_record):
    x, r = mhsa_record
    fig = pa.attention_heads(x, r.value, (0, 0), r.meta["q_grid"], r.meta["k_grid"])
    assert len([ax for ax in fig.axes if ax.images]) == 5  # mean + 4 heads
    stats = pa.head_statistics(r.value, r.meta["q_grid"])
    dist = metrics.attention_distance(r.value, (6, 5)).mean(0)
    ent = metrics.attention_entropy(r.value).mean(0)
    heights = [p.get_height() for p in stats.axes[0].patches]
    np.testing.assert_allclose(heights, dist.numpy(), rtol=1e-6)
    np.testing.assert_allclose([p.get_height() for p in stats.axes[1].patches], ent.numpy(),
                               rtol=1e-6)


def test_attention_distance_and_entropy_known_cases():
    # one query attending only to itself: distance 0; uniform attention: entropy 1
    eye = torch.eye(4)[None, None]
    assert metrics.attention_distance(eye, (2, 2)).item() == 0.0
    uniform = torch.full((1, 1, 4, 4), 0.25)
    assert metrics.attention_entropy(uniform).item() == pytest.approx(1.0)
    # 2×2 grid, every query looks at cell (0, 0): distances 0, 1, 1, √2
    to_first = torch.zeros(1, 1, 4, 4)
    to_first[..., 0] = 1
    expected = (0 + 1 + 1 + 2**0.5) / 4
    assert metrics.attention_distance(to_first, (2, 2)).item() == pytest.approx(expected)


def test_attention_on_object_ratio():
    objects = torch.zeros(1, 4, 4)
    objects[0, :2, :2] = 1  # the top-left quarter: area share 0.25
    uniform = torch.full((1, 2, 4, 4), 0.25)
    assert metrics.attention_on_object(uniform, objects, (2, 2))[0] == pytest.approx(1.0)
    focused = torch.zeros(1, 1, 4, 4)
    focused[..., 0] = 1  # everything on the object cell
    ratio, mass, share = metrics.attention_on_object(focused, objects, (2, 2))
    assert (ratio, mass, share) == (pytest.approx(4.0), pytest.approx(1.0), pytest.approx(0.25))
    # per head: head 0 uniform (1×), head 1 all on the object (4×); the mean of heads is 2.5×
    heads = torch.cat([uniform[:, :1], focused], 1)
    assert metrics.attention_on_object_by_head(heads, objects, (2, 2)) == [
        pytest.approx(1.0), pytest.approx(4.0)]
    assert metrics.attention_on_object(heads, objects, (2, 2))[0] == pytest.approx(2.5)
    fig = pa.object_attention_by_head([1.0, 4.0, 0.5])
    assert [p.get_height() for p in fig.axes[0].patches] == [1.0, 4.0, 0.5]


def test_directional_and_full_gates_draw_the_record():
    model = Net(HandCoordAttention(16))
    randomize_bn(model, 0)
    model.eval()
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(x)
    a_w, a_h = rec.gates["layer1.0"], rec.gates["layer1.0#1"]
    fig = pa.directional_gates(x, a_w, a_h, channel=5)
    top, side = fig.axes[0], fig.axes[1]
    np.testing.assert_array_equal(np.asarray(top.images[0].get_array())[0], a_w[0, 5, 0].numpy())
    np.testing.assert_array_equal(np.asarray(side.images[0].get_array())[:, 0],
                                  a_h[0, 5, :, 0].numpy())
    full = a_w * a_h
    fig = pa.full_gate(x, full, channel=3)
    np.testing.assert_array_equal(_drawn_map(fig), full[0, 3].numpy())
    with pytest.raises(attnviz.ParameterError, match="channel 16 out of range"):
        pa.full_gate(x, full, channel=16)


def test_a_row_of_the_trained_botnet_is_visible_on_the_uniform_scale():
    """Notebook 07's view: a query inside the object, mean of heads. On a fixed 0–1 scale the
    row is one colour (weights of about 1/64 span a few hundredths of the scale); on the
    uniform log scale it spans much of the colour map."""
    model = attnviz.load_model("demo-botnet", device="cpu")
    data = attnviz.datasets.make_shapes(4, seed=3)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(data.images)
    r = rec.records[0]
    cells = torch.nn.functional.adaptive_avg_pool2d(data.masks[:1, None].float(), (8, 8))[0, 0]
    query = divmod(int(cells.argmax()), 8)
    assert cells[query] > 0.5
    fig = pa.attention_heads(data.images, r.value, query, r.meta["q_grid"])
    drawn = _drawn_map(fig)  # the mean of heads
    raw = pa.key_map(r.value, query, r.meta["q_grid"])
    assert raw.max() - raw.min() < 0.1  # invisible on 0–1
    assert drawn.max() - drawn.min() > 0.4  # visible: across much of the colour map


def test_projector_mode_enlarges_the_explorers():
    from PIL import Image

    from attnviz import lessons
    from attnviz.widgets import AttentionExplorer

    images = attnviz.datasets.make_shapes(1, seed=5).images
    botnet = attnviz.create_model("demo_botnet").eval()
    cbam = attnviz.create_model("demo_cbam_resnet").eval()

    def sizes():
        views = (AttentionExplorer(botnet, images, static=False).canvas.value,
                 AttentionExplorer(cbam, images, static=False).canvas.value)
        return [np.array(Image.open(io.BytesIO(v)).size) for v in views]

    plain = sizes()
    lessons.projection(True, scale=1.5)
    try:
        projected = sizes()
    finally:
        lessons.projection(False)
    for p, q in zip(plain, projected, strict=True):
        np.testing.assert_allclose(q / p, 1.5, rtol=0.03)
    assert [tuple(s) for s in sizes()] == [tuple(s) for s in plain]  # off again: as before

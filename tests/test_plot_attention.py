"""Figures of attention maps and gates draw exactly the recorded numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import randomize_bn

import attnviz
from attnviz import metrics
from attnviz import plot_attention as pa
from attnviz.examples import HandCoordAttention, HandMHSA, Net


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
    np.testing.assert_array_equal(_drawn_map(fig), a[1, 2, flat].reshape(6, 5).numpy())
    assert fig.axes[0].images[-1].get_clim() == (0.0, 1.0)
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


def test_self_attention_explorer_draws_the_recorded_row():
    from attnviz.widgets import SelfAttentionExplorer

    model = attnviz.create_model("demo_botnet").eval()
    images = attnviz.datasets.make_shapes(2, seed=5).images
    ex = SelfAttentionExplorer(model, images, static=False)
    assert [s.name for s in ex.sites] == ["layer4.0.mhsa"]
    assert (ex.row.max, ex.col.max) == (7, 7) and len(ex.head_select.options) == 5
    ex.row.value, ex.col.value = 3, 6
    ex.head_select.value = 2
    with torch.no_grad(), attnviz.record(model) as rec:
        model(images[:1])
    expected = rec.attention["layer4.0.mhsa"][0, 2, 3 * 8 + 6].reshape(8, 8).numpy()
    np.testing.assert_allclose(ex.key_map(), expected, atol=1e-6)
    np.testing.assert_allclose(_drawn_map(ex.draw()), expected, atol=1e-6)
    assert "query (3, 6) · head 2" in ex.caption.value and ex.canvas.value[:4] == b"\x89PNG"
    ex.image_select.value = "image 1"
    assert ex.forward_count == 2
    ex.row.value = 0
    assert ex.forward_count == 2  # control changes never re-run the model
    with pytest.raises(attnviz.NoAttentionError, match="no self-attention map"):
        SelfAttentionExplorer(attnviz.create_model("demo_cbam_resnet"), images, static=False)

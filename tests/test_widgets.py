"""AttentionExplorer: controls change the figure as they should, without re-running the model."""

from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image

import attnviz
from attnviz.datasets import make_shapes
from attnviz.widgets import AttentionExplorer, headless


@pytest.fixture(scope="module")
def explorer() -> AttentionExplorer:
    torch.manual_seed(0)
    model = attnviz.create_model("demo_cbam_resnet").eval()
    data = make_shapes(3, seed=5)
    images = {f"img{i}": data.images[i] for i in range(3)}
    return AttentionExplorer(model, images, static=False)


def _kinds(ex: AttentionExplorer) -> list[str]:
    return [r.kind for r in ex.analysis().records]


def test_layer_change_redraws_without_model_run(explorer: AttentionExplorer) -> None:
    before_png, before_runs = explorer.canvas.value, explorer.forward_count
    explorer.layer_slider.value = 1
    assert explorer.forward_count == before_runs
    assert explorer.canvas.value != before_png
    assert "layer=1" in explorer.marker.value
    assert explorer.current().name in explorer.layer_label.value


def test_spatial_overlay_is_the_recorded_mask(explorer: AttentionExplorer) -> None:
    idx = _kinds(explorer).index("spatial")
    explorer.layer_slider.value = idx
    rec = explorer.current()
    overlay = explorer.weights_axes.images[-1]
    np.testing.assert_allclose(overlay.get_array(), rec.value[0].numpy(), atol=1e-6)
    assert overlay.get_clim() == (0.0, 1.0)  # fixed scale by default
    lo, hi = rec.value[0].min().item(), rec.value[0].max().item()
    assert f"raw [{lo:.2f}, {hi:.2f}]" in explorer.caption.value


def test_opacity_and_colour_map(explorer: AttentionExplorer) -> None:
    explorer.layer_slider.value = _kinds(explorer).index("spatial")
    runs = explorer.forward_count
    png = explorer.canvas.value
    explorer.opacity.value = 0.8
    assert explorer.weights_axes.images[-1].get_alpha() == pytest.approx(0.8)
    assert explorer.canvas.value != png
    fast = explorer.canvas.value
    explorer._full_render()  # the blitted opacity frame equals a full redraw
    assert explorer._full_render() == fast
    explorer.cmap.value = "viridis"
    assert explorer.weights_axes.images[-1].get_cmap().name == "viridis"
    explorer.stretch.value = True
    lo, hi = explorer.weights_axes.images[-1].get_clim()
    assert (lo, hi) != (0.0, 1.0) and "STRETCHED" in explorer.caption.value
    explorer.stretch.value = False
    assert explorer.forward_count == runs


def test_channel_selector_highlights_channel(explorer: AttentionExplorer) -> None:
    idx = _kinds(explorer).index("channel")
    explorer.layer_slider.value = idx
    rec = explorer.current()
    assert explorer.channel_slider.max == rec.value.shape[-1] - 1
    explorer.channel_slider.value = 3
    assert f"channel 3: s = {rec.value[0, 3].item():.3f}" in explorer.caption.value
    bars = explorer.weights_axes.collections[0]
    assert explorer.weights_axes.get_label() == "channel"
    heights = [p.vertices[:, 1].max() for p in bars.get_paths()]  # channel order
    np.testing.assert_allclose(heights, rec.value[0].tolist(), atol=1e-6)
    reds = np.flatnonzero(bars.get_facecolor()[:, 0] > 0.8)
    assert reds.tolist() == [3]


def test_image_change_runs_model_once_and_caches(explorer: AttentionExplorer) -> None:
    runs = explorer.forward_count
    explorer.image_select.value = "img1"
    assert explorer.forward_count == runs + 1
    explorer.image_select.value = "img2"
    explorer.image_select.value = "img1"
    assert explorer.forward_count == runs + 2
    assert "image=img1" in explorer.marker.value
    assert "prediction:" in explorer.prediction.value


def _png_bytes(size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _upload(ex: AttentionExplorer, name: str, content: bytes) -> None:
    ex.upload.value = (
        {
            "name": name,
            "type": "image/png",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime.now(datetime.timezone.utc),
        },
    )


def test_upload_good_bad_and_too_large(explorer: AttentionExplorer) -> None:
    _upload(explorer, "mine.png", _png_bytes())
    assert explorer.image_select.value == "mine.png"
    assert "image=mine.png" in explorer.marker.value
    _upload(explorer, "broken.jpg", b"<html>not an image</html>")
    assert explorer.status.value.count("broken.jpg") == 1  # named once, not "x: x: ..."
    assert "HTML" in explorer.status.value and explorer.image_select.value == "mine.png"
    small = AttentionExplorer(
        explorer.model, {"a": make_shapes(1, seed=1).images[0]}, static=False, max_upload_bytes=100
    )
    _upload(small, "big.png", _png_bytes(64))
    assert "upload limit" in small.status.value and small.status.value.count("big.png") == 1
    assert "is over the limit of 0.0001 MB" in small.status.value


def test_radix_model_and_headless_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = attnviz.create_model("demo_resnest").eval()
    ex = AttentionExplorer(model, make_shapes(1, seed=2).images, static=False)
    rec = ex.current()
    assert rec.kind == "radix"
    ex.channel_slider.value = 2
    col = ", ".join(f"{v:.2f}" for v in rec.value[0, :, 2].tolist())
    assert f"a = ({col})" in ex.caption.value
    monkeypatch.setenv("ATTNVIZ_STATIC", "1")
    assert headless()
    monkeypatch.setenv("ATTNVIZ_STATIC", "0")
    assert not headless()
    monkeypatch.delenv("ATTNVIZ_STATIC")
    monkeypatch.setenv("JPY_SESSION_NAME", "x.ipynb")
    assert not headless()


def test_no_attention_model_is_refused() -> None:
    import torchvision

    with pytest.raises(attnviz.NoAttentionError, match="has no attention"):
        AttentionExplorer(torchvision.models.resnet18(), make_shapes(1).images)


def test_kind_specific_explorers() -> None:
    from attnviz.widgets import channel_explorer, spatial_explorer, split_explorer

    images = make_shapes(1, seed=3).images
    cbam = attnviz.create_model("demo_cbam_resnet").eval()
    spatial = spatial_explorer(cbam, images, static=False)
    assert {r.kind for r in spatial.analysis().records} == {"spatial"}
    assert spatial.layer_slider.max == 7
    channel = channel_explorer(cbam, images, static=False)
    assert {r.kind for r in channel.analysis().records} == {"channel"}
    split = split_explorer(attnviz.create_model("demo_resnest").eval(), images, static=False)
    assert {r.kind for r in split.analysis().records} == {"radix"}
    with pytest.raises(attnviz.NoAttentionError, match="no attention of the kinds"):
        split_explorer(cbam, images, static=False)  # a CBAM model has no radix weights

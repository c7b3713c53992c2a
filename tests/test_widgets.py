"""AttentionExplorer: controls change the figure as they should, without re-running the model;
uploads are known by content; the notebook keeps a static image of the last view."""

from __future__ import annotations

import base64
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
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return attnviz.create_model("demo_cbam_resnet").eval()


@pytest.fixture(scope="module")
def explorer(model: torch.nn.Module) -> AttentionExplorer:
    data = make_shapes(3, seed=5)
    images = {f"img{i}": data.images[i] for i in range(3)}
    return AttentionExplorer(model, images, static=False)


def _kinds(ex: AttentionExplorer) -> list[str]:
    return [r.kind for r in ex.analysis().records]


def _marker(ex: AttentionExplorer) -> str:
    return ex.marker.value


def test_layer_change_redraws_without_model_run(explorer: AttentionExplorer) -> None:
    explorer.layer_slider.value = 0
    before_png, before_runs = explorer.canvas.value, explorer.forward_count
    explorer.layer_slider.value = 1
    assert explorer.forward_count == before_runs
    assert explorer.canvas.value != before_png
    assert "layer=1" in _marker(explorer)
    assert explorer.current().name in explorer.layer_label.value


def test_marker_is_hidden_and_findable(explorer: AttentionExplorer) -> None:
    assert explorer.marker.layout.display == "none"  # no visible debug line
    assert "attnviz-marker" in explorer.marker._dom_classes
    assert f"attnviz-explorer-{explorer.uid}" in explorer.widget._dom_classes


def test_spatial_overlay_is_the_recorded_mask(explorer: AttentionExplorer) -> None:
    idx = _kinds(explorer).index("spatial")
    explorer.layer_slider.value = idx
    rec = explorer.current()
    overlay = explorer.weights_axes.images[-1]
    np.testing.assert_allclose(overlay.get_array(), rec.value[0].numpy(), atol=1e-6)
    assert overlay.get_clim() == (0.0, 1.0)  # fixed scale by default
    assert overlay.get_cmap().name == "viridis"  # not jet
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
    explorer.cmap.value = "magma"
    assert explorer.weights_axes.images[-1].get_cmap().name == "magma"
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


def test_selected_channel_with_zero_weight_is_visible(explorer: AttentionExplorer) -> None:
    explorer.layer_slider.value = _kinds(explorer).index("channel")
    explorer.current().value[0, 5] = 0.0  # a closed gate: its bar has no height
    explorer.channel_slider.value = 5
    art = explorer.fig._art
    assert list(art["line"].get_xdata()) == [5, 5]
    x, y = art["mark"].get_data()
    assert list(x) == [5] and y[0] == pytest.approx(0.06)  # a marker above the empty bar


def test_controls_follow_the_layer_kind(explorer: AttentionExplorer) -> None:
    kinds = _kinds(explorer)
    explorer.layer_slider.value = kinds.index("channel")
    assert explorer.opacity.layout.visibility == "hidden"
    assert explorer.channel_slider.layout.visibility == "visible"
    explorer.layer_slider.value = kinds.index("spatial")
    assert explorer.opacity.layout.visibility == "visible"
    assert explorer.channel_slider.layout.visibility == "hidden"


def test_image_change_runs_model_once_and_caches(explorer: AttentionExplorer) -> None:
    runs = explorer.forward_count
    explorer.image_select.value = "img1"
    assert explorer.forward_count == runs + 1
    explorer.image_select.value = "img2"
    explorer.image_select.value = "img1"
    assert explorer.forward_count == runs + 2
    assert "image=img1" in _marker(explorer)
    assert "prediction:" in explorer.prediction.value


def _png_bytes(size: int | tuple[int, int] = 40, color: tuple[int, int, int] = (200, 200, 200),
               shape: str = "") -> bytes:
    w, h = (size, size) if isinstance(size, int) else size
    arr = np.full((h, w, 3), color, np.uint8)
    if shape == "circle":
        yy, xx = np.mgrid[:h, :w]
        arr[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2] = (20, 40, 230)
    elif shape == "star":
        arr[h // 4: 3 * h // 4, w // 2 - 3: w // 2 + 3] = (230, 30, 30)
        arr[h // 2 - 3: h // 2 + 3, w // 4: 3 * w // 4] = (230, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
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


def _decoded(content: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(content)).convert("RGB"))).permute(
        2, 0, 1).float() / 255


def test_upload_good_bad_and_too_large(explorer: AttentionExplorer) -> None:
    _upload(explorer, "mine.png", _png_bytes())
    assert explorer.image_select.value == "mine.png"
    assert "image=mine.png" in _marker(explorer)
    assert explorer.upload.value == ()  # bytes released; the same file can come again
    _upload(explorer, "broken.jpg", b"<html>not an image</html>")
    assert explorer.status.value.count("broken.jpg") == 1  # named once, not "x: x: ..."
    assert "HTML" in explorer.status.value and explorer.image_select.value == "mine.png"
    small = AttentionExplorer(
        explorer.model, {"a": make_shapes(1, seed=1).images[0]}, static=False, max_upload_bytes=100
    )
    _upload(small, "big.png", _png_bytes(64))
    assert "upload limit" in small.status.value and small.status.value.count("big.png") == 1
    assert "is over the limit of 0.0001 MB" in small.status.value


def test_limits_are_stated_next_to_the_upload(explorer: AttentionExplorer) -> None:
    text = explorer.limits.value
    assert "20 MB" in text and "64 megapixels" in text and "≤ 512 px" in text


def test_same_name_upload_shows_the_new_image(model: torch.nn.Module) -> None:
    ex = AttentionExplorer(model, attnviz.sample_images("shapes"), static=False)
    star, circle = _png_bytes(64, shape="star"), _png_bytes(64, shape="circle")
    _upload(ex, "red_star.png", star)
    first_png, runs = ex.canvas.value, ex.forward_count
    torch.testing.assert_close(ex.analysis().image, _decoded(star))
    _upload(ex, "red_star.png", circle)  # same name, other content
    assert ex.image_select.value == "red_star.png (2)"
    assert ex.forward_count == runs + 1  # its own forward pass
    torch.testing.assert_close(ex.analysis().image, _decoded(circle))
    torch.testing.assert_close(ex.analysis("red_star.png").image, _decoded(star))
    assert ex.canvas.value != first_png
    _upload(ex, "shapes_star.png", circle)  # named like a bundled sample: same circle content
    assert ex.image_select.value == "red_star.png (2)" and ex.forward_count == runs + 1
    green = _png_bytes(64, (0, 120, 0), "circle")
    _upload(ex, "shapes_star.png", green)  # named like the bundled sample, new content
    assert ex.image_select.value == "shapes_star.png (2)"
    torch.testing.assert_close(ex.analysis().image, _decoded(green))
    assert not torch.equal(ex.analysis("shapes_star.png").image, ex.analysis().image)


def test_upload_never_draws_another_image_first(model: torch.nn.Module) -> None:
    ex = AttentionExplorer(model, attnviz.sample_images("shapes"), static=False)
    drawn: list[torch.Tensor] = []
    draw = ex.fig.draw
    ex.fig.draw = lambda image, r, v: (drawn.append(image), draw(image, r, v))[1]
    renders, runs = ex.render_count, ex.forward_count
    content = _png_bytes(64, shape="circle")
    _upload(ex, "image.jpg", content)
    assert ex.render_count == renders + 1 and ex.forward_count == runs + 1
    assert len(drawn) == 1
    torch.testing.assert_close(drawn[0], _decoded(content))


def test_large_upload_is_shrunk_on_arrival_and_uploads_are_bounded(model) -> None:
    ex = AttentionExplorer(model, make_shapes(1, seed=1).images, static=False, max_uploads=2)
    _upload(ex, "huge.png", _png_bytes((3000, 2000), shape="circle"))
    assert tuple(ex.analysis().image.shape) == (3, 341, 512)  # long side 512 px
    assert ex.last_render_ms < 2000
    for i in range(3):
        _upload(ex, f"u{i}.png", _png_bytes(48, (40 * i, 90, 90)))
    labels = list(ex.image_select.options)
    assert labels == ["image 0", "u1.png", "u2.png"]  # the two latest uploads are kept
    assert len(ex.analyser._cache) <= 3


def test_snapshot_keeps_the_last_view(explorer: AttentionExplorer,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[dict] = []

    class Handle:
        def update(self, obj: dict, raw: bool = False) -> None:
            shown.append(obj)

    def fake_display(obj: dict, raw: bool = False, display_id: bool = False):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr("attnviz.widgets.snapshot.display", fake_display)
    ex = AttentionExplorer(explorer.model, make_shapes(2, seed=3).images)
    ex._ipython_display_()
    widget, snap = shown[:2]
    assert "application/vnd.jupyter.widget-view+json" in widget and "image/jpeg" not in widget
    assert base64.b64decode(snap["image/jpeg"]) == ex.canvas.value
    assert f"attnviz-snapshot-{ex.uid}" in snap["text/html"]
    ex.layer_slider.value = (ex.layer_slider.value + 1) % (ex.layer_slider.max + 1)
    assert base64.b64decode(shown[-1]["image/jpeg"]) == ex.canvas.value  # the last view
    assert ex.site_names[ex.layer_slider.value] in shown[-1]["text/plain"]
    assert f"attnviz-snapshot-{ex.uid}" in ex.marker.value  # the live widget hides it


def test_demo_model_opens_on_its_best_layer_and_warns_on_photos() -> None:
    model = attnviz.load_model("demo-cbam", device="cpu")
    images = attnviz.sample_images("shapes")[:1] + attnviz.sample_images("photos")[:1]
    ex = attnviz.widgets.spatial_explorer(model, images, static=False)
    best = model.model_card["test"]["best_spatial_layer"]
    assert ex.current().name == best
    assert ex.warning.value == ""
    ex.image_select.value = images[1].name
    assert "out of distribution" in ex.warning.value
    _upload(ex, "mine.png", _png_bytes(64, shape="star"))
    assert "trained only on generated shapes" in ex.warning.value


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


def test_kind_specific_explorers_show_only_their_controls(model: torch.nn.Module) -> None:
    from attnviz.widgets import channel_explorer, spatial_explorer, split_explorer

    images = make_shapes(1, seed=3).images
    spatial = spatial_explorer(model, images, static=False)
    assert {r.kind for r in spatial.analysis().records} == {"spatial"}
    assert spatial.layer_slider.max == 7
    assert spatial.channel_slider.layout.display == "none"
    channel = channel_explorer(model, images, static=False)
    assert {r.kind for r in channel.analysis().records} == {"channel"}
    hidden = [w.layout.display for w in (channel.opacity, channel.cmap, channel.stretch)]
    assert hidden == ["none"] * 3
    split = split_explorer(attnviz.create_model("demo_resnest").eval(), images, static=False)
    assert {r.kind for r in split.analysis().records} == {"radix"}
    assert split.cmap.layout.display == "none" and split.opacity.layout.display == "none"
    with pytest.raises(attnviz.NoAttentionError, match="no attention of the kinds"):
        split_explorer(model, images, static=False)  # a CBAM model has no radix weights

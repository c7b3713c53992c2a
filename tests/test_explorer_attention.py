"""The one explorer on self-attention maps: it draws exactly the recorded key row of the chosen
query and head, a click on the picture picks the cell under it, "mean of heads" is a visible
option, switching between kinds switches the controls, and it leaves a still image."""

from __future__ import annotations

import datetime
import io
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import attnviz
from attnviz import plot_attention as pa
from attnviz.examples import HandMHSA, Net, TutorialCBAMBlock
from attnviz.models import set_preprocess
from attnviz.vis import LOG_SPAN, to_unit
from attnviz.widgets import AttentionExplorer, self_attention_explorer, snapshot
from attnviz.widgets.controls import MEAN_OF_HEADS

GRID = (8, 8)  # demo_botnet's query grid


@pytest.fixture(scope="module")
def botnet() -> nn.Module:
    torch.manual_seed(0)
    return attnviz.create_model("demo_botnet").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return attnviz.datasets.make_shapes(2, seed=5).images


def _recorded(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), attnviz.record(model) as rec:
        model(image[None])
    return rec.attention["layer4.0.mhsa"]


def _drawn(ex: AttentionExplorer) -> np.ndarray:
    return np.asarray(ex.weights_axes.images[-1].get_array())


def test_it_draws_the_recorded_key_row(botnet: nn.Module, images: torch.Tensor) -> None:
    ex = AttentionExplorer(botnet, images, static=False)
    assert [(s.name, s.kind) for s in ex.sites] == [("layer4.0.mhsa", "attention")]
    assert (ex.row.max, ex.col.max) == (7, 7) and len(ex.head_select.options) == 5
    assert (ex.row.value, ex.col.value) == (4, 4)  # opens on the centre, not a corner
    ex.row.value, ex.col.value = 3, 6
    ex.head_select.value = 2
    attn = _recorded(botnet, images[0])
    row = attn[0, 2, 3 * 8 + 6].reshape(8, 8).numpy()
    np.testing.assert_array_equal(pa.key_map(ex.current().value, (3, 6), GRID, head=2), row)
    # on the scale of attention rows: exactly to_unit of the recorded row, and back
    np.testing.assert_array_equal(_drawn(ex), to_unit(row, "attention", 64)[0])
    inside = (row > 2**-LOG_SPAN / 64) & (row < 2**LOG_SPAN / 64)
    back = 2.0 ** ((_drawn(ex) - 0.5) * 2 * LOG_SPAN) / 64
    np.testing.assert_allclose(back[inside], row[inside], rtol=1e-5)
    assert ex.weights_axes.images[-1].get_clim() == (0.0, 1.0)
    assert "query (3, 6) · head 2" in ex.caption.value and "× uniform" in ex.caption.value
    assert "query=(3, 6) head=2" in ex.marker.value
    # the query marker sits at the centre of its cell
    h, w = ex.analysis().image.shape[1:]
    for line in ex.weights_axes.lines[-2:]:
        assert line.get_visible()
        np.testing.assert_allclose(np.ravel(line.get_data()), [6.5 * w / 8, 3.5 * h / 8])
    ex.stretch.value = True  # the row's own range, labelled
    np.testing.assert_array_equal(_drawn(ex), row)
    assert ex.weights_axes.images[-1].get_clim() == pytest.approx((row.min(), row.max()))
    assert "STRETCHED" in ex.caption.value
    ex.stretch.value = False
    ex.image_select.value = "image 1"
    assert ex.forward_count == 2
    other = _recorded(botnet, images[1])[0, 2, 3 * 8 + 6].reshape(8, 8).numpy()
    np.testing.assert_array_equal(_drawn(ex), to_unit(other, "attention", 64)[0])
    ex.row.value, ex.head_select.value, ex.opacity.value = 0, 1, 0.3
    assert ex.forward_count == 2  # control changes never re-run the model


def test_a_new_query_head_or_opacity_draws_no_new_figure(botnet, images) -> None:
    """The fast path: one figure, its background drawn once; a control change draws only the
    map, the marker and the colour bar over it."""
    ex = AttentionExplorer(botnet, images, static=False)
    figure, draws = ex.figure, ex.fig.full_draws
    for change in (("row", 1), ("col", 7), ("head_select", 3), ("opacity", 0.9),
                   ("head_select", MEAN_OF_HEADS)):
        before = ex.canvas.value
        getattr(ex, change[0]).value = change[1]
        assert ex.canvas.value != before, change
    assert ex.figure is figure and ex.fig.full_draws == draws
    fast = ex.canvas.value
    ex.fig._backgrounds.clear()
    assert ex._full_render() == fast  # the blitted frame equals a full redraw


def test_mean_of_heads_is_a_visible_option(botnet, images) -> None:
    ex = AttentionExplorer(botnet, images, static=False)
    # a visible label with a value (a None value shows blank in a JupyterLab Dropdown)
    assert ex.head_select.label == "mean of heads" and ex.head_select.value == MEAN_OF_HEADS
    assert "mean of heads" in ex.caption.value and "head=mean" in ex.marker.value
    attn = ex.current().value[0, :, 4 * 8 + 4]
    np.testing.assert_array_equal(
        _drawn(ex), to_unit(attn.mean(0).reshape(8, 8).numpy(), "attention", 64)[0])
    ex.head_select.value = 0
    np.testing.assert_array_equal(
        _drawn(ex), to_unit(attn[0].reshape(8, 8).numpy(), "attention", 64)[0])
    ex.head_select.value = MEAN_OF_HEADS
    np.testing.assert_array_equal(
        _drawn(ex), to_unit(attn.mean(0).reshape(8, 8).numpy(), "attention", 64)[0])


def _cell_centre(ex: AttentionExplorer, ax, cell: tuple[int, int]) -> tuple[float, float]:
    """The pixel (origin top left) of the rendered picture at the centre of ``cell``."""
    box, height = ax.get_window_extent(), ex.figure.bbox.height
    x = box.x0 + (cell[1] + 0.5) * box.width / GRID[1]
    y = height - (box.y1 - (cell[0] + 0.5) * box.height / GRID[0])
    return x, y


def test_a_click_picks_the_cell_under_it(botnet, images) -> None:
    ex = AttentionExplorer(botnet, images, static=False)
    width, height = Image.open(io.BytesIO(ex.canvas.value)).size
    assert (width, height) == tuple(ex.figure.bbox.size.astype(int))  # pixels of the picture
    for ax in (ex.fig._ax_img, ex.weights_axes):  # the image, and the map over it
        for cell in [(r, c) for r in range(8) for c in range(8)]:
            assert ex.fig.cell_at(*_cell_centre(ex, ax, cell), GRID) == cell
        box = ax.get_window_extent()
        top, bottom = height - box.y1, height - box.y0
        # the edge pixels of the picture are the edge cells
        assert ex.fig.cell_at(np.ceil(box.x0), np.ceil(top), GRID) == (0, 0)
        assert ex.fig.cell_at(np.floor(box.x1) - 1, np.floor(bottom) - 1, GRID) == (7, 7)
        assert ex.fig.cell_at(np.floor(box.x1) - 1, np.ceil(top), GRID) == (0, 7)
        assert ex.fig.cell_at(box.x0 - 3, (top + bottom) / 2, GRID) is None  # beside it
    assert ex.fig.cell_at(width - 2, 2, GRID) is None  # the corner of the picture
    # a click (ipyevents reports the picture's own pixel as dataX, dataY) redraws that query
    before = ex.canvas.value
    x, y = _cell_centre(ex, ex.weights_axes, (1, 6))
    ex._on_click({"event": "click", "dataX": round(x), "dataY": round(y)})
    assert (ex.row.value, ex.col.value) == (1, 6) and "query=(1, 6)" in ex.marker.value
    assert ex.canvas.value != before
    kmap = pa.key_map(ex.current().value, (1, 6), GRID)
    np.testing.assert_array_equal(_drawn(ex), to_unit(kmap, "attention", 64)[0])
    ex._on_click({"event": "click", "dataX": width - 2, "dataY": 2})  # outside: no change
    assert (ex.row.value, ex.col.value) == (1, 6)
    assert ex.clicks is not None and ex.clicks.source is ex.canvas  # ipyevents is installed
    assert ex.clicks.watched_events == ["click"]


def test_opening_query_and_its_checks(botnet, images) -> None:
    opened = self_attention_explorer(botnet, images, query=(2, 5), static=False)
    assert (opened.row.value, opened.col.value) == (2, 5) and "query (2, 5)" in \
        opened.caption.value
    with pytest.raises(attnviz.ParameterError, match="outside the 8×8 query grid"):
        AttentionExplorer(botnet, images, query=(8, 0), static=False)
    with pytest.raises(attnviz.NoAttentionError, match=r"draws \(attention\)"):
        self_attention_explorer(attnviz.create_model("demo_cbam_resnet"), images, static=False)
    with pytest.raises(attnviz.NoAttentionError,
                       match=r"self-attention maps \(layer4\.0\.mhsa\): explore them with "
                             r"attnviz\.widgets\.AttentionExplorer\(model\)"):
        attnviz.widgets.spatial_explorer(botnet, images, static=False)


def test_switching_layers_switches_the_controls() -> None:
    """A model with a CBAM block and a self-attention block: the head and query controls show
    on the attention map only, the channel slider on the channel gate only."""
    torch.manual_seed(0)
    model = Net(TutorialCBAMBlock(16), HandMHSA(16, heads=2)).eval()
    set_preprocess(model, 16, None, None)
    ex = AttentionExplorer(model, torch.rand(1, 3, 16, 16), static=False)
    kinds = [r.kind for r in ex.analysis().records]
    assert set(kinds) == {"channel", "spatial", "attention"}
    attention_only = ("head_select", "row", "col")
    for i, kind in enumerate(kinds):
        ex.layer_slider.value = i
        shown = {n for n in ("channel_slider", "opacity", "stretch", *attention_only)
                 if getattr(ex, n).layout.visibility == "visible"}
        if kind == "attention":
            assert shown == {"opacity", "stretch", *attention_only}
            assert len(ex.head_select.options) == 3 and (ex.row.max, ex.col.max) == (15, 15)
            assert "query=(" in ex.marker.value and "mean of heads" in ex.caption.value
        elif kind == "channel":
            assert shown == {"channel_slider"} and "query" not in ex.marker.value
        else:
            assert shown == {"opacity", "stretch"} and "query" not in ex.marker.value
    # a model without attention maps hides the attention controls altogether
    cbam = AttentionExplorer(attnviz.create_model("demo_cbam_resnet").eval(),
                             torch.rand(1, 3, 64, 64), static=False)
    assert all(getattr(cbam, n).layout.display == "none" for n in attention_only)


def test_it_leaves_a_still_image(botnet, images, monkeypatch) -> None:
    """Displayed, it leaves the live widget and below it a still image of its last view, kept
    up to date on every redraw."""
    shown: list[dict] = []
    updated: list[dict] = []

    class Handle:
        def update(self, bundle, raw):
            updated.append(bundle)

    def fake_display(bundle, raw=False, display_id=None):
        shown.append(bundle)
        return Handle() if display_id else None

    monkeypatch.setattr(snapshot, "display", fake_display)
    ex = self_attention_explorer(botnet, images[:1], query=(3, 3))
    ex._ipython_display_()
    widget, still = shown
    assert snapshot.WIDGET_MIME in widget
    assert "query (3, 3), mean of heads" in still["text/plain"]
    assert Image.open(io.BytesIO(__import__("base64").b64decode(still["image/jpeg"]))).size
    assert f"attnviz-snapshot-{ex.uid}" in still["text/html"]
    assert f"attnviz-snapshot-{ex.uid}" in ex.marker.value  # the live widget hides the still
    ex.head_select.value = 1
    assert "query (3, 3), head 1" in updated[-1]["text/plain"]
    ex.pick((0, 7))
    assert "query (0, 7), head 1" in updated[-1]["text/plain"]


def test_it_takes_an_upload(botnet, images) -> None:
    """An uploaded image is analysed and shown; a bad upload is named once, changes nothing."""
    ex = AttentionExplorer(botnet, images[:1], static=False)
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
                    ).save(buf, format="PNG")

    def upload(name: str, content: bytes) -> None:
        ex.upload.value = ({"name": name, "type": "image/png", "size": len(content),
                            "content": memoryview(content),
                            "last_modified": datetime.datetime.now(datetime.timezone.utc)},)

    upload("mine.png", buf.getvalue())
    assert ex.image_select.value == "mine.png" and ex.forward_count == 2
    assert tuple(ex.analysis().image.shape) == (3, 48, 40) and "query=(" in ex.marker.value
    upload("broken.png", b"<html>not an image</html>")
    assert ex.status.value.count("broken.png") == 1 and ex.image_select.value == "mine.png"


def test_module_names_are_escaped_in_the_caption() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    model = Net(HandMHSA(16, heads=4)).eval()
    model.layer1 = nn.Sequential(OrderedDict([(hostile, HandMHSA(16, heads=4))]))
    set_preprocess(model, 16, None, None)
    ex = self_attention_explorer(model, torch.rand(1, 3, 16, 16), static=False)
    assert ex.current().name == f"layer1.{hostile}"
    assert "<img" not in ex.caption.value
    assert "layer1.&lt;img src=x onerror=alert(1)&gt;" in ex.caption.value


def test_a_map_it_cannot_draw_says_why() -> None:
    """A ViT's map has a class token before the 2×2 patches (5 queries, no pixel grid): the
    explorer opens and says why it draws nothing, in one line naming the layer."""
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1,
                            num_classes=3).eval()
    set_preprocess(vit, 32, None, None)
    ex = AttentionExplorer(vit, torch.rand(1, 3, 32, 32), static=False)
    assert tuple(ex.current().value.shape) == (1, 3, 5, 5)
    assert "blocks.0.attn: the explorer draws queries on a pixel grid; 5 query tokens are not " \
           "a square grid" in ex.status.value
    assert ex.status.value.count("<b") == 1 and ex.render_count == 0


def test_context_weights_are_drawn_on_their_kinds_scale() -> None:
    """Global-context pooling weights (a softmax over positions) are drawn as the registry says
    for their kind: a multiple of uniform 1/K on the log scale — exactly ``to_unit`` of the
    recorded map — and stretched only when asked."""
    from timm.layers import GlobalContext

    torch.manual_seed(0)
    model = Net(GlobalContext(16, fuse_add=True, fuse_scale=True)).eval()
    set_preprocess(model, 16)
    image = attnviz.datasets.make_shapes(1, seed=5).images
    ex = AttentionExplorer(model, image, kinds=("context",), static=False)
    with torch.no_grad(), attnviz.record(model) as rec:
        model(attnviz.models.prepare(model, image))
    (recorded,) = rec.context.values()
    value = recorded[0].numpy()
    np.testing.assert_array_equal(_drawn(ex), to_unit(value, "context")[0])
    assert "× uniform" in ex.caption.value and "STRETCHED" not in ex.caption.value
    ex.stretch.value = True
    np.testing.assert_array_equal(_drawn(ex), value)
    assert "STRETCHED" in ex.caption.value

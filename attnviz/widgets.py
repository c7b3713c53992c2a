"""Interactive explorers (ipywidgets): controls + cached records + ``attnviz.plot`` drawing.

    explorer = attnviz.widgets.AttentionExplorer(model, attnviz.sample_images())
    explorer          # in JupyterLab: image, layer, channel, opacity, colour map, prediction

The forward pass runs once per image and is cached: moving the layer, channel or opacity
controls only re-draws. Run headless (papermill, nbclient) a figure inside a widget is not saved
in the notebook, so the explorer then also displays a static figure (``static="auto"``).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from PIL import Image as PILImage
from torch import nn

from . import plot
from .errors import AttnvizError, ImageError, NoAttentionError, ParameterError, missing_dependency
from .images import MAX_BYTES, check_upload, load_image, over_limit
from .models.preprocess import class_names, input_spec, model_device, prepare
from .record import AttentionRecord, find_attention, record

#: kinds the explorers draw (attention maps and other gates: see the records API)
DRAWABLE = ("channel", "spatial", "radix", "paths", "context")

try:
    import ipywidgets as W
    from IPython.display import Image as IPImage
    from IPython.display import display
except ModuleNotFoundError as e:
    raise missing_dependency("attnviz.widgets", e.name or "ipywidgets", "lab") from None

CMAPS = ("jet", "viridis", "magma", "inferno", "gray", "coolwarm")


@dataclass
class Analysis:
    """One image's cached forward pass: its records (CPU) and its top predictions."""

    image: torch.Tensor  # (3, H, W) in [0, 1], as shown
    records: list[AttentionRecord]
    top: list[tuple[str, float]]


def _encode(canvas: FigureCanvasAgg) -> bytes:
    """PNG of what the Agg canvas holds now (fast zlib level: speed over size)."""
    w, h = canvas.get_width_height()
    buf = io.BytesIO()
    PILImage.frombuffer("RGBA", (w, h), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a Figure to PNG bytes (Agg; no pyplot)."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def headless() -> bool:
    """True when no live Jupyter front end will show widgets (papermill / nbclient / scripts).

    ``ATTNVIZ_STATIC=1`` / ``0`` forces it; otherwise a kernel started by a Jupyter server has
    ``JPY_SESSION_NAME`` set, papermill and nbclient kernels do not."""
    forced = os.environ.get("ATTNVIZ_STATIC")
    if forced is not None:
        return forced not in ("0", "", "false", "False")
    return "JPY_SESSION_NAME" not in os.environ


def _as_images(images: object) -> dict[str, object]:
    if images is None:
        from .samples import sample_images

        images = sample_images()
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    elif isinstance(images, (str, Path, torch.Tensor)):
        images = [images]
    if isinstance(images, Mapping):
        return dict(images)
    out: dict[str, object] = {}
    for i, im in enumerate(images):  # type: ignore[union-attr]
        key = Path(im).name if isinstance(im, (str, Path)) else f"image {i}"
        out[key] = im
    if not out:
        raise ParameterError("AttentionExplorer needs at least one image")
    return out


class AttentionExplorer:
    """Explore every recorded attention weight of ``model`` on a set of images.

    Args:
        model: any model with supported attention modules (eval mode is set).
        images: paths, (3,H,W) tensors in [0, 1], a ``{name: image}`` dict, or None for the
            bundled samples. More can be added through the upload control.
        layers: optional layer pattern (as in ``attnviz.record``).
        kinds: optional kinds to show, e.g. ``("spatial",)`` (see :func:`spatial_explorer`).
        static: display a static figure below the widget: True, False or "auto" (headless).
        max_upload_bytes: refuse larger uploads with a message.
    """

    def __init__(
        self,
        model: nn.Module,
        images: object = None,
        layers: str | Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        static: bool | str = "auto",
        max_upload_bytes: int = MAX_BYTES,
        dpi: int = 80,
    ) -> None:
        self.model = model.eval()
        self.layers = layers
        self.kinds = tuple(kinds) if kinds is not None else DRAWABLE
        # fails early with a clear message (no attention, bad pattern, bad kind): one watched
        # pass on a blank image finds hand-written attention too
        size = input_spec(model).size
        blank = torch.zeros(1, 3, size, size, device=model_device(model))
        self.sites = [s for s in find_attention(model, blank, layers=layers)
                      if s.kind in self.kinds]
        if not self.sites:
            raise NoAttentionError(
                f"{type(model).__name__} has no attention of the kinds this explorer draws "
                f"({', '.join(self.kinds)})"
            )
        self.static = headless() if static == "auto" else bool(static)
        self.max_upload_bytes = max_upload_bytes
        self.dpi = dpi
        self.class_names = class_names(model)
        self.sources: dict[str, object] = _as_images(images)
        self._cache: dict[str, Analysis] = {}
        self.forward_count = 0
        self.render_count = 0
        self.figure: Figure | None = None
        self._background = None
        self.last_render_ms = 0.0
        self._drawn_image: torch.Tensor | None = None
        self._overlay = None
        self._fast_opacity = False

        names = [f"{i}: {s.name} ({s.kind})" for i, s in enumerate(self.sites)]
        self.image_select = W.Dropdown(options=list(self.sources), description="image")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="your image")
        self.layer_slider = W.IntSlider(
            0, 0, max(len(self.sites) - 1, 0), description="layer", continuous_update=False
        )
        self.layer_label = W.Label(names[0] if names else "")
        self.channel_slider = W.IntSlider(0, 0, 1, description="channel", continuous_update=False)
        self.opacity = W.FloatSlider(
            0.5, min=0, max=1, step=0.05, description="opacity", continuous_update=False
        )
        self.cmap = W.Dropdown(options=CMAPS, value=plot.DEFAULT_CMAP, description="colour map")
        self.stretch = W.Checkbox(
            False, description="stretch to own range (misleading!)", indent=False,
            layout=W.Layout(width="auto"),
        )
        self.prediction = W.HTML()
        self.status = W.HTML()
        self.caption = W.HTML()  # what is drawn: layer, values, raw range, colour scale
        self.marker = W.HTML()  # text stating what is drawn (tests / screenshots)
        self.canvas = W.Image(format="png")
        self._site_names = names
        for w in (
            self.image_select,
            self.layer_slider,
            self.channel_slider,
            self.opacity,
            self.cmap,
            self.stretch,
        ):
            w.observe(self._on_change, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.widget = W.VBox(
            [
                W.HBox([self.image_select, self.upload]),
                W.HBox([self.layer_slider, self.layer_label]),
                W.HBox([self.channel_slider, self.opacity]),
                W.HBox([self.cmap, self.stretch]),
                self.prediction,
                self.status,
                self.caption,
                self.canvas,
                self.marker,
            ]
        )
        self.render()

    # -- model side (cached) ---------------------------------------------------------------
    def analysis(self, key: str | None = None) -> Analysis:
        """The cached forward pass of image ``key`` (runs the model on first use)."""
        key = key or self.image_select.value
        if key not in self._cache:
            src = self.sources[key]
            image = src if isinstance(src, torch.Tensor) else load_image(src)
            x = prepare(self.model, image)
            with torch.no_grad(), record(self.model, self.layers, self.kinds) as rec:
                logits = self.model(x)
            self.forward_count += 1
            rec.cpu()
            probs = torch.softmax(logits.float(), 1)[0].cpu()
            top = probs.topk(min(3, probs.numel()))
            names = self.class_names or [str(i) for i in range(probs.numel())]
            self._cache[key] = Analysis(
                image=image.cpu(),
                records=rec.latest(),
                top=[(names[i], float(p)) for p, i in zip(top.values, top.indices, strict=True)],
            )
        return self._cache[key]

    def add_image(self, name: str, source: object) -> None:
        """Add an image (path, bytes, tensor) and select it."""
        if isinstance(source, bytes):
            source = load_image(source)
        self.sources[name] = source
        self.image_select.options = list(self.sources)
        self.image_select.value = name

    # -- drawing -----------------------------------------------------------------------------
    def current(self) -> AttentionRecord:
        return self.analysis().records[self.layer_slider.value]

    def _new_figure(self) -> Figure:
        # Fixed axes positions and artists created once, then updated in place: a control
        # change costs one Agg render, not a re-layout (see benchmarks/widget_latency.py).
        fig = Figure(figsize=(8, 3.4), dpi=self.dpi)
        FigureCanvasAgg(fig)
        self._ax_img = fig.add_axes((0.01, 0.04, 0.34, 0.80))
        plot.hide_axis(self._ax_img)
        pos = (0.43, 0.16, 0.45, 0.66)
        self._axes = {k: fig.add_axes(pos, label=k) for k in ("spatial", "channel", "radix")}
        plot.hide_axis(self._axes["spatial"])
        self._axes["channel"].set_ylim(0, 1)
        self._axes["channel"].set_yticks([0, 0.5, 1])
        self._cax = fig.add_axes((0.90, 0.16, 0.015, 0.66))
        # an opaque colour bar of its own, independent of the opacity slider
        self._bar_scale = ScalarMappable(norm=Normalize(0, 1), cmap=plot.DEFAULT_CMAP)
        self._colorbar = fig.colorbar(self._bar_scale, cax=self._cax)
        self._artists: dict[str, object] = {}
        return fig

    @property
    def weights_axes(self):
        """The axes showing the current layer's weights."""
        return next(ax for ax in self._axes.values() if ax.get_visible())

    def _show(self, kind: str) -> None:
        for k, ax in self._axes.items():
            ax.set_visible(k == kind)
        self._cax.set_visible(kind != "channel")

    def _draw_spatial(self, img: np.ndarray, value: np.ndarray, stretch: bool) -> None:
        ax, art = self._axes["spatial"], self._artists
        h, w = img.shape[:2]
        if "base" not in art:
            art["base"] = ax.imshow(img)
            art["overlay"] = ax.imshow(value, interpolation="bilinear")
        art["base"].set_data(img)
        overlay = art["overlay"]
        overlay.set_data(value)
        vmin, vmax = (float(value.min()), float(value.max())) if stretch else (0.0, 1.0)
        vmax = max(vmax, vmin + 1e-6)
        for a in (art["base"], overlay):
            a.set_extent((0, w, h, 0))
        overlay.set_clim(vmin, vmax)
        overlay.set_cmap(self.cmap.value)
        overlay.set_alpha(self.opacity.value)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        self._bar_scale.set_cmap(self.cmap.value)
        self._bar_scale.set_clim(vmin, vmax)
        self._colorbar.set_ticks([vmin, vmax])
        self._overlay = overlay

    def _draw_channel(self, value: np.ndarray, c: int) -> None:
        ax = self._axes["channel"]
        colors = np.tile(np.array(to_rgba("tab:blue")), (len(value), 1))
        colors[c] = to_rgba("tab:red")
        if "bars" not in self._artists:
            self._artists["bars"] = plot.draw_channel_bars(ax, value, highlight=c)
            ax.set_xlabel("")
            ax.set_ylabel("")
        bars = self._artists["bars"]
        bars.set_verts(plot.bar_verts(value))
        bars.set_facecolor(colors)
        ax.set_xlim(-0.5, len(value) - 0.5)

    def _draw_radix(self, value: np.ndarray, c: int) -> None:
        ax, art = self._axes["radix"], self._artists
        if "radix" not in art:
            art["radix"] = ax.imshow(value, aspect="auto", cmap="viridis", interpolation="nearest")
            art["radix_line"] = ax.axvline(c, color="r", lw=1)
        r, n = value.shape
        art["radix"].set_data(value)
        art["radix"].set_clim(0, 1)
        art["radix"].set_extent((-0.5, n - 0.5, r - 0.5, -0.5))
        art["radix_line"].set_xdata([c, c])
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(r - 0.5, -0.5)
        if len(ax.get_yticks()) != r:
            ax.set_yticks(range(r), [f"split {i}" for i in range(r)])
        self._bar_scale.set_cmap("viridis")
        self._bar_scale.set_clim(0, 1)
        self._colorbar.set_ticks([0, 1])

    def draw(self) -> Figure:
        """Draw the current control values into the explorer's figure (no model run if cached).

        Text (names, values, ranges) goes to ``self.caption``, not into the figure: glyph
        rendering is most of the cost of an Agg redraw."""
        a = self.analysis()
        r = a.records[self.layer_slider.value]
        value = r.value[0].numpy()
        if self.figure is None:
            self.figure = self._new_figure()
        img = plot.image_hwc(a.image)
        if self._drawn_image is not a.image:
            self._ax_img.cla()
            self._ax_img.imshow(img)
            plot.hide_axis(self._ax_img)
            self._drawn_image = a.image
        self._overlay = None
        head = f"<b>{_esc(r.name)}</b> · {r.kind} · {_esc(r.module_type)}"
        c = self.channel_slider.value
        if r.kind in ("spatial", "context"):
            self._show("spatial")
            stretch = self.stretch.value or r.kind == "context"
            self._draw_spatial(img, value, stretch)
            scale = "<b>STRETCHED</b> to its own range" if stretch else "fixed 0–1 colour scale"
            body = (
                f"{value.shape[0]}×{value.shape[1]} mask, {plot.mask_range_text(value)} · {scale}"
            )
        elif r.kind == "channel":
            self._show("channel")
            self._draw_channel(value, c)
            body = f"channel {c}: s = {value[c]:.3f} · mean {value.mean():.3f} over {len(value)}"
        else:  # radix / paths: (R, C)
            self._show("radix")
            self._draw_radix(value, c)
            col = ", ".join(f"{v:.2f}" for v in value[:, c])
            body = f"channel {c}: a = ({col}) · red line = selected channel"
        self.caption.value = f"{head}<br>{body}"
        return self.figure

    def _full_render(self) -> bytes:
        fig = self.draw()
        canvas = fig.canvas
        if self._overlay is None:
            canvas.draw()
            self._background = None
        else:  # keep everything but the overlay, so opacity changes only re-blend it
            self._overlay.set_visible(False)
            canvas.draw()
            self._background = canvas.copy_from_bbox(fig.bbox)
            self._overlay.set_visible(True)
            self._axes["spatial"].draw_artist(self._overlay)
        return _encode(canvas)

    def _alpha_render(self) -> bytes:
        canvas = self.figure.canvas
        canvas.restore_region(self._background)
        self._overlay.set_alpha(self.opacity.value)
        self._axes["spatial"].draw_artist(self._overlay)
        return _encode(canvas)

    def render(self) -> None:
        """Re-draw the figure from cached records and update the widgets."""
        t0 = time.perf_counter()
        try:
            a = self.analysis()
        except AttnvizError as e:
            self.status.value = f"<b style='color:#b00'>{_esc(str(e))}</b>"
            return
        r = a.records[self.layer_slider.value]
        n_channels = r.value.shape[-1] if r.kind in ("channel", "radix", "paths") else 1
        with self.channel_slider.hold_trait_notifications():
            self.channel_slider.max = max(n_channels - 1, 0)
            self.channel_slider.disabled = r.kind not in ("channel", "radix", "paths")
        self.opacity.disabled = r.kind not in ("spatial", "context")
        self.layer_label.value = self._site_names[self.layer_slider.value]
        self.prediction.value = "prediction: " + ", ".join(
            f"<b>{_esc(n)}</b> {p:.1%}" if i == 0 else f"{_esc(n)} {p:.1%}"
            for i, (n, p) in enumerate(a.top)
        )
        fast = self._fast_opacity and self._overlay is not None and self._background is not None
        png = self._alpha_render() if fast else self._full_render()
        self._fast_opacity = False
        self.canvas.value = png
        self.render_count += 1
        self.marker.value = (
            f"<code>attnviz-render {self.render_count}: "
            f"image={_esc(self.image_select.value)} layer={self.layer_slider.value} "
            f"channel={self.channel_slider.value} opacity={self.opacity.value:.2f}</code>"
        )
        self.last_render_ms = (time.perf_counter() - t0) * 1000

    def _on_change(self, change: dict) -> None:
        if change["owner"] is self.image_select or change["owner"] is self.layer_slider:
            self.status.value = ""
        self._fast_opacity = change["owner"] is self.opacity
        self.render()

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        name = f["name"] if isinstance(f, Mapping) else getattr(f, "name", "upload")
        content = bytes(f["content"] if isinstance(f, Mapping) else f.content)
        try:
            if len(content) > self.max_upload_bytes:
                raise ImageError(f"cannot read image {name}: "
                                 f"{over_limit(len(content), self.max_upload_bytes, 'MB')} "
                                 "(the upload limit)")
            check_upload(content, name)
            image = load_image(content, name=name)
        except AttnvizError as e:  # the message names the file once
            self.status.value = f"<b style='color:#b00'>{_esc(str(e))}</b>"
            return
        self.add_image(name, image)

    # -- display -----------------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        display(self.widget)
        if self.static:
            display(IPImage(data=figure_png(self.draw(), self.dpi)))


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def explore(model: nn.Module, images: object = None, **kwargs: object) -> AttentionExplorer:
    """Shorthand for ``AttentionExplorer(model, images, **kwargs)``."""
    return AttentionExplorer(model, images, **kwargs)


def channel_explorer(model: nn.Module, images: object = None, **kwargs: object):
    """An explorer of channel weights s(c) only (SE, CBAM channel, ECA, ...)."""
    return AttentionExplorer(model, images, kinds=("channel",), **kwargs)


def spatial_explorer(model: nn.Module, images: object = None, **kwargs: object):
    """An explorer of spatial masks A only (CBAM spatial, ...)."""
    return AttentionExplorer(model, images, kinds=("spatial",), **kwargs)


def split_explorer(model: nn.Module, images: object = None, **kwargs: object):
    """An explorer of split-attention (radix) and selective-kernel weights only."""
    return AttentionExplorer(model, images, kinds=("radix", "paths"), **kwargs)


__all__ = [
    "Analysis",
    "AttentionExplorer",
    "channel_explorer",
    "explore",
    "figure_png",
    "headless",
    "spatial_explorer",
    "split_explorer",
]

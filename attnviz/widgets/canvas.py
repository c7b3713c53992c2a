"""The explorer's figure: fixed axes and artists created once, then updated in place.

Attention maps are drawn like masks: the key weights of the chosen query (one head or the mean
of heads) over the image, on the scale of attention rows (:func:`attnviz.vis.to_unit`), with
the query marked +; :meth:`ExplorerFigure.cell_at` maps a click on the picture to a query cell.

A control change costs one Agg render, not a re-layout; an opacity change re-blends only the
mask over a saved background (see ``benchmarks/widget_latency.py``). Text (names, values,
ranges) goes to the explorer's caption, not into the figure: glyph rendering is most of the
cost of an Agg redraw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from .. import plot
from .. import plot_attention as pa
from ..errors import ParameterError
from ..kinds import MAP_KINDS
from ..record import AttentionRecord
from ..vis import CELLS, DEFAULT_CMAP, UNIFORM_LABEL, to_unit, uniform_ticks
from .common import encode_jpeg

BLUE, RED = np.array(to_rgba("tab:blue")), np.array(to_rgba("tab:red"))
MAX_BACKGROUNDS = 8  # cached backgrounds (one per image and panel layout)


@dataclass
class View:
    """The control values a figure is drawn from."""

    layer: int = 0
    channel: int = 0
    opacity: float = 0.5
    cmap: str = plot.DEFAULT_CMAP
    stretch: bool = False
    head: int | None = None  # attention maps: one head, or None for the mean of heads
    query: tuple[int, int] = (0, 0)  # attention maps: the query cell (row, col)


class ExplorerFigure:
    """Image on the left; the current layer's weights (mask, bars or radix map) on the right."""

    def __init__(self, dpi: int = 80) -> None:
        self.dpi = dpi
        fig = self.figure = Figure(figsize=(8, 3.4), dpi=dpi)
        FigureCanvasAgg(fig)
        self._ax_img = fig.add_axes((0.01, 0.04, 0.34, 0.80))
        plot.hide_axis(self._ax_img)
        pos = (0.43, 0.16, 0.45, 0.66)
        self.axes: dict[str, Axes] = {
            k: fig.add_axes(pos, label=k) for k in ("spatial", "channel", "radix")}
        plot.hide_axis(self.axes["spatial"])
        self.axes["channel"].set_ylim(0, 1)
        self.axes["channel"].set_yticks([0, 0.5, 1])
        # an opaque colour bar of its own, independent of the opacity slider: a gradient image
        # whose colour map changes without a redraw of its axes
        self._cax = fig.add_axes((0.90, 0.16, 0.015, 0.66))
        self._bar = self._cax.imshow(np.linspace(0, 1, 256)[:, None], aspect="auto",
                                     origin="lower", extent=(0, 1, 0, 1), cmap=plot.DEFAULT_CMAP)
        self._cax.set_xticks([])
        self._cax.yaxis.tick_right()
        self._art: dict[str, object] = {}
        self._drawn_image: torch.Tensor | None = None
        self._image_token = 0  # changes with the image shown
        self._backgrounds: dict[tuple, object] = {}
        self._key: tuple = ()
        self._dynamic: list = []  # artists drawn over the cached background
        self._marker = pa.query_marker(self.axes["spatial"])  # the query of attention maps
        self._last_scale: tuple = ()
        self.full_draws = 0  # backgrounds drawn (a new query, head or opacity draws none)

    @property
    def weights_axes(self) -> Axes:
        """The axes showing the current layer's weights."""
        return next(ax for ax in self.axes.values() if ax.get_visible())

    def _show(self, kind: str) -> None:
        for k, ax in self.axes.items():
            ax.set_visible(k == kind)
        self._cax.set_visible(kind != "channel")

    def _scale(self, cmap: str, vmin: float, vmax: float,
               ticks: tuple[np.ndarray, list[str]] | None = None) -> None:
        positions, labels = ticks or ([vmin, vmax], [f"{vmin:.3g}", f"{vmax:.3g}"])
        scale = (cmap, vmin, vmax, tuple(labels))
        if scale == self._last_scale:  # unchanged: no tick work on a new query or opacity
            return
        self._last_scale = scale
        self._bar.set_cmap(cmap)
        self._bar.set_extent((0, 1, vmin, vmax))
        self._cax.set_ylim(vmin, vmax)
        self._cax.set_yticks(positions, labels)

    def _spatial(self, img: np.ndarray, value: np.ndarray, v: View, stretch: bool,
                 ticks: tuple[np.ndarray, list[str]] | None = None) -> None:
        ax, art = self.axes["spatial"], self._art
        h, w = img.shape[:2]
        if "base" not in art:
            art["base"] = ax.imshow(img)
            art["overlay"] = ax.imshow(value, interpolation=CELLS)
        base, overlay = art["base"], art["overlay"]
        if art.get("base_token") != self._image_token:  # the image changed (it is static)
            base.set_data(img)
            base.set_extent((0, w, h, 0))
            art["base_token"] = self._image_token
        overlay.set_data(value)
        vmin, vmax = (float(value.min()), float(value.max())) if stretch else (0.0, 1.0)
        vmax = max(vmax, vmin + 1e-6)
        overlay.set_extent((0, w, h, 0))
        overlay.set_clim(vmin, vmax)
        overlay.set_cmap(v.cmap)
        overlay.set_alpha(v.opacity)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        self._scale(v.cmap, vmin, vmax, ticks)
        self._key = ("spatial", self._image_token, ticks is None, round(vmin, 5), round(vmax, 5))
        self._dynamic = [overlay, self._bar]
        for line in self._marker:
            line.set_visible(False)

    def _attention(self, img: np.ndarray, r: AttentionRecord, v: View) -> str:
        """The key weights of query ``v.query`` (head ``v.head``, None: the mean of heads):
        exactly :func:`attnviz.plot_attention.key_map` of the record, on the scale of
        attention rows (``v.stretch``: the row's own range); returns the caption line."""
        if r.value.ndim != 4:
            raise ParameterError(
                f"{r.name}: the explorer draws attention maps (B, heads, Q, K), this one is "
                f"{r.meta.get('layout') or tuple(r.value.shape)} (draw windows with "
                "attnviz.plot_attention after attnviz.record.geometry.window_to_image)")
        try:
            qg, kg = pa.grids(r.value, r.meta.get("q_grid"), r.meta.get("k_grid"))
        except ParameterError as e:
            raise ParameterError(f"{r.name}: the explorer draws queries on a pixel grid; {e}"
                                 ) from None
        query, head = self.clamp(r, v.query, v.head)
        kmap = pa.key_map(r.value, query, qg, kg, head)
        if v.stretch:
            self._spatial(img, kmap, v, True)
        else:
            self._spatial(img, to_unit(kmap, "attention", kmap.size)[0], v, False,
                          uniform_ticks())
        pa.place_query(self.axes["spatial"], query, qg, img.shape[:2])
        for line in self._marker:
            line.set_visible(True)
        self._dynamic += self._marker
        who = "mean of heads" if head is None else f"head {head}"
        scale = "<b>STRETCHED</b> to its own range" if v.stretch else UNIFORM_LABEL
        return (f"query {query} · {who} · key weights min {kmap.min():.3g}, max "
                f"{kmap.max():.3g}, uniform 1/K = {1 / kmap.size:.3g} · {scale} · "
                "click the picture to pick the query")

    @staticmethod
    def clamp(r: AttentionRecord, query: tuple[int, int], head: int | None
              ) -> tuple[tuple[int, int], int | None]:
        """``query`` and ``head`` brought into attention record ``r``'s query grid and heads."""
        qg, _ = pa.grids(r.value, r.meta.get("q_grid"), r.meta.get("k_grid"))
        query = (min(max(query[0], 0), qg[0] - 1), min(max(query[1], 0), qg[1] - 1))
        return query, head if head is None or head < r.value.shape[1] else None

    def cell_at(self, x: float, y: float, grid: tuple[int, int]) -> tuple[int, int] | None:
        """The cell of a ``grid`` (rows, cols) over the image under pixel ``(x, y)`` of the
        rendered picture (origin top left, as a browser reports a click), on the image or on
        the weights drawn over it; None elsewhere. Valid once the figure has been rendered."""
        height = self.figure.bbox.height
        for ax in (self._ax_img, self.axes["spatial"]):
            u, w = ax.transAxes.inverted().transform((x + 0.5, height - y - 0.5))
            if ax.get_visible() and 0 <= u <= 1 and 0 <= w <= 1:
                return (min(int((1 - w) * grid[0]), grid[0] - 1),
                        min(int(u * grid[1]), grid[1] - 1))
        return None

    def _channel(self, value: np.ndarray, c: int) -> None:
        ax, art = self.axes["channel"], self._art
        if "bars" not in art:
            art["bars"] = plot.draw_channel_bars(ax, value, highlight=c)
            ax.set_xlabel("")
            ax.set_ylabel("")
            # the selected channel stays visible when its s(c) is 0: a line and a marker
            art["line"] = ax.axvline(c, color=RED, lw=1.5, alpha=0.7)
            art["mark"] = ax.plot([c], [0.0], marker="v", color=RED, ms=6, clip_on=False)[0]
        colors = np.tile(BLUE, (len(value), 1))
        colors[c] = RED
        art["bars"].set_verts(plot.bar_verts(value))
        art["bars"].set_facecolor(colors)
        art["line"].set_xdata([c, c])
        art["mark"].set_data([c], [min(float(value[c]) + 0.06, 1.04)])
        ax.set_xlim(-0.5, len(value) - 0.5)
        self._key = ("channel", self._image_token, len(value))
        self._dynamic = [art["bars"], art["line"], art["mark"], *ax.spines.values()]

    def _radix(self, value: np.ndarray, c: int) -> None:
        ax, art = self.axes["radix"], self._art
        if "radix" not in art:
            art["radix"] = ax.imshow(value, aspect="auto", cmap=DEFAULT_CMAP, interpolation=CELLS)
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
        self._scale(DEFAULT_CMAP, 0.0, 1.0)
        self._key = ("radix", self._image_token, r, n)
        self._dynamic = [art["radix"], art["radix_line"], self._bar]

    def draw(self, image: torch.Tensor, r: AttentionRecord, v: View) -> str:
        """Draw record ``r`` of ``image`` with control values ``v``; returns the caption line."""
        img = plot.image_hwc(image)
        if self._drawn_image is not image:
            self._ax_img.cla()
            self._ax_img.imshow(img)
            plot.hide_axis(self._ax_img)
            self._drawn_image = image
            self._image_token += 1
        if r.kind == "attention":
            self._show("spatial")
            return self._attention(img, r, v)
        value = r.value[0].numpy()
        c = min(v.channel, value.shape[-1] - 1)
        if r.kind in MAP_KINDS:  # on its kind's scale (attnviz.kinds): fixed 0–1 or × uniform
            self._show("spatial")
            unit, label = to_unit(value, r.kind)
            uniform = label == UNIFORM_LABEL
            if v.stretch:
                self._spatial(img, value, v, True)
            else:
                self._spatial(img, unit, v, False, uniform_ticks() if uniform else None)
            scale = ("<b>STRETCHED</b> to its own range" if v.stretch
                     else label if uniform else "fixed 0–1 colour scale")
            what = "weights" if uniform else "mask"
            extra = f", uniform 1/K = {1 / value.size:.3g}" if uniform else ""
            return (f"{value.shape[0]}×{value.shape[1]} {what}, {plot.mask_range_text(value)}"
                    f"{extra} · {scale}")
        if r.kind == "channel":
            self._show("channel")
            self._channel(value, c)
            return (f"channel {c}: s = {value[c]:.3f} (red line and marker) · mean "
                    f"{value.mean():.3f} over {len(value)}")
        self._show("radix")  # radix / paths: (R, C)
        self._radix(value, c)
        col = ", ".join(f"{x:.2f}" for x in value[:, c])
        return f"channel {c}: a = ({col}) · red line = selected channel"

    def render(self) -> bytes:
        """JPEG of the figure: a cached background (axes, ticks, colour bar, the image) plus the
        current weights drawn over it; the background is drawn only when its layout changes."""
        canvas = self.figure.canvas
        bg = self._backgrounds.get(self._key)
        if bg is None:
            for a in self._dynamic:
                a.set_visible(False)
            canvas.draw()
            self.full_draws += 1
            bg = self._backgrounds[self._key] = canvas.copy_from_bbox(self.figure.bbox)
            while len(self._backgrounds) > MAX_BACKGROUNDS:
                self._backgrounds.pop(next(iter(self._backgrounds)))
            for a in self._dynamic:
                a.set_visible(True)
        canvas.restore_region(bg)
        for a in self._dynamic:
            self.figure.draw_artist(a)
        return encode_jpeg(canvas)

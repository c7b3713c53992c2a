"""``AttentionExplorer``: the controls, wired to the cached analyses and the figure.

One explorer for every kind it draws: masks, channel weights, splits and attention maps. On an
attention map it shows a head selector ("mean of heads" or one head) and the query cell, picked
by clicking the picture (``ipyevents``) or with the row / column sliders.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from matplotlib.figure import Figure
from torch import nn

from .. import plot_attention as pa
from ..engine import random_weights_note
from ..errors import AttnvizError, ParameterError
from ..images import MAX_BYTES
from ..lessons.projection import projection_scale
from ..models.preprocess import input_spec
from ..record import AttentionRecord
from .analysis import Analyser, Analysis, drawable
from .canvas import ExplorerFigure
from .common import esc
from .controls import ExplorerControls, limits_text, listen_to_clicks
from .snapshot import Snapshot, hide_snapshot_css
from .sources import DISPLAY_SIDE, MAX_UPLOADS, ImageStore, read_upload


class AttentionExplorer(ExplorerControls):
    """Explore every recorded attention weight of ``model`` on a set of images.

    Args:
        model: any model with supported attention modules (eval mode is set).
        images: paths, (3,H,W) tensors in [0, 1], a ``{name: image}`` dict, or None for the
            bundled samples. More can be added through the upload control.
        layers: optional layer pattern (as in ``attnviz.record``).
        kinds: optional kinds to show, e.g. ``("spatial",)`` (see :func:`spatial_explorer`).
        static: leave a static image of the last view in the notebook, below the widget (hidden
            while the live widget shows): True, False, or "auto" (= True).
        max_upload_bytes: refuse larger uploads with a message.
        max_uploads: uploads kept (the oldest is dropped).
        output: which part of the model's output holds the logits (see
            :func:`attnviz.outputs.interpret`); None: found automatically. A model without
            class prediction (detector, feature extractor) shows "no class prediction".
        query: the (row, col) query cell attention maps open on (default: the centre of the
            first attention map's query grid); a cell outside that grid is refused.
    """

    def __init__(self, model: nn.Module, images: object = None,
                 layers: str | Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                 static: bool | str = "auto", max_upload_bytes: int = MAX_BYTES, dpi: int = 80,
                 max_uploads: int = MAX_UPLOADS, output: object = None,
                 query: tuple[int, int] | None = None) -> None:
        self.analyser = Analyser(model, layers, tuple(kinds) if kinds is not None else drawable(),
                                 output=output)
        self.model, self.sites = self.analyser.model, self.analyser.sites
        side = max(DISPLAY_SIDE, 2 * input_spec(model).size)
        self.store = ImageStore(images, side, max_uploads)
        self.static = static == "auto" or bool(static)
        dpi = round(dpi * projection_scale())  # projector mode: a larger picture
        self.max_upload_bytes, self.dpi = max_upload_bytes, dpi
        self.uid = uuid.uuid4().hex[:12]
        self.fig = ExplorerFigure(dpi)
        self.render_count, self.last_render_ms = 0, 0.0
        self._jpeg, self.snapshot = b"", Snapshot(self.uid)
        names = [f"{i}: {s.name} ({s.kind})" for i, s in enumerate(self.sites)]
        super().__init__(self.store.labels, names, sorted({s.kind for s in self.sites}),
                         limits_text(max_upload_bytes, side), self.uid)
        for w in (self.image_select, self.layer_slider, self.channel_slider, self.opacity,
                  self.cmap, self.stretch, self.head_select, self.row, self.col):
            w.observe(self._on_change, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.clicks = listen_to_clicks(self.canvas, self._on_click)
        try:
            first = self.analysis()
        except AttnvizError:
            first = None  # render() shows the error
        with self._hold():
            self.layer_slider.value = self.analyser.opening_layer(first) if first else 0
            if first is not None:
                self._open_on(first, query)
        self.render()

    def _open_on(self, first: Analysis, query: tuple[int, int] | None) -> None:
        """Put the query sliders on ``query`` (default: the centre cell) of the first attention
        map's query grid; a query outside that grid is refused."""
        grids = [(self._grid(r), r.name) for r in first.records if r.kind == "attention"]
        grids = [(g, name) for g, name in grids if g is not None]
        if not grids:
            return  # no attention map, or none on a pixel grid (render says why)
        grid, name = grids[0]
        if query is None:
            query = (grid[0] // 2, grid[1] // 2)
        elif not (0 <= query[0] < grid[0] and 0 <= query[1] < grid[1]):
            raise ParameterError(f"query {tuple(query)} is outside the {grid[0]}×{grid[1]} "
                                 f"query grid of {name}")
        self.row.max, self.col.max = grid[0] - 1, grid[1] - 1
        self.row.value, self.col.value = query

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.analyser.kinds

    @property
    def forward_count(self) -> int:
        """Forward passes run so far (one per image content)."""
        return self.analyser.forward_count

    # -- model side (cached by content) ------------------------------------------------------
    def analysis(self, label: str | None = None) -> Analysis:
        """The cached forward pass of image ``label`` (runs the model on first use)."""
        label = label or self.image_select.value
        size = input_spec(self.model).size
        return self.analyser.get(self.store.digest(label), lambda: (
            self.store.load(label), self.store.model_input(label, size)))

    def add_image(self, name: str, source: object) -> str:
        """Add an image (path, (3,H,W) tensor, PIL image) under a new label, select it and show
        it; returns the label (``name``, or ``name (2)`` when the name is taken)."""
        label = self.store.add(name, source)
        self._select(label)
        return label

    def current(self) -> AttentionRecord:
        return self.analysis().records[self.layer_slider.value]

    @property
    def figure(self) -> Figure:
        return self.fig.figure

    @property
    def weights_axes(self):
        """The axes showing the current layer's weights."""
        return self.fig.weights_axes

    # -- drawing -----------------------------------------------------------------------------
    def _compose(self) -> str:
        """Draw the current control values into the figure; returns the caption (HTML)."""
        a = self.analysis()
        r = a.records[self.layer_slider.value]
        body = self.fig.draw(a.image, r, self.view())
        return f"<b>{esc(r.name)}</b> · {r.kind} · {esc(r.module_type)}<br>{body}"

    def draw(self) -> Figure:
        """Draw the current control values into the figure (no model run if cached)."""
        self.caption.value = self._compose()
        return self.fig.figure

    def _full_render(self) -> bytes:
        """Draw and encode the current view (JPEG)."""
        self.draw()
        return self.fig.render()

    def render(self) -> None:
        """Re-draw the figure from cached records and update the widgets: the image first
        (what the user waits for; the front end applies updates in order), then the text."""
        t0 = time.perf_counter()
        label = self.image_select.value
        try:
            a = self.analysis()
            r = a.records[self.layer_slider.value]
            caption = self._compose()  # a map it cannot draw says why (e.g. no token grid)
        except AttnvizError as e:
            self.status.value = f"<b style='color:#b00'>{esc(str(e))}</b>"
            return
        jpeg = self._jpeg = self.fig.render()
        self.canvas.value = jpeg
        with self._hold():  # a smaller channel range clamps the channel: no second redraw
            self._fit(r)
        self.render_count += 1
        state = (f"image={label} layer={self.layer_slider.value} "
                 f"channel={self.channel_slider.value} opacity={self.opacity.value:.2f}"
                 + self._query_text(r, " query={} head={}", "mean", "{}"))
        warning = (random_weights_note(self.model)
                   or self.analyser.out_of_distribution(self.store[label].origin))
        self.show_text(caption, a.prediction_text(), warning,
                       f"<code>attnviz-render {self.render_count}: {esc(state)}</code>"
                       + hide_snapshot_css(self.uid))
        self.snapshot.update(jpeg, self._describe())
        self.last_render_ms = (time.perf_counter() - t0) * 1000

    @staticmethod
    def _grid(r: AttentionRecord) -> tuple[int, int] | None:
        """The query grid of attention record ``r``; None where its queries are not a pixel
        grid the explorer can draw (windows, class tokens without a known grid)."""
        try:
            grid, _ = pa.grids(r.value, r.meta.get("q_grid"), r.meta.get("k_grid"))
        except AttnvizError:
            return None
        return grid if r.value.ndim == 4 else None

    def _fit(self, r: AttentionRecord) -> None:
        """Fit the controls to record ``r`` (channel range, heads, query grid)."""
        if r.kind == "attention":
            self.fit_to(r.kind, 1, r.value.shape[1], self._grid(r) or (1, 1))
        else:
            self.fit_to(r.kind, r.value.shape[-1] if r.kind in ("channel", "radix", "paths")
                        else 1)

    def _query_text(self, r: AttentionRecord, form: str, mean: str = "mean of heads",
                    one: str = "head {}") -> str:
        """``form`` filled with the query cell and the head shown (``mean`` for the mean of
        heads, else ``one``) for an attention record; "" for other kinds."""
        if r.kind != "attention" or self._grid(r) is None:
            return ""
        v = self.view()
        query, head = self.fig.clamp(r, v.query, v.head)
        return form.format(query, mean if head is None else one.format(head))

    # -- events ------------------------------------------------------------------------------
    def pick(self, cell: tuple[int, int]) -> None:
        """Show the query ``cell`` (row, col) of the current attention map: one redraw."""
        with self._hold():
            self.row.value, self.col.value = cell
        self.render()

    def _on_click(self, event: dict) -> None:
        """A click on the picture (``ipyevents``; ``dataX, dataY``: the pixel of the picture
        as rendered, whatever size the browser shows it at) picks the query cell under it."""
        r = self.current()
        grid = self._grid(r) if r.kind == "attention" else None
        if grid is None or "dataX" not in event:
            return
        cell = self.fig.cell_at(float(event["dataX"]), float(event["dataY"]), grid)
        if cell is not None:
            self.pick(cell)
    def _select(self, label: str) -> None:
        """Show image ``label``: one redraw, never a flash of another image."""
        with self._hold():
            self.image_select.options = self.store.labels
            self.image_select.value = label
        self.status.value = ""
        self.render()

    def _on_change(self, change: dict) -> None:
        if self._quiet:
            return
        if change["owner"] is self.image_select or change["owner"] is self.layer_slider:
            self.status.value = ""
        self.render()

    def _on_upload(self, change: dict) -> None:
        upload = read_upload(change["new"])
        if upload is None:
            return
        name, content = upload
        self.status.value = f"reading {esc(name)} …"
        try:
            label, dropped = self.store.add_upload(name, content, self.max_upload_bytes)
        except AttnvizError as e:  # the message names the file once
            self.status.value = f"<b style='color:#b00'>{esc(str(e))}</b>"
            return
        finally:
            self.upload.value = ()  # frees the bytes; the same file can be uploaded again
        self.analyser.forget(dropped)
        self._select(label)

    # -- display -----------------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        jpeg = (self._jpeg or self._full_render()) if self.static else None
        self.snapshot.show(self.widget, jpeg, self._describe())

    def _describe(self) -> str:
        """The current view in words (for the still image)."""
        a = self.analysis()
        r = a.records[self.layer_slider.value]
        shape = "×".join(str(d) for d in r.value.shape[1:])
        return (f"image {self.image_select.value}, layer "
                f"{self.site_names[self.layer_slider.value]} {shape}"
                f"{self._query_text(r, ', query {}, {}')}; {a.prediction_text()}")

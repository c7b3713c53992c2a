"""Explore self-attention maps: pick a query pixel, see where it looks.

    attnviz.widgets.SelfAttentionExplorer(attnviz.load_model("demo-botnet"))

Controls: image (or upload your own), attention layer, head ("mean of heads" or one), query
row and column,
opacity, colour map, stretch (labelled). The key map is the recorded row of the attention map
for that query (no model run on a control change), drawn as a multiple of the uniform weight
1/K on a log scale (:func:`attnviz.vis.to_unit`; a row over 64 keys is invisible on a 0–1
scale) with its raw range printed. It opens on ``query`` (default: the centre cell); below the
live widget the notebook keeps a still image of the last view (:mod:`.snapshot`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import ipywidgets as W
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from .. import plot_attention as pa
from ..errors import AttnvizError, NoAttentionError, ParameterError
from ..images import MAX_BYTES
from ..lessons.projection import projection_scale
from ..models.preprocess import input_spec, model_device, prepare
from ..record import AttentionRecord, find_attention, record
from ..vis import DEFAULT_CMAP, UNIFORM_LABEL
from .common import CMAPS, encode_jpeg, esc
from .controls import limits_text
from .snapshot import Snapshot, hide_snapshot_css
from .sources import DISPLAY_SIDE, MAX_UPLOADS, ImageStore, read_upload

#: the head selector's value for the mean over heads (a ``None`` value shows blank in a
#: Dropdown in JupyterLab)
MEAN_OF_HEADS = -1


@dataclass
class AttentionView:
    """One image's attention maps (CPU), keyed like ``rec.attention``."""

    image: torch.Tensor
    records: dict[str, AttentionRecord]


class SelfAttentionExplorer:
    """Query → key maps of every self-attention layer of ``model`` on ``images``.

    Args:
        model: a model with self-attention (softmax weights entering a matmul).
        images: what :func:`attnviz.widgets.sources._as_images` accepts (default: samples).
        layers: layer-name patterns to explore (default: every attention layer).
        query: the (row, col) query cell it opens on (default: the centre of the grid).
        static: keep a still image of the last view below the widget (``"auto"``: yes).
        dpi: resolution of the drawn figure.
        max_upload_bytes: refuse larger uploads with a message.
    """

    def __init__(self, model: nn.Module, images: object = None, layers: str | None = None,
                 query: tuple[int, int] | None = None, static: bool | str = "auto",
                 dpi: int = 80, max_upload_bytes: int = MAX_BYTES) -> None:
        self.model = model.eval()
        self.layers, self.dpi = layers, round(dpi * projection_scale())  # projector mode
        self.uid = uuid.uuid4().hex[:12]
        self.snapshot, self._jpeg = Snapshot(self.uid), b""
        self._fig: Figure | None = None
        self._layout: tuple = ()
        self.figures_built = 0  # figures built (a new query or head reuses the last one)
        size = input_spec(model).size
        blank = torch.zeros(1, 3, size, size, device=model_device(model))
        self.sites = [s for s in find_attention(model, blank, layers=layers)
                      if s.kind == "attention"]
        if not self.sites:
            raise NoAttentionError(f"{type(model).__name__} has no self-attention map (softmax "
                                   "weights entering a matmul) to explore")
        self.static = static == "auto" or bool(static)
        side = max(DISPLAY_SIDE, 2 * size)
        self.store, self.max_upload_bytes = ImageStore(images, side, MAX_UPLOADS), max_upload_bytes
        self._cache: dict[str, AttentionView] = {}  # by image content
        self.forward_count = 0
        self.image_select = W.Dropdown(options=self.store.labels, description="image")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="your image")
        self.status = W.HTML()  # upload errors
        self.layer_select = W.Dropdown(options=[s.name for s in self.sites], description="layer")
        self.head_select = W.Dropdown(description="head")
        self.row = W.IntSlider(0, 0, 0, description="query row", continuous_update=False)
        self.col = W.IntSlider(0, 0, 0, description="query col", continuous_update=False)
        self.opacity = W.FloatSlider(0.6, min=0, max=1, step=0.05, description="opacity",
                                     continuous_update=False)
        self.cmap = W.Dropdown(options=CMAPS, value=DEFAULT_CMAP, description="colour map")
        self.stretch = W.Checkbox(False, description="stretch to own range (misleading!)",
                                  indent=False)
        self.caption = W.HTML()
        self.canvas = W.Image(format="jpeg")
        self._sync_controls()
        if query is not None:
            if not (0 <= query[0] <= self.row.max and 0 <= query[1] <= self.col.max):
                raise ParameterError(f"query {tuple(query)} is outside the "
                                     f"{self.grid[0]}×{self.grid[1]} query grid")
            self.row.value, self.col.value = query
        else:
            self.row.value, self.col.value = self.grid[0] // 2, self.grid[1] // 2
        for w in (self.head_select, self.row, self.col, self.opacity, self.cmap, self.stretch):
            w.observe(lambda _c: self.render(), names="value")
        for w in (self.image_select, self.layer_select):
            w.observe(lambda _c: (self._sync_controls(), self.render()), names="value")
        self.upload.observe(self._on_upload, names="value")
        self.widget = W.VBox([W.HBox([self.image_select, self.upload,
                                      W.HTML(limits_text(max_upload_bytes, side))]),
                              self.status,
                              W.HBox([self.layer_select, self.head_select]),
                              W.HBox([self.row, self.col]),
                              W.HBox([self.opacity, self.cmap, self.stretch]),
                              self.caption, self.canvas])
        self.widget.add_class(f"attnviz-explorer-{self.uid}")
        self.render()

    def view(self, key: str | None = None) -> AttentionView:
        """The cached attention maps of image ``key`` (runs the model on first use)."""
        key = key or self.image_select.value
        digest = self.store.digest(key)
        if digest not in self._cache:
            size = input_spec(self.model).size
            x = prepare(self.model, self.store.model_input(key, size))
            with torch.no_grad(), record(self.model, self.layers, ("attention",)) as rec:
                self.model(x)
            self.forward_count += 1
            rec = rec.cpu()
            self._cache[digest] = AttentionView(self.store.load(key),
                                                {r.key: r for r in rec.latest()})
        return self._cache[digest]

    def _on_upload(self, change: dict) -> None:
        """Add an uploaded image and show it (errors: one line naming the file)."""
        upload = read_upload(change["new"])
        if upload is None:
            return
        try:
            label, dropped = self.store.add_upload(*upload, self.max_upload_bytes)
        except AttnvizError as e:
            self.status.value = f"<b style='color:#b00'>{esc(str(e))}</b>"
            return
        finally:
            self.upload.value = ()  # frees the bytes; the same file can be uploaded again
        for d in dropped:
            self._cache.pop(d, None)
        self.status.value = ""
        self.image_select.options = self.store.labels
        self.image_select.value = label

    def current(self) -> AttentionRecord:
        """The record of the selected layer for the selected image."""
        return self.view().records[self.layer_select.value]

    def _sync_controls(self) -> None:
        r = self.current()
        heads = r.value.shape[1]
        q = r.value.shape[2]
        grid = r.meta.get("q_grid") or pa._grid_of(r.value, None, q, "query")
        options = [("mean of heads", MEAN_OF_HEADS), *((f"head {h}", h) for h in range(heads))]
        if [o[1] for o in self.head_select.options] != [o[1] for o in options]:
            self.head_select.options = options
            self.head_select.value = MEAN_OF_HEADS
        self.row.max, self.col.max = grid[0] - 1, grid[1] - 1
        self.grid = tuple(grid)

    def query(self) -> tuple[int, int]:
        """The selected query cell (row, col)."""
        return self.row.value, self.col.value

    @property
    def head(self) -> int | None:
        """The selected head (``None``: the mean of heads)."""
        h = self.head_select.value
        return None if h in (None, MEAN_OF_HEADS) else h

    def key_map(self):
        """Exactly what is drawn: the recorded key weights of the chosen query and head."""
        r = self.current()
        return pa.key_map(r.value, self.query(), self.grid, r.meta.get("k_grid"), self.head)

    def draw(self) -> Figure:
        """The current view as a Figure: one figure, rebuilt only when the image, layer, colour
        map or scale changes; a new query, head or opacity updates its artists
        (:func:`attnviz.plot_attention.update_key_map`)."""
        r, v = self.current(), self.view()
        layout = (id(v), r.key, self.cmap.value, self.stretch.value)
        if self._fig is None or layout != self._layout:
            self._fig = pa.attention_overlay(v.image, r.value, self.query(), self.grid,
                                             r.meta.get("k_grid"), self.head,
                                             alpha=self.opacity.value, cmap=self.cmap.value,
                                             stretch=self.stretch.value, title=r.name)
            FigureCanvasAgg(self._fig)
            self._fig.set_dpi(self.dpi)
            self._fig.canvas.draw()  # lays it out once; later redraws keep that layout
            self._fig.set_layout_engine("none")
            self._layout = layout
            self.figures_built += 1
        else:
            pa.update_key_map(self._fig, r.value, self.query(), self.grid, r.meta.get("k_grid"),
                              self.head, alpha=self.opacity.value, title=r.name)
        return self._fig

    def render(self) -> None:
        """Redraw from the cached records (no model run); the still image follows."""
        km = self.key_map()
        canvas = self.draw().canvas
        canvas.draw()
        self._jpeg = self.canvas.value = encode_jpeg(canvas)
        scale = "STRETCHED to own range" if self.stretch.value else UNIFORM_LABEL
        who = "mean of heads" if self.head is None else f"head {self.head}"
        self.caption.value = (f"{esc(self.layer_select.value)} · query {self.query()} · {who} · "
                              f"key weights min {km.min():.3g}, max {km.max():.3g}, uniform "
                              f"{1 / km.size:.3g} ({esc(scale)})" + hide_snapshot_css(self.uid))
        self.snapshot.update(self._jpeg, self.describe())

    def describe(self) -> str:
        """The current view in words (for the still image)."""
        who = "mean of heads" if self.head is None else f"head {self.head}"
        return (f"image {self.image_select.value}, layer {self.layer_select.value}, "
                f"query {self.query()}, {who}")

    def _ipython_display_(self) -> None:
        self.snapshot.show(self.widget, self._jpeg if self.static else None, self.describe())

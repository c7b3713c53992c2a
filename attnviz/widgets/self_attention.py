"""Explore self-attention maps: pick a query pixel, see where it looks.

    attnviz.widgets.SelfAttentionExplorer(attnviz.load_model("demo-botnet"))

Controls: image, attention layer, head (mean or one), query row and column, opacity, colour
map, stretch (labelled). The key map is the recorded row of the attention map for that query
(no model run on a control change), drawn on the fixed 0–1 scale with its raw range printed.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as W
import torch
from IPython.display import display
from torch import nn

from .. import plot_attention as pa
from ..errors import NoAttentionError
from ..images import load_image
from ..models.preprocess import input_spec, model_device, prepare
from ..plot import DEFAULT_CMAP
from ..record import AttentionRecord, find_attention, record
from ..terminal import text_name
from .common import CMAPS, figure_png, headless
from .sources import _as_images


@dataclass
class AttentionView:
    """One image's attention maps (CPU), keyed like ``rec.attention``."""

    image: torch.Tensor
    records: dict[str, AttentionRecord]


class SelfAttentionExplorer:
    """Query → key maps of every self-attention layer of ``model`` on ``images``."""

    def __init__(self, model: nn.Module, images: object = None, layers: str | None = None,
                 static: bool | str = "auto", dpi: int = 80) -> None:
        self.model = model.eval()
        self.layers, self.dpi = layers, dpi
        size = input_spec(model).size
        blank = torch.zeros(1, 3, size, size, device=model_device(model))
        self.sites = [s for s in find_attention(model, blank, layers=layers)
                      if s.kind == "attention"]
        if not self.sites:
            raise NoAttentionError(f"{type(model).__name__} has no self-attention map (softmax "
                                   "weights entering a matmul) to explore")
        self.static = headless() if static == "auto" else bool(static)
        self.sources = _as_images(images)
        self._cache: dict[str, AttentionView] = {}
        self.forward_count = 0
        self.image_select = W.Dropdown(options=list(self.sources), description="image")
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
        self.canvas = W.Image(format="png")
        self._sync_controls()
        for w in (self.head_select, self.row, self.col, self.opacity, self.cmap, self.stretch):
            w.observe(lambda _c: self.render(), names="value")
        for w in (self.image_select, self.layer_select):
            w.observe(lambda _c: (self._sync_controls(), self.render()), names="value")
        self.widget = W.VBox([W.HBox([self.image_select, self.layer_select, self.head_select]),
                              W.HBox([self.row, self.col]),
                              W.HBox([self.opacity, self.cmap, self.stretch]),
                              self.caption, self.canvas])
        self.render()

    def view(self, key: str | None = None) -> AttentionView:
        """The cached attention maps of image ``key`` (runs the model on first use)."""
        key = key or self.image_select.value
        if key not in self._cache:
            src = self.sources[key]
            image = src if isinstance(src, torch.Tensor) else load_image(src)
            x = prepare(self.model, image)
            with torch.no_grad(), record(self.model, self.layers, ("attention",)) as rec:
                self.model(x)
            self.forward_count += 1
            rec = rec.cpu()
            self._cache[key] = AttentionView(image.cpu(), {r.key: r for r in rec.latest()})
        return self._cache[key]

    def current(self) -> AttentionRecord:
        """The record of the selected layer for the selected image."""
        return self.view().records[self.layer_select.value]

    def _sync_controls(self) -> None:
        r = self.current()
        heads = r.value.shape[1]
        q = r.value.shape[2]
        grid = r.meta.get("q_grid") or pa._grid_of(r.value, None, q, "query")
        options = [("mean", None), *((str(h), h) for h in range(heads))]
        if [o[1] for o in self.head_select.options] != [o[1] for o in options]:
            self.head_select.options = options
            self.head_select.value = None
        self.row.max, self.col.max = grid[0] - 1, grid[1] - 1
        self.grid = tuple(grid)

    def query(self) -> tuple[int, int]:
        return self.row.value, self.col.value

    def key_map(self):
        """Exactly what is drawn: the recorded key weights of the chosen query and head."""
        r = self.current()
        return pa.key_map(r.value, self.query(), self.grid, r.meta.get("k_grid"),
                          self.head_select.value)

    def draw(self):
        """The current view as a Figure."""
        r, v = self.current(), self.view()
        return pa.attention_overlay(v.image, r.value, self.query(), self.grid,
                                    r.meta.get("k_grid"), self.head_select.value,
                                    alpha=self.opacity.value, cmap=self.cmap.value,
                                    stretch=self.stretch.value, title=r.name)

    def render(self) -> None:
        """Redraw from the cached records (no model run)."""
        km = self.key_map()
        self.canvas.value = figure_png(self.draw(), self.dpi)
        head = self.head_select.value
        scale = "STRETCHED to own range" if self.stretch.value else "fixed 0–1 scale"
        who = "mean of heads" if head is None else f"head {head}"
        layer = html.escape(text_name(str(self.layer_select.value)))  # a module name is not HTML
        self.caption.value = (f"{layer} · query {self.query()} · {who} · "
                              f"key weights min {km.min():.3g}, max {km.max():.3g} "
                              f"({scale})")

    def _ipython_display_(self) -> None:
        display(self.widget)
        if self.static:
            from IPython.display import Image as IPImage

            display(IPImage(data=figure_png(self.draw(), self.dpi)))

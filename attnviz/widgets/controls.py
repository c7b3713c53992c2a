"""The explorer's widgets and their layout (no behaviour: see :mod:`.explorer`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import ipywidgets as W

from .. import plot
from ..images import MAX_PIXELS
from .canvas import View
from .common import CMAPS, esc

#: which layer kinds each optional control acts on; a control that acts on none of an
#: explorer's kinds is not shown at all, one that does not act on the current layer is hidden
USES: dict[str, tuple[str, ...]] = {
    "channel_slider": ("channel", "radix", "paths"),
    "opacity": ("spatial", "context", "attention"),
    "cmap": ("spatial", "context", "attention"),
    "stretch": ("spatial", "attention"),
    "head_select": ("attention",),
    "row": ("attention",),
    "col": ("attention",),
}
#: the head selector's value for the mean over heads (a ``None`` value shows blank in a
#: Dropdown in JupyterLab)
MEAN_OF_HEADS = -1


def limits_text(max_bytes: int, side: int) -> str:
    """The upload limits, stated next to the upload button."""
    return (f"<small>at most {max_bytes / 1e6:g} MB and {MAX_PIXELS / 1e6:g} megapixels; "
            f"shown and analysed at ≤ {side} px</small>")


def listen_to_clicks(image: W.Image, handler: Callable[[dict], None]) -> object | None:
    """Call ``handler(event)`` on each click on ``image`` (``ipyevents``: the event has the
    picture's pixel as ``dataX, dataY``). Returns the listener, or None without ``ipyevents``
    (then the query sliders are the way to pick)."""
    try:
        from ipyevents import Event
    except ModuleNotFoundError:
        return None
    listener = Event(source=image, watched_events=["click"], prevent_default_action=True)
    listener.on_dom_event(handler)
    return listener


class ExplorerControls:
    """Image picker and upload, layer and channel sliders, head and query (row, column) of
    attention maps, opacity, colour map, stretch, the prediction and status lines, the caption,
    the image, and a hidden marker for tests."""

    def __init__(self, labels: Sequence[str], site_names: Sequence[str],
                 kinds: Sequence[str], limits: str, uid: str) -> None:
        self.site_names = list(site_names)
        self._quiet = False  # True while controls are changed without a redraw
        self.image_select = W.Dropdown(options=list(labels), description="image")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="your image",
                                   layout=W.Layout(width="auto"))
        self.limits = W.HTML(limits)
        self.layer_slider = W.IntSlider(0, 0, max(len(site_names) - 1, 0), description="layer",
                                        continuous_update=False)
        self.layer_label = W.Label(site_names[0] if site_names else "")
        self.channel_slider = W.IntSlider(0, 0, 1, description="channel",
                                          continuous_update=False)
        self.head_select = W.Dropdown(options=[("mean of heads", MEAN_OF_HEADS)],
                                      value=MEAN_OF_HEADS, description="head")
        self.row = W.IntSlider(0, 0, 0, description="query row", continuous_update=False)
        self.col = W.IntSlider(0, 0, 0, description="query col", continuous_update=False)
        self.opacity = W.FloatSlider(0.5, min=0, max=1, step=0.05, description="opacity",
                                     continuous_update=False)
        self.cmap = W.Dropdown(options=CMAPS, value=plot.DEFAULT_CMAP, description="colour map")
        self.stretch = W.Checkbox(False, description="stretch to own range (misleading!)",
                                  indent=False, layout=W.Layout(width="auto"))
        self.prediction = W.HTML()
        self.warning = W.HTML()  # out-of-distribution images
        self.status = W.HTML()  # upload errors, "reading ..."
        self.caption = W.HTML()  # what is drawn: layer, values, raw range, colour scale
        self.canvas = W.Image(format="jpeg")
        # what is drawn, for tests and screenshots; hidden, and it hides the static snapshot
        # below the live widget (see .snapshot)
        self.marker = W.HTML(layout=W.Layout(display="none"))
        self.marker.add_class("attnviz-marker")
        for name in USES:
            if not set(USES[name]) & set(kinds):
                getattr(self, name).layout.display = "none"
        self.widget = W.VBox([
            W.HBox([self.image_select, self.upload, self.limits]),
            W.HBox([self.layer_slider, self.layer_label]),
            W.HBox([self.channel_slider, self.opacity]),
            W.HBox([self.head_select, self.row, self.col]),
            W.HBox([self.cmap, self.stretch]),
            self.prediction, self.warning, self.status, self.caption, self.canvas, self.marker,
        ])
        self.widget.add_class("attnviz-explorer")
        self.widget.add_class(f"attnviz-explorer-{uid}")

    def view(self) -> View:
        """The current control values."""
        head = self.head_select.value
        return View(self.layer_slider.value, self.channel_slider.value, self.opacity.value,
                    self.cmap.value, self.stretch.value,
                    None if head in (None, MEAN_OF_HEADS) else head,
                    (self.row.value, self.col.value))

    def fit_to(self, kind: str, n_channels: int, heads: int = 1,
               grid: tuple[int, int] = (1, 1)) -> None:
        """Show the controls that act on a layer of ``kind``; size the channel slider, and for
        attention maps the head selector (``heads``) and query sliders (query ``grid``)."""
        with self.channel_slider.hold_trait_notifications():
            self.channel_slider.max = max(n_channels - 1, 0)
        if kind == "attention":
            options = [("mean of heads", MEAN_OF_HEADS), *((f"head {h}", h) for h in range(heads))]
            if [o[1] for o in self.head_select.options] != [o[1] for o in options]:
                head = self.head_select.value
                self.head_select.options = options
                self.head_select.value = head if head < heads else MEAN_OF_HEADS
            self.row.max, self.col.max = grid[0] - 1, grid[1] - 1
        for name, kinds in USES.items():
            getattr(self, name).layout.visibility = "visible" if kind in kinds else "hidden"
        self.layer_label.value = self.site_names[self.layer_slider.value]

    @contextmanager
    def _hold(self) -> Iterator[None]:
        """Change controls without a redraw per change (observers check ``_quiet``)."""
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    def show_text(self, caption: str, prediction: str, warning: str | None,
                  marker: str) -> None:
        """Caption, prediction (:meth:`Analysis.prediction_text`), warning (out of
        distribution, random weights) and the hidden marker."""
        self.caption.value = caption
        self.prediction.value = esc(prediction)
        self.warning.value = f"<b style='color:#a60'>⚠ {esc(warning)}</b>" if warning else ""
        self.marker.value = marker

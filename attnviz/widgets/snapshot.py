"""A static picture of the explorer's last view, saved in the notebook next to the live widget.

A widget shows only while its kernel runs: a reopened notebook shows "Error displaying widget:
model not found" where the explorer was. So the explorer leaves a second output, updated on
every redraw: its last view as an image (``text/html`` and ``image/jpeg``). While the live
widget is on the page, a style inside the widget hides this snapshot; without the widget the
snapshot shows, and its own style hides the widget's error line (JupyterLab).
"""

from __future__ import annotations

import base64

from IPython.display import display

from .common import esc

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def hide_snapshot_css(uid: str) -> str:
    """Put inside the live widget: hides the snapshot that follows it."""
    return (f"<style>.attnviz-snapshot-{uid}, .jp-OutputArea-child:has(.attnviz-explorer-{uid})"
            f" + .jp-OutputArea-child {{display: none}}</style>")


def snapshot_bundle(jpeg: bytes, caption: str, uid: str) -> dict[str, str]:
    """The snapshot output: the last view, what it shows, and how to get the live explorer."""
    data = base64.b64encode(jpeg).decode("ascii")
    note = f"last view of the explorer: {caption} (run the cell for the live explorer)"
    html = (
        f'<div class="attnviz-snapshot attnviz-snapshot-{uid}">'
        f'<img alt="{esc(note)}" src="data:image/jpeg;base64,{data}"/>'
        f"<div><small>{esc(note)}</small></div>"
        # without the live widget, hide its "Error displaying widget" line just above
        f"<style>.jp-OutputArea-child:has(+ .jp-OutputArea-child .attnviz-snapshot-{uid})"
        " > .jp-OutputArea-output.jupyter-widgets {display: none}</style></div>"
    )
    return {"text/html": html, "image/jpeg": data, "text/plain": note}


def widget_bundle(widget: object, uid: str) -> dict[str, object]:
    """The live widget's output, with a plain-text line for viewers without widgets."""
    bundle = dict(widget._repr_mimebundle_())  # type: ignore[attr-defined]
    bundle["text/plain"] = f"attnviz explorer {uid} (live while its kernel runs)"
    return {k: v for k, v in bundle.items() if k in (WIDGET_MIME, "text/plain")}


class Snapshot:
    """The explorer's two outputs: the live widget, then its last view (kept up to date)."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self._handle = None

    def show(self, widget: object, jpeg: bytes | None, caption: str) -> None:
        """Display the widget and, if ``jpeg`` is given, the still image below it."""
        display(widget_bundle(widget, self.uid), raw=True)
        if jpeg is not None:
            self._handle = display(snapshot_bundle(jpeg, caption, self.uid), raw=True,
                                   display_id=True)

    def update(self, jpeg: bytes, caption: str) -> None:
        """Replace the still image (no-op before :meth:`show`)."""
        if self._handle is not None:
            self._handle.update(snapshot_bundle(jpeg, caption, self.uid), raw=True)

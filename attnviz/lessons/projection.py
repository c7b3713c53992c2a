"""Projector mode: larger text in every figure a notebook shows.

    attnviz.lessons.projection()        # on (text × 1.6); projection(False) turns it off

Figures keep their layout code; their text (titles, labels, tick labels, legends) is scaled
just before the notebook renders them, so lecture-hall screens show 11–13 pt instead of 7–8.
Explorers created while it is on draw their pictures that much larger (their resolution is
multiplied by the scale: :func:`projection_scale`).
"""

from __future__ import annotations

from collections.abc import Callable

from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text

_STATE: dict[str, object] = {"scale": 1.0, "original": None}


def enlarge(fig: Figure, scale: float) -> Figure:
    """Scale every text of ``fig`` by ``scale`` (once per figure; returns ``fig``)."""
    done = getattr(fig, "_attnviz_text_scale", 1.0)
    factor = scale / done
    if factor == 1.0:
        return fig
    for t in fig.findobj(Text):
        t.set_fontsize(t.get_fontsize() * factor)
    tick = FontProperties(size=rcParams["xtick.labelsize"]).get_size_in_points()
    for ax in fig.axes:
        ax.tick_params(labelsize=tick * scale)
    fig._attnviz_text_scale = scale  # type: ignore[attr-defined]
    return fig


def projection_scale() -> float:
    """The current projector-mode scale (1.0 when off)."""
    return float(_STATE["scale"])  # type: ignore[arg-type]


def projection(on: bool = True, scale: float = 1.6) -> None:
    """Turn projector mode on (text × ``scale`` in every figure shown) or off."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the lab extra
        ip = None
    else:
        ip = get_ipython()
    _STATE["scale"] = scale if on else 1.0
    if ip is None:
        return
    fmt = ip.display_formatter.formatters["image/png"]
    if _STATE["original"] is None:
        try:
            _STATE["original"] = fmt.lookup_by_type(Figure)
        except KeyError:
            return  # no inline backend: nothing renders figures here
    original: Callable = _STATE["original"]  # type: ignore[assignment]
    if on:
        fmt.for_type(Figure, lambda fig: original(enlarge(fig, scale)))
    else:
        fmt.for_type(Figure, original)

"""Interactive explorers (ipywidgets): controls + cached records + ``attnviz.plot`` drawing.

    explorer = attnviz.widgets.AttentionExplorer(model, attnviz.sample_images())
    explorer          # in JupyterLab: image, layer, channel, opacity, colour map, prediction

On a self-attention map (BoTNet, non-local blocks, ...) the same explorer shows a head selector
("mean of heads" or one head) and the query cell: click the picture, or use the row / column
sliders.

The forward pass runs once per image *content* and is cached: moving the layer, channel or
opacity controls only re-draws, and an upload named like an earlier image shows its own
attention. Below the live widget the notebook keeps a static image of the last view, so a
saved notebook still shows it without a kernel (and papermill / nbclient runs save it too).

Modules: ``sources`` (images, uploads, content digests), ``analysis`` (cached forward passes),
``canvas`` (the figure), ``controls`` (the widgets), ``explorer`` (the wiring), ``snapshot``
(the static image).
"""

from __future__ import annotations

from ..errors import missing_dependency

try:
    import ipywidgets as W
    from IPython.display import display
except ModuleNotFoundError as e:
    raise missing_dependency("attnviz.widgets", e.name or "ipywidgets", "lab") from None

from torch import nn  # noqa: E402

from .analysis import DRAWABLE, Analysis  # noqa: E402
from .common import CMAPS, figure_png, headless  # noqa: E402
from .controls import MEAN_OF_HEADS  # noqa: E402
from .explorer import AttentionExplorer  # noqa: E402
from .sources import _as_images  # noqa: E402, F401  (re-exported)


def explore(model: nn.Module, images: object = None, **kwargs: object) -> AttentionExplorer:
    """Shorthand for ``AttentionExplorer(model, images, **kwargs)``."""
    return AttentionExplorer(model, images, **kwargs)


def channel_explorer(model: nn.Module, images: object = None, **kwargs: object):
    """An explorer of channel weights s(c) only (SE, CBAM channel, ECA, ...)."""
    return AttentionExplorer(model, images, kinds=("channel",), **kwargs)


def spatial_explorer(model: nn.Module, images: object = None, **kwargs: object):
    """An explorer of spatial masks A only (CBAM spatial, ...); it opens on the most
    informative layer (a demo model's best layer from its card)."""
    return AttentionExplorer(model, images, kinds=("spatial",), **kwargs)


def self_attention_explorer(model: nn.Module, images: object = None,
                            query: tuple[int, int] | None = None, **kwargs: object):
    """An explorer of self-attention maps only: query → key weights, opening on ``query``
    (row, col; default: the centre of the query grid)."""
    return AttentionExplorer(model, images, kinds=("attention",), query=query, **kwargs)


def split_explorer(model: nn.Module, images: object = None, **kwargs: object):
    """An explorer of split-attention (radix) and selective-kernel weights only."""
    return AttentionExplorer(model, images, kinds=("radix", "paths"), **kwargs)


__all__ = [
    "CMAPS",
    "DRAWABLE",
    "MEAN_OF_HEADS",
    "Analysis",
    "AttentionExplorer",
    "W",
    "channel_explorer",
    "display",
    "explore",
    "figure_png",
    "headless",
    "self_attention_explorer",
    "spatial_explorer",
    "split_explorer",
]

"""The kinds of attention weight attnviz records: one registry entry per kind.

    KINDS["spatial"].axes     # ("H", "W")
    KINDS["attention"].scale  # "uniform": drawn as a multiple of uniform (1/K), log scale

Every entry says what the weight is (axes, formula, value range), on which scale it is drawn
(``"fixed"``: the fixed 0–1 colour scale of gates the network multiplied by; ``"uniform"``:
softmax weights over many cells, drawn as a multiple of the uniform weight 1/K on a log scale,
so a uniform row reads 1× and a row that attends stands out), how it is drawn (``draw``), its
per-image summary columns and its streaming aggregate in ``attnviz stats``, and whether the
explorer shows it. Records, plots, widgets, the report and the stats read this table; adding a
kind is one entry here plus the recorder's code and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ParameterError


@dataclass(frozen=True)
class Kind:
    """One kind of attention weight.

    Attributes:
        name: the kind (``record.kind``).
        axes: the per-image axes of a record's value (after the batch axis).
        title: what the report's and pages' headings call it.
        formula: how the network computes it.
        value_range: the range its values lie in.
        normalised_over: the axes its weights sum to 1 over (None: independent gates).
        scale: ``"fixed"`` (0–1 colour scale) or ``"uniform"`` (multiple of 1/K, log scale).
        draw: ``"bars"`` (one value per channel), ``"map"`` (a map over the image grid),
            ``"strip"`` (a gate of any shape, drawn as a map or strip), ``"splits"`` (R × C
            tiles) or ``"rows"`` (attention rows: query → keys).
        summary: the per-image columns of ``summary.csv`` it fills (besides mean/min/max/std).
        aggregate: the accumulator of ``attnviz stats`` (see :mod:`attnviz.stats.layers`).
        explorer: whether :class:`attnviz.widgets.AttentionExplorer` shows it.
    """

    name: str
    axes: tuple[str, ...]
    title: str
    formula: str
    value_range: tuple[float, float] = (0.0, 1.0)
    normalised_over: tuple[str, ...] | None = None
    scale: str = "fixed"
    draw: str = "map"
    summary: tuple[str, ...] = ()
    aggregate: str = "features"
    explorer: bool = False


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("spatial", ("H", "W"), "spatial masks A, fixed 0–1 scale",
         "A = σ(conv([mean_c F; max_c F]))", draw="map",
         summary=("entropy", "peak_y", "peak_x", "share_above_half"), aggregate="map",
         explorer=True),
    Kind("context", ("H", "W"), "global-context pooling weights, multiple of uniform (log)",
         "softmax over positions of conv1x1(F)", normalised_over=("H", "W"), scale="uniform",
         draw="map", summary=("entropy", "peak_y", "peak_x", "share_above_half"),
         aggregate="map", explorer=True),
    Kind("gate", ("...",), "gates, fixed 0–1 scale", "σ(·) multiplied elementwise",
         draw="strip", summary=("saturation",), aggregate="features"),
    Kind("attention", ("heads", "Q", "K"), "attention rows softmax(QKᵀ/√d), multiple of "
         "uniform (log)", "softmax_k(q·k/√d)", normalised_over=("K",), scale="uniform",
         draw="rows", summary=("entropy", "attn_distance", "local_mass"), aggregate="attention",
         explorer=True),
    Kind("channel", ("C",), "channel weights s(c), fixed 0–1 scale",
         "s = σ(MLP(avg F) [+ MLP(max F)])", draw="bars", summary=("entropy", "saturation"),
         aggregate="channel", explorer=True),
    Kind("radix", ("R", "C"), "split-attention weights a_r(c), fixed 0–1 scale",
         "softmax over the R splits of each cardinal group", normalised_over=("R",),
         draw="splits", summary=("entropy", "mean_a0", "balance"), aggregate="splits",
         explorer=True),
    Kind("paths", ("R", "C"), "selective-kernel path weights a_p(c), fixed 0–1 scale",
         "softmax over the kernel paths", normalised_over=("R",), draw="splits",
         summary=("entropy", "mean_a0", "balance"), aggregate="splits", explorer=True),
)}

#: kinds whose weights are drawn as maps over the image grid
MAP_KINDS = tuple(k for k, v in KINDS.items() if v.draw == "map")
#: kinds whose weights split each channel among R splits / paths
SPLIT_KINDS = tuple(k for k, v in KINDS.items() if v.draw == "splits")
#: independent gates in (0, 1), one per element
GATE_KINDS = tuple(k for k, v in KINDS.items() if v.normalised_over is None
                   and v.draw in ("bars", "strip"))
#: the order kinds appear in on pages
ORDER = ("spatial", "context", "gate", "attention", "channel", "radix", "paths")


def kind(name: str) -> Kind:
    """The registry entry of ``name``.

    Raises:
        ParameterError: an unknown kind (the message lists the known ones).
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ParameterError(f"unknown attention kind {name!r}; known: "
                             f"{', '.join(KINDS)}") from None


__all__ = ["GATE_KINDS", "KINDS", "MAP_KINDS", "ORDER", "SPLIT_KINDS", "Kind", "kind"]

"""One way to draw a map: the colour map default, cells drawn as cells, and the honest scale of
each kind. Plots, the explorers and the report use these and nothing else, so the same mask
looks the same everywhere.

    unit, label = to_unit(values, "attention")   # values in 0..1 for the colour map, its label
"""

from __future__ import annotations

import numpy as np

from .kinds import kind

#: the one default colour map (perceptually uniform; jet hides green shapes and invents edges)
DEFAULT_CMAP = "viridis"
#: maps are drawn one colour per cell, never smoothed (matplotlib ``interpolation=``)
CELLS = "nearest"
#: the "uniform" scale spans 2**-LOG_SPAN .. 2**LOG_SPAN times the uniform weight 1/K
LOG_SPAN = 3.0
FIXED_LABEL = "fixed 0–1 scale"
UNIFORM_LABEL = f"× uniform (1/K), log scale {2 ** -LOG_SPAN:g}×–1×–{2 ** LOG_SPAN:g}×"


def times_uniform(values: np.ndarray, cells: int | None = None) -> np.ndarray:
    """Softmax weights as a multiple of the uniform weight 1/K (K = ``cells``, default the
    number of values): 1 where a weight equals 1/K."""
    v = np.asarray(values, dtype=np.float64)
    return v * (cells if cells is not None else v.size)


def to_unit(values: np.ndarray, kind_name: str, cells: int | None = None,
            ) -> tuple[np.ndarray, str]:
    """``values`` mapped to 0..1 for the colour map on the honest scale of their kind, and the
    scale's label.

    Args:
        values: the weights (any shape).
        kind_name: their kind (see :mod:`attnviz.kinds`).
        cells: K, the number of cells the weights sum to 1 over (default: ``values.size``).

    Returns:
        ``(unit, label)``: for ``"fixed"`` kinds the values as they are (clipped by the
        colour map to 0..1); for ``"uniform"`` kinds log2(v·K) from -LOG_SPAN..LOG_SPAN
        mapped to 0..1, so a uniform weight sits mid-scale (0.5). NaN stays NaN.

    Examples:
        >>> to_unit(np.full(4, 0.25), "attention")[0].tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    v = np.asarray(values, dtype=np.float64)
    if kind(kind_name).scale != "uniform":
        return v, FIXED_LABEL
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log2(times_uniform(v, cells))
    unit = np.clip(logs, -LOG_SPAN, LOG_SPAN) / (2 * LOG_SPAN) + 0.5
    return np.where(np.isnan(v), np.nan, unit), UNIFORM_LABEL


def uniform_ticks() -> tuple[np.ndarray, list[str]]:
    """Colour-bar ticks of the "uniform" scale: the positions (0..1) and labels of 1/8×, 1/4×,
    1/2×, 1×, 2×, 4×, 8× the uniform weight.

    Returns:
        ``(positions, labels)``.
    """
    powers = np.arange(-LOG_SPAN, LOG_SPAN + 1)
    return (powers / (2 * LOG_SPAN) + 0.5,
            [f"{2.0 ** p:g}×" if p >= 0 else f"1/{2.0 ** -p:g}×" for p in powers])


__all__ = ["CELLS", "DEFAULT_CMAP", "FIXED_LABEL", "LOG_SPAN", "UNIFORM_LABEL", "times_uniform",
           "to_unit", "uniform_ticks"]

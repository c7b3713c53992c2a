"""Helpers for the teaching notebooks: baselines over many seeds, side-by-side comparisons,
receptive fields of spatial masks, parameter costs, figures with the object outlined, and a
projector mode. The notebooks stay thin: the logic lives here and is tested.

    from attnviz import lessons
    lessons.projection()                       # larger text in every figure (lecture hall)
    seeds = lessons.init_baselines("demo-cbam", data, seeds=range(20))
"""

from __future__ import annotations

from .baselines import (
    SpatialScores,
    architecture_init,
    baseline_table,
    compare_table,
    default_init,
    init_baselines,
    pointing_chance,
    spatial_scores,
)
from .costs import cost_table, parameter_count
from .figures import (
    baseline_strips,
    class_channel_heatmap,
    masks_side_by_side,
    outline_object,
    outline_objects,
    receptive_field_figure,
)
from .projection import enlarge, projection
from .receptive import ReceptiveField, receptive_fields, receptive_table, with_spatial_kernel

__all__ = [
    "ReceptiveField",
    "SpatialScores",
    "architecture_init",
    "baseline_strips",
    "baseline_table",
    "class_channel_heatmap",
    "compare_table",
    "cost_table",
    "default_init",
    "enlarge",
    "init_baselines",
    "masks_side_by_side",
    "outline_object",
    "outline_objects",
    "parameter_count",
    "pointing_chance",
    "projection",
    "receptive_field_figure",
    "receptive_fields",
    "receptive_table",
    "spatial_scores",
    "with_spatial_kernel",
]

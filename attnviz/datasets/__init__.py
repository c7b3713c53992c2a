"""Floor 1: synthetic data with ground truth."""

from __future__ import annotations

from .shapes import CLASSES, Shapes, ShapesDataset, make_shapes, render

__all__ = ["CLASSES", "Shapes", "ShapesDataset", "make_shapes", "render"]

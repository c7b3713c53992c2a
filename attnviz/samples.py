"""The bundled sample images (works offline; see :mod:`attnviz.resources`)."""

from __future__ import annotations

from pathlib import Path

from .errors import ParameterError
from .resources import data_dir

_SUFFIXES = (".jpg", ".jpeg", ".png")


def sample_images(kind: str = "all") -> list[Path]:
    """Bundled images: ``"photos"`` (CC0 / public-domain photos), ``"shapes"`` (generated
    shapes, what the demo models were trained on) or ``"all"`` (shapes first, so an explorer on
    a demo model opens on an image it understands)."""
    if kind not in ("all", "photos", "shapes"):
        raise ParameterError(f"kind must be 'all', 'photos' or 'shapes', got {kind!r}")
    files = sorted(p for p in (data_dir() / "images").iterdir() if p.suffix.lower() in _SUFFIXES)
    shapes = [p for p in files if p.name.startswith("shapes_")]
    photos = [p for p in files if not p.name.startswith("shapes_")]
    return {"shapes": shapes, "photos": photos, "all": shapes + photos}[kind]

"""The bundled ``data/`` folder: sample images and demo checkpoints (works offline)."""

from __future__ import annotations

import os
from pathlib import Path

_SUFFIXES = (".jpg", ".jpeg", ".png")


def data_dir() -> Path:
    """The bundled ``data/`` folder (``$ATTNVIZ_DATA`` overrides)."""
    env = os.environ.get("ATTNVIZ_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def sample_images(kind: str = "all") -> list[Path]:
    """Bundled images: ``"photos"`` (CC0 / public-domain photos), ``"shapes"`` (generated
    shapes, what the demo models were trained on) or ``"all"`` (shapes first, so an explorer on
    a demo model opens on an image it understands)."""
    if kind not in ("all", "photos", "shapes"):
        raise ValueError(f"kind must be 'all', 'photos' or 'shapes', got {kind!r}")
    files = sorted(p for p in (data_dir() / "images").iterdir() if p.suffix.lower() in _SUFFIXES)
    shapes = [p for p in files if p.name.startswith("shapes_")]
    photos = [p for p in files if not p.name.startswith("shapes_")]
    return {"shapes": shapes, "photos": photos, "all": shapes + photos}[kind]

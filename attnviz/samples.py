"""The bundled sample images (works offline; see :mod:`attnviz.resources`), and the ground-truth
object masks of the generated shapes among them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ParameterError
from .resources import data_dir

_SUFFIXES = (".jpg", ".jpeg", ".png")
#: the stream the bundled ``shapes_<class>.png`` images come from (the first of each class)
SAMPLE_SEED = 7
_SEARCH = 200  # indices searched for the first image of a class (each class appears by ~20)


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


def ground_truth(path: str | Path) -> torch.Tensor | None:
    """The object mask, (H, W) bool, of a generated shapes image named ``shapes_<class>.png``
    (how the bundled ones are named): the first image of its class in the stream
    ``make_shapes(n, seed=SAMPLE_SEED)``, used only when it matches the file pixel for pixel.
    None for any other image (photos, your own files, a shapes file that was edited)."""
    from PIL import Image

    from .datasets.shapes import CLASSES, render

    p = Path(path)
    cls = p.stem.split("_", 1)[1] if p.stem.startswith("shapes_") else None
    if cls not in CLASSES or p.suffix.lower() != ".png":
        return None
    try:
        with Image.open(p) as im:
            pixels = np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None
    if pixels.shape[0] != pixels.shape[1]:
        return None
    for i in range(_SEARCH):
        img, label, mask = render(SAMPLE_SEED, i, pixels.shape[0])
        if CLASSES[label] == cls:
            same = np.array_equal(np.round(img * 255).astype(np.uint8), pixels)
            return torch.from_numpy(mask >= 0.5) if same else None
    return None

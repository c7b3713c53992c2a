"""Helpers shared by the report tests: generated images and figure counts of a page."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from attnviz.datasets import make_shapes


def write_shapes(folder: Path, n: int, seed: int = 3, prefix: str = "img") -> Path:
    """``n`` generated shapes images as PNG files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = make_shapes(n, seed=seed)
    arr = (data.images * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(arr):
        Image.fromarray(a).save(folder / f"{prefix}_{i:04d}.png")
    return folder


def figure_counts(page: str) -> dict[str, int]:
    """Per-image sections, inputs, maps drawn over an input, and channel-bar charts (of the
    images: the charts by predicted class come after them)."""
    images = page.split('id="class-channels"')[0]
    return {"sections": page.count("<section>"), "inputs": page.count('class="ov base img'),
            "overlays": page.count('<div class="ov img'), "svg": images.count("<svg ")}

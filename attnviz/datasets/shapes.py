"""Procedural shapes with ground truth: one target shape on a cluttered background.

Each image is a pure function of ``numpy.random.default_rng([seed, index])``: a coarse random
colour field with oriented stripes and pixel noise, 2–5 soft coloured ellipses and 0–3 thin lines
as distractors, and one saturated target shape (the label) drawn at 4× and downsampled, which
gives an anti-aliased ground-truth mask and box.
"""

from __future__ import annotations

import colorsys
import math
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..checks import check_images_memory, check_input_size, number_text
from ..errors import ParameterError

CLASSES = ("circle", "square", "triangle", "star", "cross")
_SS = 4  # supersampling factor


class Shapes(NamedTuple):
    """A batch of shapes images with ground truth."""

    images: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    masks: torch.Tensor  # (N, S, S) bool, the target object
    classes: tuple[str, ...]


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
        scale = r
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
        scale = r * 1.15
    elif kind == "star":
        pts = [
            (
                (1.0 if i % 2 == 0 else 0.42) * math.cos(a),
                (1.0 if i % 2 == 0 else 0.42) * math.sin(a),
            )
            for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)
        ]
        scale = r * 1.15
    elif kind == "cross":
        t = 0.34
        pts = [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ]
        scale = r
    else:
        raise ParameterError(kind)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + scale * (x * ca - y * sa), cy + scale * (x * sa + y * ca)) for x, y in pts]


def _rgb(h: float, s: float, v: float, alpha: int = 255) -> tuple[int, int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255), alpha


def render(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, int, np.ndarray]:
    """One image: (S, S, 3) float32 in [0, 1], its label, and its (S, S) float object mask."""
    rng = np.random.default_rng([seed, index])
    big = size * _SS
    # background: coarse colour field + oriented stripes + noise
    coarse = rng.uniform(0.15, 0.85, size=(4, 4, 3)).astype(np.float32)
    bg = (
        np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
            dtype=np.float32,
        )
        / 255.0
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta, freq = rng.uniform(0, math.pi), rng.uniform(0.15, 0.6)
    stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * freq + rng.uniform(0, 6.3))
    bg = bg + rng.uniform(0.03, 0.12) * stripes[..., None]

    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(2, 6)):  # soft ellipses
        cx, cy = rng.uniform(0, big, 2)
        rx, ry = rng.uniform(0.06, 0.2, 2) * big
        col = _rgb(
            rng.uniform(), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.9), int(rng.uniform(80, 180))
        )
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=col)
    for _ in range(rng.integers(0, 4)):  # thin lines
        x0, y0, x1, y1 = rng.uniform(0, big, 4)
        col = _rgb(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.3, 1.0), 200)
        draw.line([x0, y0, x1, y1], fill=col, width=int(rng.integers(2, 6)))

    label = int(rng.integers(len(CLASSES)))
    r = rng.uniform(0.11, 0.22) * big
    cx, cy = rng.uniform(r * 1.1, big - r * 1.1, 2)
    angle = rng.uniform(0, 2 * math.pi)
    target = Image.new("L", (big, big), 0)
    tdraw = ImageDraw.Draw(target)
    if CLASSES[label] == "circle":
        tdraw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        tdraw.polygon(_polygon(CLASSES[label], cx, cy, r, angle), fill=255)
    color = (
        np.array(_rgb(rng.uniform(), rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))[:3]) / 255.0
    )

    small = layer.resize((size, size), Image.BOX)
    rgba = np.asarray(small, dtype=np.float32) / 255.0
    img = bg * (1 - rgba[..., 3:]) + rgba[..., :3] * rgba[..., 3:]
    mask = np.asarray(target.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    img = img * (1 - mask[..., None]) + color.astype(np.float32) * mask[..., None]
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), label, mask


def make_shapes(n: int, seed: int = 0, size: int = 64, start: int = 0) -> Shapes:
    """``n`` shapes images (indices ``start .. start+n-1`` of the stream ``seed``)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, seed, size, start)):
        raise ParameterError(f"make_shapes needs integers, got n={n!r}, seed={seed!r}, "
                             f"size={size!r}, start={start!r}")
    if n < 1 or size < 16 or start < 0:
        raise ParameterError(
            f"make_shapes needs n >= 1, size >= 16 and start >= 0, got n={n}, size={size}, "
            f"start={start}")
    check_input_size(size, "size")
    check_images_memory(f"{number_text(n)} shapes images", n, size, per_pixel=13)  # +1: mask
    imgs = np.empty((n, size, size, 3), np.float32)
    labels = np.empty(n, np.int64)
    masks = np.empty((n, size, size), bool)
    for i in range(n):
        img, lab, m = render(seed, start + i, size)
        imgs[i], labels[i], masks[i] = img, lab, m >= 0.5
    return Shapes(
        torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        torch.from_numpy(masks),
        CLASSES,
    )


class ShapesDataset(Dataset):
    """Map-style dataset over the stream ``seed``: item i → (image (3,S,S), label, mask (S,S))."""

    classes = CLASSES

    def __init__(self, n: int, seed: int = 0, size: int = 64, start: int = 0) -> None:
        self.n, self.seed, self.size, self.start = n, seed, size, start

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        img, lab, m = render(self.seed, self.start + i, self.size)
        return torch.from_numpy(img).permute(2, 0, 1), lab, torch.from_numpy(m >= 0.5)

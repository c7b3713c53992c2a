"""Pictures for the report, composed with numpy and PIL at native resolution (no matplotlib).

A map (spatial mask, gate, attention row, split weights, ...) becomes a palette PNG with one
pixel per cell: values are quantised to 128 steps of the one default colour map
(:data:`attnviz.vis.DEFAULT_CMAP`, viridis, as every figure and explorer uses); NaN / infinite
cells are grey. The page scales it up without smoothing (CSS ``image-rendering: pixelated``) and
lays it over the input image, which is stored once per image; one shared colour bar explains
the scale. Masks therefore stay lossless and tiny.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image
from torch import Tensor

#: colour of NaN / infinite cells
NAN_RGB = (128, 128, 128)
#: input images with a longer side than this are stored as JPEG (quality 90), others as PNG
PNG_MAX_SIDE = 96

#: colour steps from 0 to 1 (index LEVELS is the NaN grey)
LEVELS = 128


@lru_cache(maxsize=1)
def palette() -> bytes:
    """RGB palette: indices 0..LEVELS-1 the colour map from 0 to 1, LEVELS the NaN grey."""
    from matplotlib import colormaps

    from ..plot import DEFAULT_CMAP

    rgb = colormaps[DEFAULT_CMAP].resampled(LEVELS)(np.arange(LEVELS))[:, :3]
    return np.round(rgb * 255).astype(np.uint8).tobytes() + bytes(NAN_RGB)


def quantise(values: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """``values`` mapped from ``lo..hi`` (clipped) to palette indices 0..LEVELS-1;
    NaN/Inf → LEVELS."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    span = hi - lo if hi > lo else 1.0
    q = np.clip((np.where(finite, v, lo) - lo) / span, 0, 1) * (LEVELS - 1)
    return np.where(finite, np.round(q), LEVELS).astype(np.uint8)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def map_png(values: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> bytes:
    """A 2-d map as an 8-bit palette PNG, one pixel per cell (written directly: PIL's encoder
    costs more than the pixels for maps this small)."""
    q = quantise(np.atleast_2d(values), lo, hi)
    h, w = q.shape
    rows = np.zeros((h, w + 1), np.uint8)  # filter byte 0 (none) before each row
    rows[:, 1:] = q
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    plte = palette()[:3 * (int(q.max()) + 1)]  # only the colours used, up to the largest
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"PLTE", plte)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _chunk(b"IEND", b""))


def map_uri(values: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> str:
    return data_uri(map_png(values, lo, hi), "image/png")


def outline_uri(mask: np.ndarray) -> str:
    """A (H, W) object mask as a transparent PNG with its outline (the mask's pixels next to a
    pixel outside it) in magenta, drawn over an image of the same grid."""
    m = np.asarray(mask, dtype=bool)
    pad = np.pad(m, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    edge = m & ~inner
    rgba = np.zeros((*m.shape, 4), np.uint8)
    rgba[edge] = (255, 0, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return data_uri(buf.getvalue(), "image/png")


def colour_bar_uri() -> str:
    """The shared colour bar: 0 on the left, 1 on the right."""
    return map_uri(np.linspace(0, 1, LEVELS)[None])


def image_uri(image: Tensor) -> str:
    """A (3, H, W) image in [0, 1] as PNG (small images) or JPEG (quality 90)."""
    arr = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(arr))
    buf = io.BytesIO()
    if max(img.size) <= PNG_MAX_SIDE:
        img.save(buf, format="PNG", compress_level=6)
        return data_uri(buf.getvalue(), "image/png")
    img.save(buf, format="JPEG", quality=90)
    return data_uri(buf.getvalue(), "image/jpeg")


def pool(values: np.ndarray, max_side: int) -> np.ndarray:
    """Block-average a 2-d array so that neither side exceeds ``max_side``."""
    h, w = values.shape
    fy, fx = -(-h // max_side), -(-w // max_side)
    if fy == 1 and fx == 1:
        return values
    ph, pw = -(-h // fy) * fy, -(-w // fx) * fx
    padded = np.full((ph, pw), np.nan)
    padded[:h, :w] = values
    return np.nanmean(padded.reshape(ph // fy, fy, pw // fx, fx), axis=(1, 3))


__all__ = ["LEVELS", "colour_bar_uri", "data_uri", "image_uri", "map_png", "map_uri", "palette",
           "pool", "quantise"]

"""Reading user images: the one way attnviz turns a path, bytes or a PIL image into pixels.

    x = load_image("cat.jpg", size=224)      # float32 (3, 224, 224) in [0, 1]
    img = load_pil(data)                     # RGB PIL image, EXIF orientation applied
    paths, missed = find_images(["photos/", "extra/*.png", "dog.jpg"])

Plain 8-bit PNGs are decoded by libpng via TorchCodec (:mod:`attnviz.pngread`: PIL's pixels in
half the time, the GIL released); PIL reads the rest. Every image is fully decoded before it is
used, so a truncated or damaged file fails here with
an :class:`~attnviz.errors.ImageError` that names the file (``'<bytes>'`` for in-memory data) and
the reason, instead of failing later inside a model. A JPEG whose compressed data was changed
decodes without an error in PIL (libjpeg's "Corrupt JPEG data" warnings are silenced there), so
its data is also decoded by libjpeg-turbo in strict mode (:func:`check_jpeg`), which refuses it.
What is converted, and how:

* EXIF orientation is applied (a phone photo shot upright comes out upright).
* Transparency (RGBA, LA, PA, palette or grey with a transparent colour) is composited on white.
* Palette, 1-bit, grey, CMYK, YCbCr, LAB and HSV images become RGB.
* 16-bit grey (``I;16``, ``I;16B``, ...) is scaled by 1/65535; 32-bit integer ``I`` images are
  treated as 16-bit data when all values lie in 0..65535 and stretched min..max otherwise;
  float ``F`` images are taken as 0..1, else 0..255, else stretched min..max (NaN -> 0).
* Animated or multi-frame files (GIF, APNG, WebP, multi-page TIFF) give their FIRST frame.

Refused: missing files, folders, empty files, non-image data (HTML pages saved as ``.jpg``, SVG,
Git LFS pointers get their own message), truncated or damaged files (JPEGs whose compressed data
libjpeg finds corrupt included), images over
:data:`MAX_PIXELS` (decompression bombs), images under :data:`MIN_SIDE` pixels on a side,
in-memory data over :data:`MAX_BYTES`, and pixel modes that cannot be turned into RGB.
PIL's global settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) are read,
never changed; importing this module changes nothing global.
"""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import pngread
from .errors import ImageError, ParameterError
from .scan import IMAGE_SUFFIXES, find_images
from .terminal import shown

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image

#: Smallest accepted width and height, in pixels.
MIN_SIDE = 8
#: Largest accepted image, in pixels (width x height), checked before decoding.
MAX_PIXELS = 64_000_000
#: Largest accepted in-memory image (``load_image(bytes)``, uploads), in bytes.
MAX_BYTES = 20_000_000
#: PIL formats that are tried when opening (others, e.g. EPS through Ghostscript, are refused).
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "AVIF")

#: libjpeg messages that say a JPEG's data is damaged (strict decoding raises on the first
#: warning; others, e.g. a header libjpeg-turbo's API cannot classify (CMYK), are not ours to
#: judge: PIL's decode stands). A bad ICC profile is metadata: the pixels are intact.
JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file", "Unsupported marker type",
               "Invalid JPEG file structure", "Bogus")

_BYTES_NAME = "<bytes>"
_PIL_NAME = "<PIL image>"
_ORIENTATION = 0x0112
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_TO_RGB = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_ALPHA = ("LA", "PA", "RGBA", "RGBa")


def _fail(name: str, reason: str) -> ImageError:
    shown_name = name if name.isprintable() else shown(name)  # no raw control characters
    return ImageError(f"cannot read image {shown_name}: {reason}")


def over_limit(value: float, limit: float, unit: str, scale: float = 1e6) -> str:
    """``"20.000001 MB is over the limit of 20 MB"``: ``value`` with as many decimals as it
    takes to differ visibly from ``limit`` (both divided by ``scale``)."""
    text = ""
    for decimals in range(1, 10):
        text = f"{value / scale:.{decimals}f}"
        if text != f"{limit / scale:.{decimals}f}":
            break
    return f"{text} {unit} is over the limit of {limit / scale:g} {unit}"


def _formats() -> tuple[str, ...]:
    """IMAGE_FORMATS that this PIL build can open (PIL raises KeyError for unknown names)."""
    if any(f not in Image.OPEN for f in IMAGE_FORMATS):
        Image.init()  # PIL's own lazy plugin registration, as Image.open would do
    return tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)


def _sniff(head: bytes) -> str | None:
    """A specific reason for well-known non-image data, from the first bytes."""
    h = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if h.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in h[:1024]:
        return "it is an HTML web page, not an image (a page saved under an image name?)"
    if h.startswith(b"<svg") or (h.startswith(b"<?xml") and b"<svg" in h):
        return "it is an SVG drawing; only raster images (PNG, JPEG, ...) are supported"
    if h.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the image itself (run `git lfs pull`)"
    return None


def _check_bytes(n: int, name: str) -> None:
    if n == 0:
        raise _fail(name, "the data is empty (0 bytes)")
    if n > MAX_BYTES:
        raise _fail(name, f"{over_limit(n, MAX_BYTES, 'MB')}; "
                          "save it smaller (e.g. as JPEG) and try again")


def check_upload(data: bytes | bytearray | memoryview, name: str) -> None:
    """Refuse an upload before decoding it: empty, over :data:`MAX_BYTES`, or plainly not an
    image (an HTML page, SVG). Raises :class:`ImageError` naming ``name``."""
    _check_bytes(len(data), name)
    reason = _sniff(bytes(data[:1024]))
    if reason:
        raise _fail(name, reason)


def _too_many_pixels(size_text: str, pixels: int) -> str:
    return (f"{size_text}{over_limit(pixels, MAX_PIXELS, 'megapixels')} (a decompression bomb "
            "or a huge scan; downscale it first)")


def _check_size(size: tuple[int, int], name: str) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise _fail(name, _too_many_pixels(f"{w}x{h} pixels: ", w * h))
    if min(w, h) < MIN_SIDE:
        raise _fail(name, f"{w}x{h} pixels is too small; at least {MIN_SIDE}x{MIN_SIDE} "
                          "is needed")


def _unit_to_rgb(x: np.ndarray) -> Image.Image:
    """A float grey array, meant as 0..1, to an 8-bit RGB image."""
    u8 = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(u8).convert("RGB")


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x - lo) / (hi - lo) if hi > lo else np.clip(x, 0.0, 1.0)


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        return _unit_to_rgb(arr.astype(np.float32) / 65535.0)
    if img.mode == "I":
        x = arr.astype(np.float64)
        lo, hi = float(x.min()), float(x.max())
        if lo >= 0 and hi <= 65535:
            return _unit_to_rgb(x / 65535.0)
        return _unit_to_rgb(_stretch(x, lo, hi))
    x = arr.astype(np.float64)  # "F"
    finite = np.isfinite(x)
    if not finite.any():
        return _unit_to_rgb(np.zeros_like(x))
    lo, hi = float(x[finite].min()), float(x[finite].max())
    if lo >= 0 and hi <= 1:
        pass
    elif lo >= 0 and hi <= 255:
        x = x / 255.0
    else:
        x = _stretch(x, lo, hi)
    return _unit_to_rgb(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0))


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Any supported mode to a new 8-bit RGB image (transparency composited on white)."""
    mode = img.mode
    if mode in _HIGH_DEPTH:
        return _high_depth_to_rgb(img)
    if mode in _ALPHA or (mode in _TO_RGB and img.has_transparency_data):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img.copy()
    if mode in _TO_RGB:
        return img.convert("RGB")
    raise _fail(name, f"pixel mode {mode!r} is not supported (supported: "
                      f"{', '.join(_TO_RGB + _ALPHA + _HIGH_DEPTH)})")


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (a damaged EXIF block is ignored, not fatal)."""
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def _decode(img: Image.Image, name: str) -> Image.Image:
    _check_size(img.size, name)
    img.load()  # full decode: truncated or damaged data fails here, not later
    return _to_rgb(_orient(img), name)


def check_jpeg(data: bytes, name: str) -> None:
    """Refuse a JPEG whose compressed data libjpeg-turbo finds corrupt (extraneous bytes before
    a marker, a premature end of a data segment, a bad Huffman code, ...), which PIL decodes
    without a word. It is decoded once more in strict mode at 1/8 scale: every coefficient is
    still entropy-decoded (where the damage shows), while the inverse DCT and colour work shrink.
    Damage that leaves a valid compressed stream cannot be seen by any decoder.

    Raises:
        ImageError: naming ``name`` and libjpeg's message.
    """
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=8, strict=True)
    except ValueError as e:
        text = str(e)
        if text.startswith(JPEG_DAMAGE) and "ICC" not in text:
            raise _fail(name, f"the JPEG data is damaged ({text}): bytes were changed or lost "
                              "(a bad download, copy or disk?)") from None


def _source_name(source: object, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _BYTES_NAME
    if isinstance(source, Image.Image):
        return str(getattr(source, "filename", "") or _PIL_NAME)
    if isinstance(source, (str, os.PathLike)):
        return str(os.fspath(source))
    return repr(source)


def _head(source: object, path: Path | None) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:1024])
    if path is not None:
        try:
            with open(path, "rb") as f:
                return f.read(1024)
        except OSError:
            return b""
    return b""


def _explain(e: BaseException, source: object, path: Path | None) -> str:
    """A readable reason for an exception raised while opening or decoding."""
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # PIL's own (higher) limit fired first; quote ours, with the size PIL read
        found = re.search(r"\((\d+) pixels\)", str(e))
        return _too_many_pixels("", int(found.group(1))) if found else \
            f"it is too large to decode safely (over {MAX_PIXELS / 1e6:g} megapixels)"
    if isinstance(e, UnidentifiedImageError):
        return _sniff(_head(source, path)) or (
            "it is not an image, or not in a supported format "
            f"({', '.join(_formats())})")
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, MemoryError):
        return "not enough memory to decode it"
    text = str(e)
    if "truncated" in text.lower() or isinstance(e, EOFError):
        return "the file is truncated (an incomplete download or copy?)"
    return f"the image data is damaged ({type(e).__name__}: {text or 'no detail'})"


def load_pil(source: ImageSource, *, name: str | None = None) -> Image.Image:
    """Read ``source`` (a path, bytes, or a PIL image) into a new, fully decoded RGB PIL image
    with its EXIF orientation applied. Multi-frame files give their first frame.

    ``name`` (optional) is used in error messages instead of the path / ``'<bytes>'``.
    Raises :class:`ImageError` for anything that is not a readable image.
    """
    label = _source_name(source, name)
    path: Path | None = None
    fp: Path | io.BytesIO | None = None
    if isinstance(source, Image.Image):
        pass
    elif isinstance(source, (bytes, bytearray, memoryview)):
        _check_bytes(len(source), label)
        fp = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        if not os.fspath(source):
            raise _fail("''", "the path is empty")
        path = Path(os.fspath(source)).expanduser()
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _fail(label, "no such file") from None
        except OSError as e:
            raise _fail(label, f"cannot access it ({e.strerror or e})") from None
        if stat.S_ISDIR(st.st_mode):
            raise _fail(label, "it is a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise _fail(label, "it is not a regular file")
        if st.st_size == 0:
            raise _fail(label, "the file is empty (0 bytes)")
        fp = path
    else:
        raise ParameterError(
            f"an image source is a path, bytes or a PIL image, not {type(source).__name__}")

    with warnings.catch_warnings():
        # a decompression-bomb *warning* is an error here; PIL's global limit stays untouched
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if fp is None:
                return _decode(source, label)  # type: ignore[arg-type]
            with Image.open(fp, formats=_formats()) as img:
                out = _decode(img, label)
                if img.format == "JPEG":
                    check_jpeg(fp.getvalue() if isinstance(fp, io.BytesIO) else fp.read_bytes(),
                               label)
                return out
        except ImageError:
            raise
        except FileNotFoundError:
            raise _fail(label, "no such file") from None
        except Exception as e:  # any decoder failure on untrusted data is an ImageError
            raise _fail(label, _explain(e, source, path)) from e


def load_image(source: ImageSource, size: int | None = None, *,
               name: str | None = None) -> torch.Tensor:
    """Read ``source`` (a path, bytes, or a PIL image) as a float32 ``(3, H, W)`` tensor in
    [0, 1]; with ``size``, resized (antialiased bilinear) to ``size x size``.

    Conversions and refusals as in :func:`load_pil`; bytes over :data:`MAX_BYTES` are refused.
    ``name`` (optional) is used in error messages instead of the path / ``'<bytes>'``.
    """
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ParameterError(f"size must be a positive int or None, got {size!r}")
        if size * size > MAX_PIXELS:
            raise ParameterError(f"size {size} is over the limit of {MAX_PIXELS} pixels")
    pixels = _fast_png(source, name)
    img = None
    if pixels is None:
        img = load_pil(source, name=name)
    elif size is not None and tuple(pixels.shape[1:]) != (size, size):
        img = Image.fromarray(pixels.permute(1, 2, 0).numpy())  # PIL's pixels: one resize
    if img is not None:
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
    return pixels.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _fast_png(source: ImageSource, name: str | None) -> torch.Tensor | None:
    """uint8 (3, H, W) pixels of a plain PNG from the GIL-free reader (:mod:`attnviz.pngread`:
    the same pixels as PIL's), or None: PIL reads it."""
    data = pngread.png_bytes(source, MAX_BYTES)
    dims = pngread.plain_png(data) if data is not None else None
    if dims is None:
        return None
    _check_size(dims, _source_name(source, name))  # as PIL's path checks before decoding
    return pngread.decode(data)  # type: ignore[arg-type]


def to_numpy_image(t: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` (or ``(1, 3, H, W)``, or grey ``(1, H, W)`` / ``(H, W)``) image tensor
    as a float32 ``(H, W, 3)`` array clipped to [0, 1], ready for ``plt.imshow``."""
    if not isinstance(t, torch.Tensor):
        raise ParameterError(f"expected an image tensor, got {type(t).__name__}")
    x = t.detach().to("cpu", torch.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ParameterError(f"expected a (3, H, W) image tensor, got shape {tuple(t.shape)}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.permute(1, 2, 0).clamp(0.0, 1.0).numpy().copy()


__all__ = [
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "MAX_BYTES",
    "MAX_PIXELS",
    "JPEG_DAMAGE",
    "MIN_SIDE",
    "ImageSource",
    "check_jpeg",
    "check_upload",
    "find_images",
    "load_image",
    "load_pil",
    "over_limit",
    "to_numpy_image",
]

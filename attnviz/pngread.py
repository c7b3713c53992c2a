"""The fast reader of plain PNG files behind :func:`attnviz.load_image`.

PIL decodes a PNG while holding Python's global interpreter lock, so a reader thread decoding
the next batch stalls the model running in the main thread. TorchCodec's libpng decoder
releases the lock and, for a small image, takes about half the time. It is used only where its
pixels are PIL's, bit for bit: 8-bit RGB or grey PNGs, not interlaced (PNG is lossless; grey
becomes RGB by repeating the value in both), with

* no transparency (``tRNS``: PIL's path composites it on white, libpng would drop it),
* no EXIF or XMP data that may carry an orientation (``eXIf``, text chunks named for EXIF or
  XMP: PIL's path applies it),
* no animation (``acTL``: PIL's path gives the first frame),
* every chunk but the image data passing its CRC check (libpng checks the image data itself),
* and a size within :data:`attnviz.images.MAX_BYTES`.

Any other file, a decoding error, TorchCodec missing, or a system without POSIX file reads
(``os.pread``): PIL reads the file as before, with the same checks and messages.

    data = png_bytes("cat.png", MAX_BYTES)  # bytearray, or None (not a PNG, not a plain file)
    if data is not None and (dims := plain_png(data)):
        pixels = decode(data)               # uint8 (3, H, W), or None
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable
from typing import Any

import torch

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: chunks after which PIL's pixels may differ from libpng's: transparency, EXIF, animation
_CONVERTED = frozenset((b"tRNS", b"eXIf", b"acTL"))
_TEXT = frozenset((b"tEXt", b"zTXt", b"iTXt"))
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_POSIX_READS = hasattr(os, "pread") and hasattr(os, "readv")
_NOT_LOADED: Any = object()
_decoder: Any = _NOT_LOADED


def png_bytes(source: object, limit: int) -> bytearray | None:
    """The bytes of ``source`` (a path, bytes) when they start like a PNG and hold at most
    ``limit`` bytes; None otherwise (other formats, folders, special files, errors: the PIL
    path refuses or reads those, with its messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > limit or bytes(source[:8]) != SIGNATURE:
            return None
        return bytearray(source)
    if not _POSIX_READS or not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        return None
    path = os.path.expanduser(os.fspath(source))
    try:  # non-blocking: opening a FIFO must not wait for a writer (fstat then refuses it)
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or not 8 < st.st_size <= limit
                or os.pread(fd, 8, 0) != SIGNATURE):
            return None
        data = bytearray(st.st_size)
        got = os.readv(fd, [data])
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if got == st.st_size else None  # changed while read: PIL's path reads it


def plain_png(data: bytes | bytearray) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG whose pixels :func:`decode` gives exactly as PIL would
    (see the module's description), else None."""
    view = memoryview(data)
    if bytes(view[:8]) != SIGNATURE:
        return None
    pos, n, dims = 8, len(view), None
    while pos + 12 <= n:
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > n:
            return None  # truncated
        body = view[pos + 8:end - 4]
        if kind != b"IDAT" and zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(
                view[end - 4:end], "big"):
            return None
        if dims is None:
            if kind != b"IHDR" or length != 13:
                return None
            w, h = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour, compression, filtering, interlace = bytes(body[8:13])
            if (depth != 8 or colour not in (0, 2) or compression or filtering or interlace
                    or not w or not h):
                return None
            dims = (w, h)
        elif kind in _CONVERTED:
            return None
        elif kind in _TEXT:
            keyword = bytes(body[:80]).split(b"\0", 1)[0].lower()
            if b"exif" in keyword or b"xmp" in keyword:
                return None
        elif kind == b"IEND":
            return dims
        pos = end
    return None  # no IEND: let PIL judge


def _load_decoder() -> Callable[..., torch.Tensor] | None:
    global _decoder
    if _decoder is _NOT_LOADED:
        try:
            from torchcodec.decoders import decode_png
        except Exception:  # not installed, or built for another torch: PIL reads every PNG
            decode_png = None
        _decoder = decode_png
    return _decoder


def decode(data: bytearray) -> torch.Tensor | None:
    """The pixels of a :func:`plain_png` file as uint8 ``(3, H, W)`` (the GIL released while
    decoding); None when TorchCodec is missing or refuses the data."""
    dec = _load_decoder()
    if dec is None:
        return None
    try:
        out = dec(torch.frombuffer(data, dtype=torch.uint8), mode="RGB")
    except Exception:  # damaged data: PIL's path words the error
        return None
    return out if out.dtype == torch.uint8 and out.ndim == 3 and out.shape[0] == 3 else None


__all__ = ["SIGNATURE", "decode", "plain_png", "png_bytes"]

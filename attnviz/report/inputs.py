"""Reading the report's images: file lists, a DataLoader-friendly dataset that never raises on a
bad file, and a reader thread that decodes the next batch while the model runs."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ImageError, ParameterError
from ..images import load_image
from ..models.preprocess import resize
from ..resources import data_dir
from ..scan import find_images
from ..terminal import shown

T = TypeVar("T")


def _reason(e: BaseException, path: str) -> str:
    """The reason part of an error message (the path is listed next to it)."""
    text = str(e).strip() or type(e).__name__
    for prefix in (f"cannot read image {path}: ", f"cannot read image {shown(path)}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text if isinstance(e, ImageError) else f"{type(e).__name__}: {text}"


class ImageFiles(Dataset):
    """Image files as ``(index, image, None)`` or, when a file cannot be read,
    ``(index, None, reason)``: a bad file never raises inside a DataLoader worker."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int) -> None:
        self.paths = [str(p) for p in paths]
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str | None]:
        path = self.paths[i]
        try:
            return i, resize(load_image(path), self.size), None
        except Exception as e:  # any failure on one file is reported, not raised
            return i, None, _reason(e, path)


def collate_images(
    items: Sequence[tuple[int, Tensor | None, str | None]],
) -> tuple[list[int], Tensor | None, list[tuple[int, str]]]:
    """Separate good images (stacked) from error markers: ``(indices, batch | None, bad)``."""
    good = [(i, im) for i, im, err in items if err is None and im is not None]
    bad = [(i, err or "unknown error") for i, im, err in items if err is not None or im is None]
    batch = torch.stack([im for _, im in good]) if good else None
    return [i for i, _ in good], batch, bad


def as_inputs(images: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[str]:
    """The inputs as a list of texts; None: the bundled sample images."""
    if images is None:
        images = [data_dir() / "images"]
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    try:
        items = [os.fspath(x) for x in images]
    except TypeError:
        raise ParameterError(
            f"images must be files, folders or glob patterns, got {images!r}") from None
    if not items:
        raise ParameterError("no images given: pass image files, folders or glob patterns")
    return items


def collect_images(
    images: str | os.PathLike | Iterable[str | os.PathLike] | None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """``(paths, missed)`` for files/folders/globs; ParameterError when nothing matched at all."""
    inputs = as_inputs(images)
    paths, missed = find_images(inputs)
    if not paths:
        detail = "; ".join(f"{i or repr(i)}: {why}" for i, why in missed)
        raise ParameterError(f"no images found in {', '.join(map(repr, inputs))} ({detail})")
    return [str(p) for p in paths], [(str(i), why) for i, why in missed]


_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a reader thread, ``depth`` ahead (image decoding and resizing release
    the GIL, so reading overlaps the forward pass). Errors are re-raised here; leaving the loop
    early stops the thread."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
        except BaseException as e:  # handed to the consumer
            put((None, e))
            return
        put((_DONE, None))

    thread = threading.Thread(target=work, name="attnviz-report-reader", daemon=True)
    thread.start()
    try:
        while True:
            x, err = q.get()
            if err is not None:
                raise err
            if x is _DONE:
                return
            yield x
    finally:
        stop.set()
        thread.join(timeout=5)


__all__ = ["ImageFiles", "as_inputs", "collate_images", "collect_images", "prefetch", "resize"]

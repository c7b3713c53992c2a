"""Reading the report's images: the same sources as ``attnviz stats`` (files, folders, globs, an
ImageFolder tree, ``shapes:N``, tar shards; :mod:`attnviz.engine.sources`), in batches that never
raise on a bad file, and a reader thread that decodes the next batch while the model runs."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from torch.utils.data import DataLoader

from ..engine.sources import Source, collate, open_source
from ..errors import ParameterError
from ..resources import data_dir

T = TypeVar("T")


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


def open_images(images: str | os.PathLike | Iterable[str | os.PathLike] | None,
                size: int) -> Source:
    """The report's data, read as ``attnviz stats`` reads it (one set of sources): image files,
    folders and glob patterns (None: the bundled samples), an ImageFolder tree, ``shapes:N``
    (generated, with ground-truth masks) or tar shards, at ``size`` px. ParameterError when
    nothing matched at all."""
    return open_source(as_inputs(images), size)


def batches(source: Source, size: int, batch_size: int, workers: int, pin: bool,
            classes: int | None = None) -> DataLoader:
    """The source's items in order, in batches (:func:`attnviz.engine.sources.collate`: ``name``,
    ``image``, ``mask``, ``bad``, ...); a file that cannot be read is an item with its reason,
    never an exception."""
    common = dict(batch_size=batch_size, collate_fn=collate, pin_memory=pin)
    if source.dataset is not None:
        n = len(source.dataset)  # type: ignore[arg-type]
        return DataLoader(source.dataset, sampler=[(i, i) for i in range(n)],
                          num_workers=workers, **common)
    from ..engine.shards import TarShards

    shards = source.shards or []
    return DataLoader(TarShards(shards, size, classes), num_workers=min(workers, len(shards)),
                      **common)


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


__all__ = ["as_inputs", "batches", "open_images", "prefetch"]

"""WebDataset tar shards as a stream of items, with the ``webdataset`` package.

A sample is the files sharing one key in a shard (``0001.jpg``, ``0001.cls``, ...): its image
is the first of ``jpg jpeg png webp bmp tif tiff ppm gif`` present and read with
:func:`attnviz.load_image` (same checks as any image); its label is the integer in ``cls``
(or ``label``, ``class``) when present. Each process reads its own shards (shard i goes to
rank i mod world) and, inside it, each DataLoader worker its own; a sample is named
``shard.tar#key``. Damaged samples and tar errors are items with a reason, never fatal.

Members are read one at a time from the (decompressed) stream: a member whose declared size is
over :data:`attnviz.images.MAX_BYTES` is skipped unread and its sample listed with the reason,
so a small ``.tar.gz`` holding a huge member never reaches memory.
"""
from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from torch.utils.data import IterableDataset, get_worker_info

from ..checks import size_text
from ..errors import MissingDependencyError
from ..images import MAX_BYTES, load_image
from ..models.preprocess import resize
from .sources import Item, failure, item

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "gif")
LABEL_KEYS = ("cls", "label", "class")


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise MissingDependencyError(
            "reading tar shards needs webdataset, which is not installed: "
            "pip install 'attnviz[stats]'") from None
    return webdataset


@dataclass(frozen=True)
class Unread:
    """A member left unread because its declared size is over the limit."""

    name: str
    size: int

    def reason(self) -> str:
        return (f"its member {self.name!r} declares {size_text(self.size)}, over the limit of "
                f"{size_text(MAX_BYTES)}; not read")


_META = re.compile(r"__[^/]*__($|/)")


def tar_members(shard: str, handler: Callable[[BaseException], bool],
                limit: int = MAX_BYTES) -> Iterator[dict]:
    """``{fname, data, __url__}`` for each regular member of ``shard``, streamed (``.tar.gz``
    decompressed as it is read); ``data`` is :class:`Unread` for a member over ``limit``
    bytes (skipped without reading it). Errors go to ``handler`` (True: go on)."""
    try:
        with open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as stream:
            for info in stream:
                if not info.isreg() or _META.match(info.name):
                    continue
                if info.size > limit:
                    data: bytes | Unread = Unread(info.name, info.size)
                else:
                    member = stream.extractfile(info)
                    data = member.read(limit + 1) if member is not None else b""
                    if len(data) > limit:  # never with a true header; kept as a guard
                        data = Unread(info.name, len(data))
                yield {"fname": info.name, "data": data, "__url__": shard}
                stream.members = []  # a stream keeps every member's header otherwise
    except Exception as e:  # a damaged or truncated shard: what was read so far counts
        handler(e)


def _label(sample: dict, classes: int | None) -> tuple[int, str | None]:
    for k in LABEL_KEYS:
        if k in sample:
            raw = sample[k]
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            try:
                value = int(text.strip())
            except ValueError:
                return -1, f"its {k} is not an integer class: {text.strip()[:40]!r}"
            if classes is not None and not 0 <= value < classes:
                return -1, f"its {k} {value} is not a class of the model (0..{classes - 1})"
            return value, None
    return -1, None


def decode_sample(sample: dict, size: int, classes: int | None) -> Item:
    """An item from a raw WebDataset sample (bytes per file extension)."""
    name = f"{sample.get('__url__', '?')}#{sample.get('__key__', '?')}"
    label, bad_label = _label(sample, classes)
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    unread = [v for v in sample.values() if isinstance(v, Unread)]
    if unread:
        return item(name, -1, reason=unread[0].reason())
    if key is None:
        files = ", ".join(sorted(k for k in sample if not k.startswith("__")))
        return item(name, -1, reason=f"no image in this sample (files: {files or 'none'})")
    if bad_label:
        return item(name, -1, reason=bad_label)
    try:
        return item(name, -1, resize(load_image(sample[key], name=name), size), label)
    except Exception as e:  # one bad sample is listed, never fatal
        return item(name, -1, label=label, reason=failure(e, name))


class TarShards(IterableDataset):
    """The samples of ``shards`` in order; ``done[shard]`` samples of a shard are skipped
    (``--resume``). Items carry ``stream`` = the shard and ``pos`` = the sample's position."""

    def __init__(self, shards: Sequence[str], size: int, classes: int | None,
                 done: dict[str, int] | None = None) -> None:
        _webdataset()
        self.shards, self.size, self.classes = list(shards), size, classes
        self.done = dict(done or {})

    def _mine(self) -> list[str]:
        info = get_worker_info()
        return self.shards if info is None else self.shards[info.id::info.num_workers]

    def __iter__(self) -> Iterator[Item]:
        wds = _webdataset()
        for shard in self._mine():
            errors: list[BaseException] = []

            def handler(e: BaseException, errors: list = errors) -> bool:
                errors.append(e)
                return True  # go on with the next sample or shard

            samples = wds.tariterators.group_by_keys(tar_members(shard, handler),
                                                     handler=handler)
            pos = -1
            for pos, sample in enumerate(samples):
                if pos >= self.done.get(shard, 0):
                    out = decode_sample(sample, self.size, self.classes)
                    out.update(stream=shard, pos=pos, index=pos)
                    yield out
            if errors and not self.done.get(f"{shard}#error"):  # a damaged shard, listed once
                out = item(shard, -1, reason=f"tar error: {failure(errors[0], shard)}")
                out.update(stream=f"{shard}#error", pos=0)
                yield out

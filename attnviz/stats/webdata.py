"""WebDataset tar shards as a stream of items, with the ``webdataset`` package.

A sample is the files sharing one key in a shard (``0001.jpg``, ``0001.cls``, ...): its image
is the first of ``jpg jpeg png webp bmp tif tiff ppm gif`` present and read with
:func:`attnviz.load_image` (same checks as any image); its label is the integer in ``cls``
(or ``label``, ``class``) when present. Each process reads its own shards (shard i goes to
rank i mod world) and, inside it, each DataLoader worker its own; a sample is named
``shard.tar#key``. Damaged samples and tar errors are items with a reason, never fatal.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import IterableDataset, get_worker_info

from ..errors import MissingDependencyError
from ..images import load_image
from ..models.preprocess import resize
from .data import Item, failure, item

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

            samples = wds.tarfile_samples([{"url": shard}], handler=handler)
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

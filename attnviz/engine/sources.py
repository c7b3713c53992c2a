"""What ``DATA`` names: an ImageFolder tree, image files / folders / globs, ``shapes:N`` or
WebDataset tar shards, as items ``{name, index, image, label, mask, reason, stream, pos}``.

* ImageFolder: one folder whose top level holds sub-folders and no image file; each
  sub-folder (sorted by name) is a class, its images are found at any depth (``**``); a
  class name with bytes that are not UTF-8 or control characters is shown escaped.
* Files: image files, folders (their image files) and glob patterns, as everywhere in attnviz;
  no labels.
* ``shapes:N``: N generated shapes images from the held-out stream (seed 1, as
  ``attnviz evaluate``), rendered at the model's input size, with labels and object masks.
* Tar shards (``.tar``, ``.tar.gz``, ``.tgz``; brace ranges ``data-{000..099}.tar`` and globs
  expand): WebDataset samples, see :mod:`attnviz.engine.shards`.

An item that cannot be read has ``image=None`` and the ``reason``; it never raises.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..checks import MAX_ITEMS, check_int
from ..datasets import CLASSES, ShapesDataset
from ..errors import ParameterError
from ..images import load_image
from ..models.preprocess import resize
from ..scan import IMAGE_SUFFIXES, find_images, glob_paths
from ..terminal import printable

SHAPES_SEED = 1  # the held-out stream of attnviz.evaluate (training uses seed 0)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_SHAPES = re.compile(r"^shapes:(\d{1,30})$")
#: most tar shards one run reads (brace ranges are expanded lazily, up to this many names)
MAX_SHARDS = 100_000

Item = dict[str, Any]


def item(name: str, index: int, image: torch.Tensor | None = None, label: int = -1,
         mask: torch.Tensor | None = None, reason: str | None = None) -> Item:
    """One sample (``stream``/``pos`` are filled in by whoever knows the order)."""
    return {"name": name, "index": index, "image": image, "label": label, "mask": mask,
            "reason": reason, "stream": "", "pos": -1}


def failure(e: BaseException, name: str) -> str:
    """The reason part of an error while reading ``name``."""
    text = str(e).strip() or type(e).__name__
    prefix = f"cannot read image {name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


class FileItems(Dataset):
    """Image files (with labels for an ImageFolder), indexed by ``(position, index)``."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int] | None, size: int) -> None:
        self.paths, self.labels, self.size = list(paths), labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> Item:
        pos, i = key
        path = self.paths[i]
        label = self.labels[i] if self.labels is not None else -1
        try:
            out = item(path, i, resize(load_image(path), self.size), label)
        except Exception as e:  # one bad file is listed, never fatal
            out = item(path, i, label=label, reason=failure(e, path))
        out["pos"] = pos
        return out


class ShapesItems(Dataset):
    """``shapes:N``: generated images with labels and ground-truth object masks."""

    def __init__(self, n: int, size: int, seed: int = SHAPES_SEED) -> None:
        self.data = ShapesDataset(n, seed=seed, size=size)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> Item:
        pos, i = key
        image, label, mask = self.data[i]
        out = item(f"shapes:{i}", i, image, label, mask)
        out["pos"] = pos
        return out


@dataclass
class Source:
    """The data of a run: its ``kind``, class names (None: no labels), the map-style
    ``dataset`` or the tar ``shards``, and the files a scan left out with the reason."""

    kind: str
    spec: list[str]
    classes: list[str] | None
    dataset: Dataset | None = None
    shards: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ground_truth: bool = False

    def files(self) -> list[str]:
        """The files this run reads (image files, or tar shards)."""
        if self.shards is not None:
            return list(self.shards)
        return list(getattr(self.dataset, "paths", []))

    def digest(self) -> str:
        """A fingerprint of the data: the names, sizes and modification times of its files
        (sha256), so that ``--resume`` refuses a data set that was replaced or edited."""
        import hashlib

        h = hashlib.sha256()
        for path in self.files():
            try:
                st = os.stat(path)
                facts = f"{st.st_size} {st.st_mtime_ns}"
            except OSError as e:
                facts = f"missing {e.errno}"
            h.update(os.fsencode(path) + b"\0" + facts.encode() + b"\n")
        return h.hexdigest()

    @property
    def n(self) -> int | None:
        """Items in all (None for tar shards: not known before reading them)."""
        return len(self.dataset) if self.dataset is not None else None  # type: ignore[arg-type]


def _is_tar(text: str) -> bool:
    return text.lower().endswith(TAR_SUFFIXES)


_RANGE = re.compile(r"^(-?\d+|[A-Za-z])\.\.(-?\d+|[A-Za-z])(?:\.\.(-?\d+))?$")


def _depths(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """``(index, char, brace depth after it)`` along ``text`` from ``start``; an escaped
    character (after ``\\``) is skipped."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        depth += (ch == "{") - (ch == "}")
        yield i, ch, depth
        i += 1


def _closing(text: str, start: int) -> int:
    """The index of the ``}`` closing the ``{`` at ``start`` (-1: none)."""
    return next((i for i, ch, depth in _depths(text, start) if ch == "}" and depth == 0), -1)


def _split_commas(body: str) -> list[str]:
    parts, last = [], 0
    for i, ch, depth in _depths(body):
        if ch == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    return parts + [body[last:]]


def brace_count(text: str) -> int:
    """How many names the brace pattern ``text`` expands to (an upper bound), computed
    without expanding it (``braceexpand`` builds a whole range as a list first)."""
    start = text.find("{")
    while start > 0 and text[start - 1] == "\\":
        start = text.find("{", start + 1)
    if start < 0:
        return 1
    end = _closing(text, start)
    if end < 0:
        return brace_count(text[start + 1:])
    body = text[start + 1:end]
    alts = _split_commas(body)
    if len(alts) > 1:
        inner = sum(brace_count(a) for a in alts)
    elif m := _RANGE.match(body):
        a, b = (int(v) if v.lstrip("-").isdigit() else ord(v) for v in m.group(1, 2))
        inner = abs(b - a) // max(1, abs(int(m.group(3) or 1))) + 1
    else:
        inner = brace_count(body)
    return inner * brace_count(text[end + 1:])


def _expand_braces(text: str, limit: int = MAX_SHARDS) -> list[str]:
    """The names a brace pattern expands to, at most ``limit`` (a ParameterError beyond)."""
    import braceexpand  # a dependency of webdataset

    try:
        names = list(braceexpand.braceexpand(text)) if brace_count(text) <= limit else []
    except braceexpand.UnbalancedBracesError:
        raise ParameterError(f"the pattern {printable(text)!r} has unbalanced braces") from None
    if not names or len(names) > limit:
        raise ParameterError(f"the pattern {printable(text)!r} expands to more than {limit} "
                             f"names (at most {MAX_SHARDS} tar shards in one run)")
    return names


def tar_shards(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Local tar files named by ``inputs`` (brace ranges and globs expanded), sorted."""
    found: dict[str, None] = {}
    missed: list[tuple[str, str]] = []
    budget = MAX_SHARDS
    for text in inputs:
        parts = _expand_braces(text, budget)
        budget -= len(parts)
        for part in parts:
            hits = [str(p) for p in glob_paths(part, missed)] if glob.has_magic(part) else [part]
            tars = [h for h in hits if _is_tar(h) and Path(h).is_file()]
            missed += [(h, "not a tar file") for h in hits if h not in tars]
            found.update(dict.fromkeys(tars))
            if not tars:
                missed.append((part, "matched no tar file"))
    return sorted(found), missed


def _image_folder(root: Path) -> bool:
    """A folder with sub-folders and no image files at its top level."""
    try:
        entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
    except OSError:
        return False
    has_dirs = any(e.is_dir(follow_symlinks=False) for e in entries)
    has_images = any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
                     for e in entries)
    return has_dirs and not has_images


def image_folder(root: Path, size: int) -> Source:
    """An ImageFolder tree: sub-folders are the classes (sorted), images at any depth."""
    classes = sorted(e.name for e in os.scandir(root)
                     if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for k, name in enumerate(classes):
        found, missed = find_images([str(Path(glob.escape(str(root / name))) / "**" / "*")])
        paths += [str(p) for p in found]
        labels += [k] * len(found)
        skipped += [(p, why) for p, why in missed if why != "matched no image file"]
    if not paths:
        raise ParameterError(f"no images found in the class folders of {str(root)!r}")
    shown = [printable(c) for c in classes]  # names that are not UTF-8 or hold ESC, escaped
    return Source("imagefolder", [str(root)], shown, FileItems(paths, labels, size),
                  skipped=skipped)


def open_source(inputs: Sequence[str], size: int) -> Source:
    """The :class:`Source` for the ``DATA`` arguments; images are read at ``size`` px."""
    inputs = [os.fspath(x) for x in ([inputs] if isinstance(inputs, str) else inputs)]
    if not inputs:
        raise ParameterError("no data given: pass a folder, files, globs, shapes:N or tar shards")
    m = _SHAPES.match(inputs[0]) if len(inputs) == 1 else None
    if m:
        n = check_int("shapes:N", int(m.group(1)), 1, MAX_ITEMS)
        return Source("shapes", inputs, list(CLASSES), ShapesItems(n, size), ground_truth=True)
    if any(s.startswith("shapes:") for s in inputs):
        raise ParameterError("shapes:N must be the only data argument, N a whole number, "
                             f"got {' '.join(inputs)!r}")
    if any(_is_tar(s) for s in inputs):
        if not all(_is_tar(s) for s in inputs):
            raise ParameterError("tar shards cannot be mixed with image files or folders")
        shards, missed = tar_shards(inputs)
        if not shards:
            detail = "; ".join(f"{p}: {why}" for p, why in missed[:5])
            raise ParameterError(f"no tar shards found ({detail})")
        return Source("webdataset", inputs, None, shards=shards, skipped=missed)
    if len(inputs) == 1 and Path(inputs[0]).is_dir() and _image_folder(Path(inputs[0])):
        return image_folder(Path(inputs[0]), size)
    found, missed = find_images(inputs)
    if not found:
        detail = "; ".join(f"{p or repr(p)}: {why}" for p, why in missed[:5])
        raise ParameterError(f"no images found in {', '.join(map(repr, inputs))} ({detail})")
    return Source("files", inputs, None, FileItems([str(p) for p in found], None, size),
                  skipped=missed)


def collate(items: Sequence[Item]) -> dict[str, Any]:
    """A batch: the readable items' ``name``, ``index``, ``image`` (B, 3, S, S), ``label``
    and ``mask`` (or None), the unreadable ones in ``bad`` as ``(name, reason)``, and every
    item's ``(stream, pos)`` in ``seen``."""
    good = [it for it in items if it["reason"] is None]
    masks = [it["mask"] for it in good]
    return {
        "name": [it["name"] for it in good],
        "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
        "image": torch.stack([it["image"] for it in good]) if good else None,
        "label": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "mask": torch.stack(masks) if good and all(m is not None for m in masks) else None,
        "bad": [(it["name"], it["reason"]) for it in items if it["reason"] is not None],
        "seen": [(it["stream"], it["pos"]) for it in items],
    }

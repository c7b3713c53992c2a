"""The output folder: work happens in ``OUT/.attnviz-stats-partial/``, results appear at once.

While a run is going (or after it was interrupted) nothing in ``OUT`` changes except the work
folder, which holds the checkpoints and the per-image parts. At the end rank 0 builds
``stats.json`` and ``stats.html`` in the work folder, then renames ``per_image/`` into ``OUT``,
then ``stats.html``, and ``stats.json`` last (each rename atomic): a ``stats.json`` in ``OUT``
is always a complete run's, and the work folder is removed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

WORK = ".attnviz-stats-partial"
PER_IMAGE = "per_image"


def work_dir(out: Path) -> Path:
    return out / WORK


def start(out: Path, resume: bool) -> tuple[Path, bool]:
    """The work folder, emptied unless ``resume``; returns ``(folder, resuming)`` where
    ``resuming`` says whether there was anything to resume."""
    work = work_dir(out)
    had = work.is_dir()
    if had and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return work, had and resume


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """``doc`` as JSON, via a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def publish(work: Path, out: Path, names: tuple[str, ...] = ("stats.html", "stats.json")) -> None:
    """Move the finished results from ``work`` into ``out`` (``per_image/`` first, ``names`` in
    order) and remove ``work``. A ``per_image/`` of an earlier run in ``out`` is replaced."""
    old = out / PER_IMAGE
    if old.exists():
        old.rename(work / "old-per_image")
    new = work / PER_IMAGE
    if new.is_dir():
        new.rename(old)
    for name in names:
        os.replace(work / name, out / name)
    shutil.rmtree(work, ignore_errors=True)

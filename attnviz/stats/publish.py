"""The output folder of ``attnviz stats``, published by the one publisher
(:class:`attnviz.publish.Publisher`): work happens in ``OUT/.attnviz-stats-partial/`` (kept for
``--resume`` when a run stops), under the lock every attnviz command takes on its output folder.

While a run is going (or after it was interrupted) nothing in ``OUT`` changes except the work
folder, which holds the checkpoints and the per-image parts. At the end rank 0 builds
``stats.json`` and ``stats.html`` in the work folder, then the publisher moves them and
``per_image/`` into a run folder and switches ``OUT``'s links to it with one rename (see
:mod:`attnviz.publish`): ``OUT`` shows the previous run or this one, whole. The work folder is
removed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..publish import Publisher

WORK = ".attnviz-stats-partial"
PER_IMAGE = "per_image"
#: what a stats run publishes, in order (stats.json last)
STATS_FILES = (PER_IMAGE, "stats.html", "stats.json")


def publisher(out: Path, resume: bool) -> Publisher:
    """The publisher of a stats run into ``out`` (work folder :data:`WORK`)."""
    return Publisher(out, STATS_FILES, what="stats run", stage=WORK, resume=resume)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """``doc`` as JSON, via a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)

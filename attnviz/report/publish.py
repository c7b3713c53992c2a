"""Outputs you can trust: one report at a time per folder, written aside, published together.

* :func:`refuse_protected`: never write into attnviz's own package folder, into the shipped
  ``data/`` folder or into a folder that holds a ``report.ipynb`` that ``attnviz report`` did
  not write (the shipped template in ``notebooks/``, a copy of it).
* :class:`Publication`: the one publisher of :mod:`attnviz.publish` (lock, staged write,
  publish by rename) for the report's files; ``report.html`` is published last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ParameterError
from ..publish import LOCK_NAME, Publisher
from ..resources import REPORT_NOTEBOOK, shipped_dir

#: every file a report may write into ``OUT``, in publishing order (the page last)
REPORT_FILES = ("summary.csv", "summary.json", REPORT_NOTEBOOK, "report.html")
#: the key in an executed report notebook's metadata that marks it as ours
NOTEBOOK_MARK = "attnviz_report"


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def written_by_report(notebook: Path) -> bool:
    """Is ``notebook`` an executed report that ``attnviz report`` wrote (not the template)?"""
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get(NOTEBOOK_MARK), dict)


def refuse_protected(out: Path) -> None:
    """ParameterError when ``out`` is inside the attnviz package or the shipped ``data/``
    folder (demo checkpoints, sample images), or holds a ``report.ipynb`` that no report run
    wrote (the shipped template or a copy). ``notebooks/reports/`` is allowed: it is where
    ``report.ipynb`` run with its defaults from ``notebooks/`` writes."""
    real = Path(os.path.realpath(out))
    package = _package_dir()
    data = Path(os.path.realpath(shipped_dir("data")))
    for folder, what in ((package, "the attnviz package"),
                         (data, "attnviz's shipped data folder")):
        if real == folder or folder in real.parents:
            raise ParameterError(f"output folder {str(out)!r} is inside {what} ({folder}), "
                                 "which holds files attnviz ships; choose another --out")
    nb = out / REPORT_NOTEBOOK
    if (nb.exists() or nb.is_symlink()) and not written_by_report(nb):
        raise ParameterError(f"output folder {str(out)!r} holds {REPORT_NOTEBOOK}, which "
                             "attnviz report did not write (the report template or a copy of "
                             "it); choose another --out")


class Publication(Publisher):
    """``with Publication(out) as pub:`` write the report's files into ``pub.stage``, then
    ``pub.publish()`` (see :class:`attnviz.publish.Publisher`)."""

    def __init__(self, out: str | os.PathLike) -> None:
        super().__init__(out, REPORT_FILES, what="report")


__all__ = ["LOCK_NAME", "NOTEBOOK_MARK", "REPORT_FILES", "Publication", "refuse_protected",
           "written_by_report"]

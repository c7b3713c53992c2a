"""``summary.csv`` and ``summary.json``: safe to open in a spreadsheet, strict JSON.

* CSV text cells that start with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return get a
  leading ``'`` (spreadsheets would otherwise run them as formulas); numbers are written as
  numbers, NaN and infinite values as empty cells.
* File names whose bytes are not UTF-8 are written escaped (``caf\\xe9.png``), never a crash.
* JSON is strict (RFC 8259): NaN and ±Infinity, which ``json`` would write as bare ``NaN`` /
  ``Infinity``, are written as ``null``; ``non_finite`` says where they came from.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..terminal import text_name
from .stats import SUMMARY_FIELDS

if TYPE_CHECKING:
    from .analysis import ReportData

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value as a safe CSV cell: formula-like text prefixed with ``'``, None and
    non-finite numbers empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return value if math.isfinite(value) else ""
    if isinstance(value, (int, bool)):
        return value
    text = text_name(str(value))
    return "'" + text if text.startswith(FORMULA_START) else text


def json_safe(value: Any) -> Any:
    """``value`` with every NaN / infinite float replaced by None (tuples become lists) and
    text that is not valid UTF-8 (file names with such bytes) escaped."""
    if isinstance(value, str):
        return text_name(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {text_name(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Strict JSON text (raises instead of writing NaN), compact: without ``indent`` Python's
    C encoder writes it (about 4x faster for a large report; ``python -m json.tool`` shows it
    indented)."""
    def encode(v: Any) -> str:
        return json.dumps(v, separators=(",", ":"), allow_nan=False, ensure_ascii=False) + "\n"

    try:  # no NaN / infinity, all text UTF-8: the common case, one C-encoder pass
        text = encode(value)
        text.encode("utf-8")  # a name with bytes that are not UTF-8 raises here
        return text
    except ValueError:  # UnicodeEncodeError too
        return encode(json_safe(value))


def write_summaries(run: ReportData, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``summary.csv`` (one row per image and layer) and ``summary.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_FIELDS)
        for row in run.summaries:
            w.writerow([csv_cell(row.get(k)) for k in SUMMARY_FIELDS])
    json_path.write_text(dumps(run.to_json()), encoding="utf-8")
    return csv_path, json_path


def read_summary(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``summary.json`` a report wrote (``{}`` when missing or unreadable)."""
    try:
        data = json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


__all__ = ["FORMULA_START", "csv_cell", "dumps", "json_safe", "read_summary", "write_summaries"]

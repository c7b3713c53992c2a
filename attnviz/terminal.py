"""Text for a terminal: one line, no escape sequences, file names escaped."""

from __future__ import annotations

import os
import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
#: control characters and bidirectional overrides (which reorder what a terminal shows)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def one_line(text: object) -> str:
    """``text`` for a terminal: ANSI colour codes removed, other control characters escaped
    (``\\x1b``), runs of whitespace (newlines too) collapsed to one space."""
    s = _ANSI.sub("", str(text))
    s = _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], s)
    return " ".join(s.split())


def shown(path: str | bytes | os.PathLike) -> str:
    """A file name quoted and escaped ``repr``-style, so that newlines or escape sequences in
    it reach a terminal as ``\\n`` / ``\\x1b``, on one line."""
    name = os.fspath(path)
    return repr(name if isinstance(name, str) else os.fsdecode(name))


__all__ = ["one_line", "shown"]

"""Text for a terminal: one line, no escape sequences, file names escaped."""

from __future__ import annotations

import os
import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
#: repr's escape of a byte that was not UTF-8 (os.fsdecode's surrogateescape), not after a "\\"
_SURROGATE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")
#: control characters and bidirectional overrides (which reorder what a terminal shows)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def text_name(name: str | bytes | os.PathLike) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 (a file name decoded by
    ``os.fsdecode``, which keeps them as lone surrogates) shown escaped as ``\\xe9``.

    Args:
        name: a file name or any text (str, bytes or path).

    Returns:
        ``name`` itself when it is valid text; else the escaped form, safe to write as UTF-8
        (CSV, JSON, HTML, Parquet, a terminal).
    """
    s = os.fspath(name)
    if isinstance(s, bytes):
        return s.decode("utf-8", "backslashreplace")
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file-name decoding made
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(name: str | bytes | os.PathLike) -> str:
    """``name`` (a class-folder name, a label) as text that draws as itself anywhere: bytes
    that are not UTF-8 and control characters (ESC too) escaped, nothing removed.

    Args:
        name: the text.

    Returns:
        The escaped text (equal to ``name`` when it needed no escaping).
    """
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text_name(name))


def one_line(text: object) -> str:
    """``text`` for a terminal: ANSI colour codes removed, other control characters escaped
    (``\\x1b``), bytes that are not UTF-8 escaped (``\\xe9``), runs of whitespace (newlines
    too) collapsed to one space."""
    return " ".join(printable(_ANSI.sub("", str(text))).split())


def shown(path: str | bytes | os.PathLike) -> str:
    """A file name quoted and escaped ``repr``-style, so that newlines or escape sequences in
    it reach a terminal as ``\\n`` / ``\\x1b``, on one line."""
    name = os.fspath(path)
    text = repr(name if isinstance(name, str) else os.fsdecode(name))
    return _SURROGATE.sub(r"\1\\x\2", text)  # repr's \udce9 (byte 0xe9) as \xe9


__all__ = ["one_line", "printable", "shown", "text_name"]

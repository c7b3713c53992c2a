"""Parameter checks shared by the report, training and the command line: output folders,
bounded integers and worker counts, each failing with one readable ParameterError line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ParameterError
from .terminal import one_line

#: Largest accepted batch size (a batch of 64-px images this size is already ~200 MB).
MAX_BATCH_SIZE = 4096


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` when it is an int in ``low..high``; else a ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        digits = str(value)
        got = digits if len(digits) <= 12 else f"{digits[:6]}... ({len(digits)} digits)"
        raise ParameterError(f"{name} must be at most {high}, got {got}")
    return value


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_workers(workers: int) -> int:
    """``workers`` capped at the CPU count (more reader processes than CPUs only add
    overhead, and DataLoader warns about it)."""
    return min(check_int("num_workers", workers, 0), cpu_count())


def check_path_text(name: str, path: str | os.PathLike) -> str:
    """``path`` as text; bytes paths and NUL bytes are a ParameterError."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise ParameterError(f"{name} must be a path, got {type(path).__name__}") from None
    if not isinstance(text, str):
        raise ParameterError(f"{name} must be a text path, not bytes: {text!r}")
    if "\0" in text:
        raise ParameterError(f"{name} {text!r} contains a NUL byte")
    return text


def check_out_dir(path: str | os.PathLike, name: str = "output folder") -> Path:
    """Make sure ``path`` is (or can be created as) a folder that files can be written to:
    creates it and writes (then removes) a probe file. Returns the absolute path."""
    out = Path(check_path_text(name, path)).expanduser().absolute()
    for parent in (out, *out.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is" if parent == out else f"is inside {str(parent)!r}, which is"
                raise ParameterError(f"{name} {str(out)!r} {where} not a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".attnviz-probe-"):
            pass
    except OSError as e:
        reason = one_line(e.strerror or e)
        raise ParameterError(f"cannot write to {name} {str(out)!r}: {reason}") from None
    return out


__all__ = ["MAX_BATCH_SIZE", "cap_workers", "check_int", "check_out_dir", "check_path_text",
           "cpu_count"]

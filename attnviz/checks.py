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
#: Largest square input side in px: a ResNet's first feature map alone holds 64 x (S/2)^2
#: float32 values per image (64 MB at 1024 px, 1.3 GB at 4000, 5.2 GB at 9000).
MAX_INPUT_SIZE = 1024
#: Most images a generated data set (``shapes:N``, ``--n``) may have.
MAX_ITEMS = 10_000_000
#: Most bytes a batch of input images (or a data set held in memory) may take as float32.
IMAGES_BUDGET = 4 * 2**30


def size_text(n: float) -> str:
    """A byte count for a message: ``4.0 GiB``, ``12.5 MiB``, ``800 B``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def check_input_size(value: object, name: str = "input_size") -> int:
    """An input side in px, 8..:data:`MAX_INPUT_SIZE`; the error states the memory estimate.

    Args:
        value: the side given.
        name: how the message names it.

    Returns:
        ``value``.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_INPUT_SIZE:
        need = 64 * (value // 2) ** 2 * 4
        raise ParameterError(
            f"{name} must be at most {MAX_INPUT_SIZE} px, got {number_text(value)}: a ResNet's "
            f"first feature map alone would take {size_text(need)} per image")
    return check_int(name, value, 8)


def check_images_memory(what: str, n: int, size: int, per_pixel: int = 12,
                        budget: int = IMAGES_BUDGET) -> None:
    """Refuse ``n`` images of ``size`` x ``size`` px held at once when they pass ``budget``.

    Args:
        what: how the message names the count (``--batch-size 4096``).
        n: images held at once.
        size: their side in px.
        per_pixel: bytes per pixel (12: RGB float32).
        budget: the most bytes allowed.
    """
    need = n * size * size * per_pixel
    if need > budget:
        most = max(1, budget // (size * size * per_pixel))
        raise ParameterError(
            f"{what} at {size} px: {size_text(need)} for the images alone, more than the "
            f"{size_text(budget)} allowed; at most {most} at this size")


def number_text(value: int) -> str:
    """An integer for a message, shortened when it has more than 12 digits."""
    digits = str(value)
    return digits if len(digits) <= 12 else f"{digits[:6]}... ({len(digits)} digits)"


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` when it is an int in ``low..high``; else a ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ParameterError(f"{name} must be at most {high}, got {number_text(value)}")
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


__all__ = ["IMAGES_BUDGET", "MAX_BATCH_SIZE", "MAX_INPUT_SIZE", "MAX_ITEMS", "cap_workers",
           "check_images_memory", "check_input_size", "check_int", "check_out_dir",
           "check_path_text", "cpu_count", "number_text", "size_text"]

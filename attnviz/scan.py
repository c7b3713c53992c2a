"""Finding image files: files, folders and glob patterns into a list of paths, and a reason for
every file that was left out.

    paths, skipped = find_images(["photos/", "extra/**/*.png", "dog.jpg"])

Directory symlinks are never followed by ``**`` (two symlink cycles cannot make a scan run for
ever), FIFOs, sockets and devices are never opened, and every file a folder or pattern turned
up but that was not taken (HEIC, SVG, EPS, text files, dangling links, FIFOs, ...) is listed in
``skipped`` with the reason, as are inputs that gave nothing.
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .errors import ParameterError

#: File suffixes (lower case) that :func:`find_images` picks up in folders and glob patterns.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".apng", ".avif", ".bmp", ".gif", ".jfif", ".jpe", ".jpeg", ".jpg", ".pbm", ".pgm", ".png",
    ".ppm", ".tif", ".tiff", ".webp",
)

#: Suffixes with a specific reason for leaving them out.
_REFUSED: dict[str, str] = {
    ".heic": "HEIC/HEIF photos are not supported; convert them to JPEG or PNG",
    ".heif": "HEIC/HEIF photos are not supported; convert them to JPEG or PNG",
    ".svg": "an SVG drawing; only raster images (PNG, JPEG, ...) are supported",
    ".svgz": "an SVG drawing; only raster images (PNG, JPEG, ...) are supported",
    ".eps": "EPS/PostScript is refused (reading it would run Ghostscript)",
    ".ps": "EPS/PostScript is refused (reading it would run Ghostscript)",
    ".pdf": "a PDF document, not an image",
}
_MAGIC = re.compile(r"[*?[]")
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))

Skipped = list[tuple[str, str]]


def _text(item: object) -> str:
    """An input as text; bytes paths and NUL bytes are a ParameterError."""
    if isinstance(item, (bytes, bytearray)):
        raise ParameterError(f"image paths must be text (str or pathlib.Path), not bytes: "
                             f"{bytes(item)[:80]!r}")
    try:
        text = os.fspath(item)  # type: ignore[call-overload]
    except TypeError:
        raise ParameterError(f"an image input is a path or glob pattern, not "
                             f"{type(item).__name__}") from None
    if isinstance(text, bytes):
        raise ParameterError(f"image paths must be text, not bytes: {text[:80]!r}")
    if "\0" in text:
        raise ParameterError(f"image path {text!r} contains a NUL byte")
    return text


def _not_regular(st: os.stat_result) -> str:
    return next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")


def skip_reason(path: str | os.PathLike) -> str | None:
    """Why a file found in a folder or by a pattern is not taken as an image (None: taken).
    Only ``stat`` is called: a FIFO or device is never opened."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return "a symbolic link to a missing file" if p.is_symlink() else "no such file"
    except OSError as e:
        return f"cannot access it ({e.strerror or e})"
    link = "a symbolic link to " if p.is_symlink() else ""
    if stat.S_ISDIR(st.st_mode):
        return None if not link else "a symbolic link to a folder: not followed"
    if not stat.S_ISREG(st.st_mode):
        what = _not_regular(st)
        return f"{link}{what}" if link else what
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    if suffix in _REFUSED:
        return _REFUSED[suffix]
    return f"not an image file name (suffix {suffix or 'none'!r}; image suffixes: " \
           f"{', '.join(IMAGE_SUFFIXES)})"


def _entries(folder: Path, skipped: Skipped) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []  # a pattern's folder that does not exist: "matched no file"
    except OSError as e:
        skipped.append((str(folder), f"cannot list this folder ({e.strerror or e})"))
        return []


def _is_dir(entry: os.DirEntry, follow: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


def _hidden_ok(name: str, pattern: str) -> bool:
    return not name.startswith(".") or pattern.startswith(".")


def _walk(folder: Path, parts: list[str], skipped: Skipped) -> Iterator[Path]:
    """Paths under ``folder`` matching the pattern components ``parts`` (glob rules: hidden
    names only for patterns starting with '.'; ``**`` any depth, never into a symlinked
    folder, which is listed in ``skipped`` instead)."""
    if not parts:
        yield folder
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        yield from _walk(folder, rest, skipped)  # ** matching no folder at all
        for e in _entries(folder, skipped):
            if e.name.startswith("."):
                continue
            if e.is_symlink() and _is_dir(e, True):
                skipped.append((e.path, "a symbolic link to a folder: ** does not follow it"))
            elif _is_dir(e, False):
                yield from _walk(Path(e.path), parts, skipped)
            elif not rest:
                yield Path(e.path)
        return
    if not _MAGIC.search(head):
        child = folder / head
        if not rest:
            if os.path.lexists(child):
                yield child
        elif child.is_dir():
            yield from _walk(child, rest, skipped)
        return
    for e in _entries(folder, skipped):
        if _hidden_ok(e.name, head) and fnmatch.fnmatchcase(e.name, head):
            if not rest:
                yield Path(e.path)
            elif _is_dir(e, True):  # one level per component: bounded, so links are followed
                yield from _walk(Path(e.path), rest, skipped)


def glob_paths(pattern: str, skipped: Skipped) -> list[Path]:
    """Everything ``pattern`` matches (``*``, ``?``, ``[...]``, ``**``), without following
    directory symlinks at ``**``."""
    path = Path(os.path.expanduser(pattern))
    parts = list(path.parts)
    start = 0
    while start < len(parts) and not _MAGIC.search(parts[start]):
        start += 1
    base = Path(*parts[:start]) if start else Path(".")
    return list(_walk(base, parts[start:], skipped))


def _plain_image(entry: os.DirEntry) -> bool:
    """A regular file (not a link) with an image suffix: taken without another ``stat`` (the
    folder listing says what each entry is)."""
    try:
        return (entry.is_file(follow_symlinks=False)  # False for a link
                and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES)
    except OSError:
        return False


def _take(candidates: Sequence[Path], text: str, empty: str, add: Callable[[Path], None],
          skipped: Skipped, taken: int = 0) -> None:
    """Add the image files among ``candidates``; list the other files with their reason
    (``taken``: images already taken for ``text``)."""
    for c in candidates:
        if c.is_dir():
            continue  # a folder is not a file, and folders are not searched recursively
        why = skip_reason(c)
        if why is None:
            add(c)
            taken += 1
        else:
            skipped.append((str(c), why))
    if not taken:
        skipped.append((text, empty))


def find_images(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
) -> tuple[list[Path], Skipped]:
    """Expand files, folders (non-recursive, image suffixes only, hidden files skipped) and
    glob patterns (``*``, ``?``, ``[...]``, ``**``) into a sorted, de-duplicated list of paths.

    Files named explicitly are kept whatever their suffix (reading them reports any problem).
    Returns ``(paths, skipped)``: ``(input or file, reason)`` for every input that gave no
    image (``('nope/*.png', 'matched no file')``) and every file a folder or pattern turned up
    that was left out (``('x/a.heic', 'HEIC/HEIF photos are not supported; ...')``).
    Raises ParameterError for bytes paths and paths with a NUL byte.
    """
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray)):
        inputs = [inputs]  # type: ignore[list-item]
    texts = [_text(item) for item in inputs]
    found: dict[Path, Path] = {}
    skipped: Skipped = []

    def add(p: Path) -> None:
        found.setdefault(p.resolve(), p)

    for text in texts:
        if not text:
            skipped.append((text, "empty path"))
            continue
        p = Path(text).expanduser()
        if p.is_file():
            add(p)
        elif p.is_dir():
            entries = [e for e in _entries(p, skipped) if not e.name.startswith(".")]
            plain = [_plain_image(e) for e in entries]
            real = p.resolve()
            for e, ok in zip(entries, plain, strict=True):
                if ok:  # what add() would find, without resolving each file
                    found.setdefault(real / e.name, Path(e.path))
            _take([Path(e.path) for e, ok in zip(entries, plain, strict=True) if not ok], text,
                  f"folder has no image files ({', '.join(IMAGE_SUFFIXES)})", add, skipped,
                  taken=sum(plain))
        elif _MAGIC.search(text):
            matches = glob_paths(text, skipped)
            if not matches:
                skipped.append((text, "matched no file"))
            else:
                _take(matches, text, "matched no image file", add, skipped)
        elif os.path.lexists(p):
            skipped.append((text, skip_reason(p) or "not a regular file or folder"))
        else:
            skipped.append((text, "no such file or folder"))
    return sorted(found.values()), list(dict.fromkeys(skipped))


__all__ = ["IMAGE_SUFFIXES", "find_images", "glob_paths", "skip_reason"]

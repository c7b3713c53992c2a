"""The files attnviz ships: demo checkpoints and their model cards (``data/checkpoints/``),
sample images (``data/images/``, their licences in ``data/LICENSES.md``) and the notebooks
(``notebooks/``, the report template included).

In the repository they are the top-level ``data/`` and ``notebooks/`` folders, the only copies
in git. A built wheel carries them inside this package (``attnviz/resources/data``,
``attnviz/resources/notebooks``; ``setup.py`` maps them in at build time), where
:mod:`importlib.resources` finds them. :func:`shipped_dir` is the one lookup, so the same code
works from a checkout, an editable install and an installed wheel. ``attnviz notebooks DEST``
copies the notebooks out::

    attnviz notebooks ~/attnviz-notebooks && attnviz lab ~/attnviz-notebooks
"""
from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from ..errors import AttnvizError, ParameterError

#: The notebook papermill runs for ``attnviz report`` (copied along, but not a lesson).
REPORT_NOTEBOOK = "report.ipynb"
#: The shipped top-level folders.
SHIPPED = ("data", "notebooks")


def checkout_root() -> Path | None:
    """The source checkout this package was imported from (the folder holding ``attnviz/``
    and ``pyproject.toml``), or None for an installed package."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "attnviz").is_dir() else None


def shipped_dir(name: str) -> Path:
    """The shipped folder ``name`` (``"data"`` or ``"notebooks"``): the copy inside the
    installed package when there is one (:mod:`importlib.resources`), else the checkout's
    top-level folder.

    Raises:
        AttnvizError: the package is imported from a zip file, or neither copy exists.
    """
    if name not in SHIPPED:
        raise ParameterError(f"name must be one of {SHIPPED}, got {name!r}")
    inside = files(__name__) / name
    if not isinstance(inside, Path):  # e.g. imported from a zip file
        raise AttnvizError(f"attnviz's bundled files are not on disk ({inside}); install "
                           "attnviz as files (pip install), not as a zip")
    if inside.is_dir():
        return inside
    root = checkout_root()
    if root is not None and (root / name).is_dir():
        return root / name
    raise AttnvizError(f"attnviz's bundled {name}/ folder is missing (looked in {inside}"
                       f"{f' and {root / name}' if root else ''}); reinstall attnviz")


def data_dir() -> Path:
    """The folder with ``checkpoints/`` and ``images/`` (``$ATTNVIZ_DATA`` overrides it)."""
    env = os.environ.get("ATTNVIZ_DATA")
    return Path(env) if env else shipped_dir("data")


def notebooks_dir() -> Path:
    """The bundled notebooks (``00_quickstart.ipynb`` ... ``explorer.ipynb``, ``report.ipynb``)."""
    return shipped_dir("notebooks")


def notebook_paths() -> list[Path]:
    """Every bundled notebook, teaching notebooks first, the report template last."""
    paths = sorted(notebooks_dir().glob("*.ipynb"))
    return sorted(paths, key=lambda p: p.name == REPORT_NOTEBOOK)


def write_file(path: Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` without ever following a symlink there: a new file is
    created exclusively (``O_EXCL | O_NOFOLLOW``: anything at ``path``, a dangling link too,
    is a FileExistsError); ``overwrite`` writes a temporary file beside it and renames it over
    ``path``, which replaces a link itself, never the file it points to.

    Args:
        path: the file to write.
        data: its contents.
        overwrite: replace what is at ``path``.

    Returns:
        ``path``.
    """
    if not overwrite:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(path, flags, 0o644), "wb") as f:
            f.write(data)
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def copy_notebooks(dest: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Copy the notebooks into ``dest`` (created if needed); returns the new files.

    They need nothing beside them: images and checkpoints come from the installed package.
    Anything already named like a notebook in ``dest`` (a symlink too, even a dangling one)
    is a ParameterError unless ``overwrite``, which replaces it (a link itself, not its
    target). Nothing is ever written through a symlink inside ``dest``.
    """
    folder = Path(dest).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"{os.fspath(folder)!r} exists and is not a folder")
    sources = notebook_paths()
    clashes = [p.name for p in sources if os.path.lexists(folder / p.name)]
    if clashes and not overwrite:
        raise ParameterError(f"{os.fspath(folder)!r} already has {', '.join(clashes)}; "
                             "pass --force to overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return [write_file(folder / p.name, p.read_bytes(), overwrite) for p in sources]
    except OSError as e:  # a folder named like a notebook, a file appearing meanwhile, ...
        raise ParameterError(f"cannot write the notebooks into {os.fspath(folder)!r}: "
                             f"{e.strerror or e}: {e.filename!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``attnviz notebooks DEST [--force]``."""
    parser = argparse.ArgumentParser(
        prog="attnviz notebooks",
        description="Copy the attnviz notebooks into DEST, ready for `attnviz lab DEST`.")
    parser.add_argument("dest", metavar="DEST", help="folder to copy into (created if needed)")
    parser.add_argument("--force", action="store_true", help="overwrite notebooks already there")
    args = parser.parse_args(argv)
    copied = copy_notebooks(args.dest, overwrite=args.force)
    print(f"attnviz: copied {len(copied)} notebooks to {Path(args.dest)}; open them with "
          f"`attnviz lab {args.dest}`")
    return 0


__all__ = ["REPORT_NOTEBOOK", "SHIPPED", "checkout_root", "copy_notebooks", "data_dir", "main",
           "notebook_paths", "notebooks_dir", "shipped_dir"]

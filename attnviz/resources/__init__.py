"""Files that ship inside the package: demo checkpoints and their model cards
(``checkpoints/``), sample images with their licences (``images/``) and the notebooks
(``notebooks/``, the report template included).

They are found with :mod:`importlib.resources`, so the same code works from the repository, an
editable install and an installed wheel. ``attnviz notebooks DEST`` copies the notebooks out::

    attnviz notebooks ~/attnviz-notebooks && attnviz lab ~/attnviz-notebooks
"""
from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from ..errors import AttnvizError, ParameterError

#: The notebook papermill runs for ``attnviz report`` (copied along, but not a lesson).
REPORT_NOTEBOOK = "report.ipynb"


def resource_dir() -> Path:
    """The folder holding ``checkpoints/``, ``images/`` and ``notebooks/``."""
    root = files(__name__)
    if not isinstance(root, Path):  # e.g. imported from a zip file
        raise AttnvizError(f"attnviz's bundled files are not on disk ({root}); install attnviz "
                           "as files (pip install), not as a zip")
    return root


def data_dir() -> Path:
    """The folder with ``checkpoints/`` and ``images/`` (``$ATTNVIZ_DATA`` overrides it)."""
    env = os.environ.get("ATTNVIZ_DATA")
    return Path(env) if env else resource_dir()


def notebooks_dir() -> Path:
    """The bundled notebooks (``00_quickstart.ipynb`` ... ``explorer.ipynb``, ``report.ipynb``)."""
    return resource_dir() / "notebooks"


def notebook_paths() -> list[Path]:
    """Every bundled notebook, teaching notebooks first, the report template last."""
    paths = sorted(notebooks_dir().glob("*.ipynb"))
    return sorted(paths, key=lambda p: p.name == REPORT_NOTEBOOK)


def copy_notebooks(dest: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Copy the notebooks into ``dest`` (created if needed); returns the new files.

    They need nothing beside them: images and checkpoints come from the installed package.
    An existing notebook in ``dest`` is a ParameterError unless ``overwrite``.
    """
    folder = Path(dest).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"{os.fspath(folder)!r} exists and is not a folder")
    sources = notebook_paths()
    clashes = [p.name for p in sources if (folder / p.name).exists()]
    if clashes and not overwrite:
        raise ParameterError(f"{os.fspath(folder)!r} already has {', '.join(clashes)}; "
                             "pass --force to overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(p, folder / p.name)) for p in sources]


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

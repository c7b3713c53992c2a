"""Build hook: the wheel carries the repository's top-level ``data/`` and ``notebooks/``
inside the package, as ``attnviz/resources/data/`` and ``attnviz/resources/notebooks/``, where
``attnviz.resources.shipped_dir`` finds them through importlib.resources. Everything else is
in pyproject.toml. The same list puts these files into the sdist (setuptools' sdist takes
``build_py.get_source_files()``). An editable install copies nothing: a checkout reads the
top-level folders."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
TARGET = "attnviz/resources"
#: the shipped files, as globs relative to the repository root
SHIPPED = ("data/LICENSES.md", "data/checkpoints/*.json", "data/checkpoints/*.safetensors",
           "data/images/*.jpg", "data/images/*.png", "notebooks/*.ipynb")


def shipped_files() -> list[str]:
    """Every shipped file, relative to the repository root, sorted."""
    return sorted({p.relative_to(HERE).as_posix() for g in SHIPPED for p in HERE.glob(g)})


class BuildPyWithShipped(build_py):
    """``build_py`` that also copies :data:`SHIPPED` into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for rel in shipped_files():
            dest = Path(self.build_lib, TARGET, rel)
            self.mkpath(str(dest.parent))
            self.copy_file(str(HERE / rel), str(dest), preserve_mode=False)

    def get_source_files(self) -> list[str]:
        return [*super().get_source_files(), *shipped_files()]


setup(cmdclass={"build_py": BuildPyWithShipped})

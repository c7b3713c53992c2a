"""The package works without the source tree: the sdist builds the wheel, the wheel holds the
demo checkpoints, sample images and notebooks, and an installed copy used from another folder
loads demo-cbam, writes a report, copies the notebooks and runs one of them. Offline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import attnviz
from attnviz.resources import notebook_paths

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# the top-level data/ and notebooks/ (the sdist keeps them there) go into the wheel as
# attnviz/resources/data/ and attnviz/resources/notebooks/
SHIPPED_TOP = (
    "data/checkpoints/demo-cbam.json",
    "data/checkpoints/demo-cbam.safetensors",
    "data/checkpoints/demo-se.safetensors",
    "data/checkpoints/demo-resnest.safetensors",
    "data/LICENSES.md",
    "data/images/shapes_star.png",
    "data/images/astronaut.jpg",
    "notebooks/00_quickstart.ipynb",
    "notebooks/explorer.ipynb",
    "notebooks/report.ipynb",
)
IN_SDIST = ("attnviz/py.typed", "setup.py", *SHIPPED_TOP)
IN_WHEEL = ("attnviz/py.typed", *(f"attnviz/resources/{n}" for n in SHIPPED_TOP))
MAX_WHEEL_BYTES = 6_000_000  # three ~1.4 MB checkpoints, ~0.3 MB of images, code, notebooks
TIMEOUT_S = 600


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTNVIZ_DATA")}
    env.update(PIP_NO_INDEX="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    return env


def _contents(wheel: Path) -> dict[str, str]:
    """name -> sha256 of every file in ``wheel`` but its RECORD."""
    with zipfile.ZipFile(wheel) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()
                if not n.endswith(".dist-info/RECORD")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist + the wheel built from it (``python -m build``), and a wheel built straight from
    a copy of the source tree (``pip wheel``): no build isolation, no index."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("attnviz", "data", "notebooks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "*.egg-info", "reports", ".ipynb_checkpoints"))
    env = _offline_env()
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"),
          str(src)], cwd=tmp, env=env)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(tmp / "direct"), str(src)], cwd=tmp, env=env)
    (sdist,) = (tmp / "dist").glob("attnviz-*.tar.gz")
    (wheel,) = (tmp / "dist").glob("attnviz-*.whl")
    (direct,) = (tmp / "direct").glob("attnviz-*.whl")
    return {"sdist": sdist, "wheel": wheel, "direct": direct, "tmp": tmp}


@pytest.fixture(scope="module")
def installed(dist: dict[str, Path]) -> Path:
    """The wheel installed into a bare folder (``pip install --target``), no dependencies."""
    site = dist["tmp"] / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
          "--target", str(site), str(dist["wheel"])], cwd=dist["tmp"], env=_offline_env())
    return site


def test_version_in_one_place(dist: dict[str, Path]) -> None:
    assert dist["wheel"].name.startswith(f"attnviz-{attnviz.__version__}-py3-none-any")
    assert dist["sdist"].name == f"attnviz-{attnviz.__version__}.tar.gz"


def test_sdist_builds_the_same_wheel(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as t:
        in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert set(IN_SDIST) <= in_sdist
    assert not [n for n in in_sdist if n.startswith(("attnviz/resources/data",
                                                    "attnviz/resources/notebooks"))]
    assert _contents(dist["wheel"]) == _contents(dist["direct"])


def test_wheel_ships_the_resources_and_stays_small(dist: dict[str, Path]) -> None:
    names = set(_contents(dist["wheel"]))
    assert set(IN_WHEEL) <= names
    assert not [n for n in names if n.startswith(("tests/", "data/", "notebooks/"))]
    assert dist["wheel"].stat().st_size < MAX_WHEEL_BYTES
    with zipfile.ZipFile(dist["wheel"]) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
    for extra in ("lab", "attribution", "dev"):
        assert f"Provides-Extra: {extra}" in metadata


# what the installed copy runs, from another working folder (prints one JSON line)
USE = """
import json, sys
import torch
import attnviz
from attnviz.resources import notebook_paths
model = attnviz.load_model("demo-cbam", device="cpu")
path = attnviz.sample_images("shapes")[0]
x = attnviz.models.prepare(model, attnviz.load_image(path))
with attnviz.record(model) as rec:
    logits = model(x)
print(json.dumps({"file": attnviz.__file__, "image": str(path), "spatial": len(rec.spatial),
                  "label": model.class_names[int(logits.argmax())],
                  "shipped": [str(attnviz.data_dir()), str(notebook_paths()[-1])]}))
"""

RUN_NOTEBOOK = """
import sys
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
nb.cells.append(nbformat.v4.new_code_cell("import attnviz; print(attnviz.__file__)"))
NotebookClient(nb, timeout=300, kernel_name="python3").execute()
print(nb.cells[-1].outputs[0]["text"].strip())
"""


def test_installed_wheel_works_without_the_source_tree(
    installed: Path, tmp_path: Path
) -> None:
    env = _offline_env(PYTHONPATH=str(installed), ATTNVIZ_STATIC="1")
    work = tmp_path / "work"
    work.mkdir()
    used = json.loads(_run([sys.executable, "-c", USE], cwd=work, env=env).splitlines()[-1])
    assert Path(used["file"]).is_relative_to(installed), used["file"]
    assert Path(used["image"]).is_relative_to(installed) and used["spatial"] > 0
    package = installed / "attnviz" / "resources"  # found through importlib.resources
    assert used["shipped"] == [str(package / "data"), str(package / "notebooks" / "report.ipynb")]
    assert used["label"] == Path(used["image"]).stem.removeprefix("shapes_")

    cli = [str(installed / "bin" / "attnviz")]
    assert _run(cli + ["--version"], cwd=work, env=env).strip() == f"attnviz {attnviz.__version__}"
    _run(cli + ["report", used["image"], "--model", "demo-cbam", "--device", "cpu",
                "--out", "out"], cwd=work, env=env)
    assert (work / "out" / "report.html").stat().st_size > 10_000
    assert json.loads((work / "out" / "summary.json").read_text())["n_images"] == 1

    _run(cli + ["notebooks", "nbs"], cwd=work, env=env)
    copied = sorted(p.name for p in (work / "nbs").glob("*.ipynb"))
    assert copied == sorted(p.name for p in notebook_paths())
    kernel_file = _run([sys.executable, "-c", RUN_NOTEBOOK, "explorer.ipynb"],
                       cwd=work / "nbs", env=env).splitlines()[-1]
    assert Path(kernel_file).is_relative_to(installed), kernel_file

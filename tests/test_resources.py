"""Bundled files found through importlib.resources, `attnviz notebooks`, `attnviz --version`
and the one-line message for a missing optional part."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import attnviz
from attnviz import cli, resources
from attnviz.errors import AttnvizError, MissingDependencyError, ParameterError, require
from attnviz.resources import (
    REPORT_NOTEBOOK,
    checkout_root,
    copy_notebooks,
    data_dir,
    notebook_paths,
    notebooks_dir,
    shipped_dir,
)

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkout_reads_the_top_level_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTNVIZ_DATA", raising=False)
    assert checkout_root() == ROOT
    assert shipped_dir("data") == ROOT / "data" == data_dir()
    assert notebooks_dir() == ROOT / "notebooks"
    assert (data_dir() / "images" / "shapes_star.png").is_file()
    with pytest.raises(ParameterError, match="must be one of"):
        shipped_dir("tests")


def test_an_installed_package_reads_its_own_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The layout a wheel installs (setup.py maps data/ and notebooks/ into the package) wins
    over a checkout; with neither, one readable error. The packaging test installs a real
    wheel."""
    package = tmp_path / "attnviz" / "resources"
    for name in ("data", "notebooks"):
        (package / name).mkdir(parents=True)
    monkeypatch.delenv("ATTNVIZ_DATA", raising=False)
    monkeypatch.setattr(resources, "files", lambda _: package)
    assert data_dir() == package / "data" and notebooks_dir() == package / "notebooks"
    (package / "notebooks").rmdir()
    assert notebooks_dir() == ROOT / "notebooks"  # a checkout falls back to its own folder
    monkeypatch.setattr(resources, "checkout_root", lambda: None)
    with pytest.raises(AttnvizError, match="bundled notebooks/ folder is missing"):
        notebooks_dir()


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_top_level_layout_and_nothing_tracked_twice() -> None:
    tracked = _tracked()
    top = {n.split("/", 1)[0] for n in tracked}
    card = {"notebooks", "attnviz", "data", "tests", "environment.yml", "README.md"}
    tooling = {"Makefile", "pyproject.toml", "setup.py", "constraints.txt", "LICENSE", "docs",
               "benchmarks", ".ci", ".gitignore"}
    assert card <= top <= card | tooling, top - card - tooling
    inside = [n for n in tracked if n.startswith("attnviz/resources/")]
    assert inside == ["attnviz/resources/__init__.py"], inside
    names = [Path(n).name for n in tracked if n.endswith((".ipynb", ".safetensors"))]
    assert len(names) == len(set(names)) and len(names) >= 15


def test_ignored_outputs() -> None:
    """Reports written from notebooks/ and build copies stay out of git."""
    _tracked()
    probe = ["notebooks/reports/report.html", "attnviz/resources/data/x",
             "attnviz/resources/notebooks/x.ipynb"]
    out = subprocess.run(["git", "check-ignore", *probe], cwd=ROOT, capture_output=True,
                         text=True).stdout.split()
    assert out == probe


def test_every_demo_card_has_its_weights() -> None:
    for name in attnviz.DEMO_MODELS:
        card = attnviz.models.demo_card(name)
        assert (data_dir() / "checkpoints" / card["weights"]).is_file(), name


def test_data_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATTNVIZ_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert notebooks_dir() == ROOT / "notebooks"  # notebooks are not overridden
    with pytest.raises(attnviz.ModelError, match="no model card"):
        attnviz.models.demo_card("demo-cbam")


def test_notebook_paths_lessons_first_report_last() -> None:
    names = [p.name for p in notebook_paths()]
    assert names[0] == "00_quickstart.ipynb" and names[-1] == REPORT_NOTEBOOK
    assert "explorer.ipynb" in names and len(names) == 10


def test_copy_notebooks(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b"
    copied = copy_notebooks(dest)
    assert [p.name for p in copied] == [p.name for p in notebook_paths()]
    assert all(json.loads(p.read_text())["cells"] for p in copied)
    (dest / "explorer.ipynb").write_text("mine")
    with pytest.raises(ParameterError, match="explorer.ipynb.*--force"):
        copy_notebooks(dest)
    assert (dest / "explorer.ipynb").read_text() == "mine"  # nothing touched
    copy_notebooks(dest, overwrite=True)
    assert (dest / "explorer.ipynb").read_text() != "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="not a folder"):
        copy_notebooks(tmp_path / "file")


def test_cli_notebooks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["notebooks", str(tmp_path / "nb")]) == 0
    assert f"copied {len(notebook_paths())} notebooks" in capsys.readouterr().out
    assert cli.main(["notebooks", str(tmp_path / "nb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnviz: error: ") and err.count("\n") == 1
    assert cli.main(["notebooks", str(tmp_path / "nb"), "--force"]) == 0
    assert cli.main(["notebooks", "--help"]) == 0


def test_version_in_one_place(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"attnviz {attnviz.__version__}"
    assert importlib.metadata.version("attnviz") == attnviz.__version__


def test_require_names_the_extra() -> None:
    require("json", extra="lab", feature="x")  # present: no error
    with pytest.raises(MissingDependencyError) as e:
        require("json", "attnviz_no_such_module", extra="lab", feature="the report notebook")
    assert str(e.value) == ("the report notebook needs attnviz_no_such_module, which is not "
                            "installed: pip install 'attnviz[lab]'")
    assert isinstance(e.value, AttnvizError) and isinstance(e.value, ImportError)


def test_widgets_without_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` fails
    monkeypatch.delitem(sys.modules, "attnviz.widgets", raising=False)
    with pytest.raises(MissingDependencyError, match=r"needs ipywidgets.*attnviz\[lab\]"):
        importlib.import_module("attnviz.widgets")


def test_attribution_without_captum(monkeypatch: pytest.MonkeyPatch) -> None:
    from attnviz import attribution

    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "captum" else object())
    with pytest.raises(MissingDependencyError, match=r"captum.*attnviz\[attribution\]"):
        attribution.saliency(attnviz.create_model("demo_cbam_resnet"), None)

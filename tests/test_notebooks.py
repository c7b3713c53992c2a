"""Every teaching notebook runs top to bottom offline (nbclient), committed without outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from attnviz.resources import REPORT_NOTEBOOK, notebook_paths

NOTEBOOKS = [p for p in notebook_paths() if p.name != REPORT_NOTEBOOK]
TIME_LIMIT_S = 300  # per cell; the notebooks take well under 60 s on an idle 2-core CPU


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNVIZ_STATIC", "1")  # explorers also leave static figures
    monkeypatch.delenv("ATTNVIZ_DATA", raising=False)  # the package's own files
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=TIME_LIMIT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs, f"{path.name} produced no figure"
    if "from attnviz.widgets import" in path.read_text():
        mime = "application/vnd.jupyter.widget-view+json"
        widgets = [o for o in outputs if mime in o.get("data", {})]
        assert widgets, f"{path.name}: the explorer widget was not displayed"
    print(f"{path.name}: {elapsed:.1f} s, {len(pngs)} figures")

"""report.ipynb with Run All in a real JupyterLab, from a folder named notebooks/ (a copy of the
shipped one: JupyterLab may autosave), with its default parameters: it must write
notebooks/reports/ and show no error.

    .venv/bin/python -m pytest tests/e2e/test_report_notebook.py -m e2e -s
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from attnviz.resources import REPORT_NOTEBOOK, notebooks_dir

from .browser import JS_KERNEL_ERRORS, JS_KERNEL_READY, JS_RUN_ALL, Session
from .conftest import LabServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

KERNEL_READY_MS = 45_000
REPORT_S = 120.0


@pytest.fixture
def lab_notebooks() -> tuple[Path, ...]:
    return (notebooks_dir() / REPORT_NOTEBOOK,)


def test_report_notebook_run_all_with_its_defaults(chromium: Path, lab_server: LabServer,
                                                   tmp_path: Path) -> None:
    folder = lab_server.notebook_dir
    assert folder.name == "notebooks"
    summary = folder / "reports" / "summary.json"
    with Session(chromium, tmp_path, lab_server) as s:
        page = s.page
        s.stage = "kernel ready"
        page.goto(lab_server.url(f"lab/tree/{REPORT_NOTEBOOK}", "reset"))
        page.wait_for_function(JS_KERNEL_READY, arg=REPORT_NOTEBOOK, timeout=KERNEL_READY_MS,
                               polling=100)
        s.stage = "run all"
        t0 = time.perf_counter()
        page.evaluate(JS_RUN_ALL)
        s.stage = "report written"
        while not summary.is_file():
            errors = page.evaluate(JS_KERNEL_ERRORS)
            assert not errors, "report.ipynb failed:\n" + "\n".join(errors)
            assert time.perf_counter() - t0 < REPORT_S, "no notebooks/reports/summary.json"
            time.sleep(0.25)
        page.get_by_text("wrote report.html").wait_for(timeout=30_000)
        assert page.evaluate(JS_KERNEL_ERRORS) == []
        print(f"\nreport.ipynb, Run All from notebooks/: {time.perf_counter() - t0:.1f} s")
        s.screenshot("report-notebook-run-all")
        s.check_console()
    n_images = json.loads(summary.read_text())["n_images"]
    assert n_images == len(list((notebooks_dir().parent / "data" / "images").iterdir()))
    assert (folder / "reports" / "report.html").stat().st_size > 10_000

"""Outputs of `attnviz report` you can trust: one run per folder, files published together
(also when a run is killed), the template never touched, planted symlinks not followed,
formula-safe CSV, strict JSON, NaN/Inf reported with exit code 3, and the --notebook mode."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from report_helpers import write_shapes

import attnviz
from attnviz import cli, report
from attnviz.publish import HOME, link_text
from attnviz.report.files import csv_cell
from attnviz.report.publish import LOCK_NAME
from attnviz.resources import copy_notebooks, notebooks_dir, shipped_dir

MODEL = "demo-cbam"  # trained weights (an architecture alone is refused without --random-weights)
FILES = ["report.html", "summary.csv", "summary.json"]


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("few"), 3)


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("many"), 240)


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (symlinks as their target text) but the lock file,
    which holds the pid of the last run."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.name == LOCK_NAME:
            continue
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def template_hash() -> str:
    """The bundled report template (the other notebooks may be edited while tests run)."""
    return hashlib.sha256(report.default_notebook().read_bytes()).hexdigest()


def one_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("attnviz: error: "), err
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def run_ids(out: Path) -> tuple[str, str]:
    page = (out / "report.html").read_text()
    html_id = page.split('name="attnviz-run-id" content="', 1)[1].split('"', 1)[0]
    return html_id, json.loads((out / "summary.json").read_text())["run_id"]


def command(images: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attnviz.cli", "report", str(images), "--model", MODEL,
            "--out", str(out), *extra]


def partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.attnviz-partial-*"))


def wait_for_partial(proc: subprocess.Popen, out: Path, timeout: float = 120) -> Path:
    """Wait until ``proc`` holds the lock and writes into its staging folder."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = partials(out)
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError("no staging folder appeared")


# -- the template and the output folder ----------------------------------------------------------
def test_template_folder_and_copies_are_refused_and_never_modified(few, tmp_path, capsys):
    before = template_hash()
    code = cli.main(["report", str(few), "--model", MODEL, "--out", str(notebooks_dir())])
    one_error(capsys, code, "holds report.ipynb", "did not write")
    code = cli.main(["report", str(few), "--model", MODEL, "--out",
                     str(Path(attnviz.__file__).parent / "reports")])
    one_error(capsys, code, "inside the attnviz package")
    code = cli.main(["report", str(few), "--model", MODEL, "--out",
                     str(shipped_dir("data") / "images")])
    one_error(capsys, code, "inside attnviz's shipped data folder")
    copies = tmp_path / "nbs"
    copy_notebooks(copies)
    code = cli.main(["report", str(few), "--model", MODEL, "--out", str(copies)])
    one_error(capsys, code, "holds report.ipynb", "did not write")
    code = cli.main(["report", str(few), "--model", MODEL, "--out", ""])
    one_error(capsys, code, "must not be empty")
    assert template_hash() == before
    assert not (copies / "report.html").exists()


def test_planted_symlinks_are_replaced_not_followed(few, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    template = report.default_notebook()
    before = template_hash()
    (out / "report.html").symlink_to(victim)
    (out / "summary.csv").symlink_to(template)
    (out / "summary.json").symlink_to(tmp_path / "dangling")
    assert cli.main(["report", str(few), "--model", MODEL, "--out", str(out)]) == 0
    assert victim.read_text() == "keep me" and template_hash() == before
    assert not (tmp_path / "dangling").exists()
    for name in FILES:  # each name is the publisher's own link into OUT
        assert (out / name).is_file() and os.readlink(out / name) == link_text("report", name)
        assert Path(os.path.realpath(out / name)).is_relative_to(out.resolve() / HOME)


# -- one run at a time, published together -------------------------------------------------------
def test_a_held_lock_refuses_with_one_line(few, tmp_path, capsys):
    out = tmp_path / "out"
    with report.Publication(out):
        code = cli.main(["report", str(few), "--model", MODEL, "--out", str(out)])
        one_error(capsys, code, "in use by another attnviz report", f"pid {os.getpid()}")
    assert cli.main(["report", str(few), "--model", MODEL, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([HOME, LOCK_NAME, *FILES])


def test_two_processes_into_one_folder(many, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command(many, out), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for_partial(first, out)
    first.send_signal(signal.SIGSTOP)  # holds the lock, mid-way, for as long as we need
    try:
        second = subprocess.run(command(many, out), env=env, capture_output=True, text=True,
                                timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.communicate()
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith(
        "attnviz: error: output folder"), second.stderr
    assert "in use by another attnviz report (pid" in second.stderr
    a, b = run_ids(out)
    assert a == b and json.loads((out / "summary.json").read_text())["n_images"] == 240
    assert partials(out) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, -9), (signal.SIGTERM, 143),
                                           (signal.SIGINT, 130)])
def test_a_run_stopped_midway_leaves_the_previous_report(few, many, tmp_path, sig, code):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    report.write_report(few, model=MODEL, out_dir=out, progress=False)
    previous = digest(out)
    proc = subprocess.Popen(command(many, out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stage = wait_for_partial(proc, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert digest(out) == previous, err  # nothing new, nothing half-written, same run
    if sig == signal.SIGKILL:  # only a kill leaves the staging folder, hidden and named so
        assert stage.exists() and stage.name.startswith(".out.attnviz-partial-")
    else:
        assert not stage.exists()
    report.write_report(few, model=MODEL, out_dir=out, progress=False)  # cleans up
    assert partials(out) == [] and run_ids(out)[0] == run_ids(out)[1]


def test_a_failure_while_writing_publishes_nothing(few, tmp_path, monkeypatch):
    out = tmp_path / "out"
    report.write_report(few, model=MODEL, out_dir=out, progress=False)
    previous = digest(out)
    real = report.running.write_summaries

    def half(run, folder):  # the summaries are written, then rendering fails
        real(run, folder)
        raise RuntimeError("boom while rendering")

    monkeypatch.setattr(report.running, "write_summaries", half)
    with pytest.raises(RuntimeError, match="boom"):
        report.write_report(few, model=MODEL, out_dir=out, progress=False)
    assert digest(out) == previous and partials(out) == []
    fcntl.flock(os.open(out / LOCK_NAME, os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


# -- what the files say --------------------------------------------------------------------------
def test_csv_cells_that_look_like_formulas_are_neutralised(few, tmp_path, monkeypatch):
    names = ["=HYPERLINK(1).png", "+1.png", "-1.png", "@SUM(A1).png", "\tx.png", "\rx.png",
             "ok.png"]
    src = sorted(few.iterdir())[0]
    for name in names:
        (tmp_path / name).write_bytes(src.read_bytes())
    monkeypatch.chdir(tmp_path)
    report.write_report(names, model=MODEL, out_dir="out", progress=False)
    with open(tmp_path / "out" / "summary.csv", newline="", encoding="utf-8") as f:
        images = {row["image"] for row in csv.DictReader(f)}
    assert images == {"'" + n if n != "ok.png" else n for n in names}
    assert csv_cell("=1+1") == "'=1+1" and csv_cell(-0.5) == -0.5 and csv_cell(None) == ""
    assert csv_cell(float("nan")) == "" and csv_cell(float("inf")) == ""


NAN_MODEL = '''
import torch
from attnviz.examples import tutorial_cbam_resnet
from attnviz.models import set_preprocess


def make():
    model = tutorial_cbam_resnet()
    with torch.no_grad():
        model.layer1[1].sa.conv1.weight.fill_(float("nan"))
    set_preprocess(model, 32)
    return model
'''


def _strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_nan_attention_and_logits_warn_exit_3_and_json_stays_strict(few, tmp_path, capsys):
    (tmp_path / "nanmodel.py").write_text(NAN_MODEL)
    out = tmp_path / "out"
    code = cli.main(["report", str(few), "--model", f"{tmp_path / 'nanmodel.py'}:make",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "warning: NaN or infinite values" in err and "exit code 3" in err
    summary = _strict((out / "summary.json").read_text())
    where = {(f["where"], f["layer"]) for f in summary["non_finite"]}
    assert ("logits", None) in where and ("attention", "layer1.1.sa") in where
    assert all(p["prob"] is None and p["class_index"] == -1 for p in summary["predictions"])
    rows = [r for r in summary["rows"] if r["layer"] == "layer1.1.sa"]
    assert rows and all(r["mean"] is None for r in rows)
    page = (out / "report.html").read_text()
    assert page.index('class="alarm"') < page.index("<table")  # at the top
    assert "not finite (NaN/Inf logits)" in page and "nan%" not in page.lower()
    with open(out / "summary.csv", newline="") as f:
        csv_rows = [r for r in csv.DictReader(f) if r["layer"] == "layer1.1.sa"]
    assert csv_rows and all(r["mean"] == "" for r in csv_rows)


def test_json_of_nan_values_is_null():
    from attnviz.report.files import dumps

    text = dumps({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": (1, None)})
    assert _strict(text) == {"a": None, "b": [None, None, 1.5], "c": [1, None]}
    assert torch.tensor(1.0).item() == 1.0


# -- the notebook mode ---------------------------------------------------------------------------
def test_notebook_mode_keeps_a_notebook_without_images(few, tmp_path, capsys):
    out = tmp_path / "out"
    template = template_hash()
    for _ in range(2):  # the second run may replace the notebook the first one wrote
        code = cli.main(["report", str(few), "--model", MODEL, "--out", str(out), "--notebook"])
        assert code == 0, capsys.readouterr().err
    assert template_hash() == template  # papermill wrote a copy, never the template
    nb = nbformat.read(out / "report.ipynb", as_version=4)
    run_id = json.loads((out / "summary.json").read_text())["run_id"]
    assert nb.metadata["attnviz_report"] == {"run_id": run_id} == {"run_id": run_ids(out)[0]}
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(k.startswith("image/") for o in outputs for k in o.get("data", {}))
    assert any("Attention layers" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert (out / "report.ipynb").stat().st_size < 100_000


def test_notebook_failure_exit_1_keeps_the_failed_notebook(few, tmp_path, capsys,
                                                          monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell("parameters = {}\nstage = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('boom in the report')")]
    path = tmp_path / "failing.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setattr(report.running, "default_notebook", lambda: path)
    out = tmp_path / "o"
    code = cli.main(["report", str(few), "--model", MODEL, "--out", str(out), "--notebook"])
    err = capsys.readouterr().err
    assert code == 1
    assert "RuntimeError: boom in the report" in err and "Traceback" not in err
    assert "report.failed.ipynb" in err and (out / "report.failed.ipynb").is_file()
    assert not any((out / name).exists() for name in FILES)


def test_the_notebook_run_by_hand_publishes_into_out_dir(few, tmp_path):
    """As a user runs it in JupyterLab: no papermill, no stage; it publishes itself."""
    from nbclient import NotebookClient

    nb = nbformat.read(report.default_notebook(), as_version=4)
    params = nb.cells[1]
    assert "parameters" in params.metadata["tags"]
    params.source = (f"parameters = {{'images': [{str(few)!r}], 'model': {MODEL!r}, "
                     f"'out_dir': 'out', 'max_figures': 2}}\nstage = None")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted([HOME, LOCK_NAME, *FILES])
    assert (out / "report.html").read_text().count("<section>") == 2
    assert partials(out) == []


def test_an_output_folder_behind_a_symlink_is_staged_next_to_its_target(few, tmp_path,
                                                                       monkeypatch):
    target = tmp_path / "elsewhere" / "reports"
    target.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(target)
    seen: list[Path] = []
    real = report.running.write_outputs

    def spy(run, params, folder):
        seen.append(Path(folder))
        return real(run, params, folder)

    monkeypatch.setattr(report.running, "write_outputs", spy)
    report.write_report(few, model=MODEL, out_dir=link, progress=False)
    assert seen[0].parent == target.parent and seen[0].name.startswith(".reports.attnviz-partial")
    assert sorted(p.name for p in target.iterdir()) == sorted([HOME, LOCK_NAME, *FILES])
    assert link.is_symlink() and partials(target) == []

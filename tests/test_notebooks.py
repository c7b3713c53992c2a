"""Every teaching notebook runs top to bottom offline (nbclient), committed without outputs and
with the metadata JupyterLab would write (so a notebook does not show as modified on open);
report.ipynb runs with its default parameters from its own folder (a copy, and the checkout's
notebooks/ under papermill, writing notebooks/reports/); an executed explorer
notebook keeps a static image of the explorer's last view."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from attnviz.datasets import CLASSES
from attnviz.resources import REPORT_NOTEBOOK, notebook_paths, notebooks_dir

NOTEBOOKS = [p for p in notebook_paths() if p.name != REPORT_NOTEBOOK]
MINE = [p for p in NOTEBOOKS if re.match(r"0[0-5]_|explorer", p.name)]  # lessons 00–05
LESSONS = [p for p in MINE if p.name != "explorer.ipynb"]
TIME_LIMIT_S = 300  # per cell; the notebooks take well under 60 s on an idle 2-core CPU
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: what the kernel reports and JupyterLab writes into a notebook's metadata on open; a notebook
#: without it is marked modified as soon as its kernel starts
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, path.name


@pytest.mark.parametrize("path", MINE, ids=[p.stem for p in MINE])
def test_metadata_is_normalised(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 5)
    info = nb["metadata"]["language_info"]
    assert {k: v for k, v in info.items() if k != "version"} == LANGUAGE_INFO, path.name
    assert re.fullmatch(r"3\.11\.\d+", info["version"]), info
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[\w-]{1,64}", i) for i in ids)
    assert "set_num_threads" not in path.read_text()  # leave threads to torch


def _solution_blocks(nb: nbformat.NotebookNode) -> list[str]:
    """The code of every solution: fenced ```python blocks inside a markdown <details>."""
    blocks = []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "<details>" in cell.source:
            details = cell.source[cell.source.index("<details>"):]
            blocks += re.findall(r"```python\n(.*?)```", details, flags=re.S)
    return blocks


EXERCISED = [p for p in NOTEBOOKS if re.match(r"0\d_", p.name)]


@pytest.mark.parametrize("path", EXERCISED, ids=[p.stem for p in EXERCISED])
def test_lessons_end_with_exercises_and_solutions_that_run_all_does_not_run(path: Path) -> None:
    """Solutions are in a closed markdown <details> after the exercises (in 00–05 and 07 as
    code): readable, valid Python, and never executed by Run All (no code cell holds one)."""
    nb = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(nb.cells)
              if c.cell_type == "markdown" and "## Exercises" in c.source)
    blocks = _solution_blocks(nb)
    assert any("<details>" in c.source for c in nb.cells[at:] if c.cell_type == "markdown")
    assert path in LESSONS + [notebooks_dir() / "07_self_attention.ipynb"] or not blocks
    assert path not in LESSONS or blocks, path.name
    assert all(b.lstrip().startswith("# Solution") for b in blocks), path.name
    assert all(i >= at for i, c in enumerate(nb.cells)
               if c.cell_type == "markdown" and "<details>" in c.source)
    for block in blocks:
        compile(block, f"{path.name} solution", "exec")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert "solution" not in cell.metadata.get("tags", []), path.name
            assert not any(b.strip().splitlines()[-1] in cell.source for b in blocks), cell.source


def test_self_attention_exercise_3_raises_the_memory_error_it_announces(
        capsys: pytest.CaptureFixture) -> None:
    """07's exercise 3 announces a MemoryBudgetError: its solution, run on the module of the
    notebook's section 1, gets that error (not a tensor-size error)."""
    import torch

    import attnviz
    from attnviz.nn import MultiHeadSelfAttention2d

    nb = nbformat.read(notebooks_dir() / "07_self_attention.ipynb", as_version=4)
    (block,) = [b for b in _solution_blocks(nb) if b.startswith("# Solution 3")]
    assert "max_bytes=10_000_000" in block
    exec(block, {"torch": torch, "attnviz": attnviz,  # noqa: S102  (the notebook's own code)
                 "mhsa": MultiHeadSelfAttention2d(16, heads=4).eval()})
    printed = capsys.readouterr().out
    assert printed.startswith("MemoryBudgetError") and "(1, 4, 3136, 3136)" in printed


def _cell_seconds(cell: nbformat.NotebookNode) -> float:
    """How long an executed cell ran (nbclient's timing metadata)."""
    from datetime import datetime

    t = cell.metadata["execution"]
    start, end = (datetime.fromisoformat(t[k].rstrip("Z"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def _check_long_cells_warn(nb: nbformat.NotebookNode) -> None:
    """A cell that ran longer than 20 s is announced just above it (its time, a progress bar)
    and shows a progress bar (its output holds a tqdm bar)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or _cell_seconds(cell) <= 20:
            continue
        above = nb.cells[i - 1]
        assert above.cell_type == "markdown" and "progress bar" in above.source, cell.source
        assert re.search(r"about \d+ s", above.source), above.source
        assert "progress=True" in cell.source, cell.source


def _printed(outputs: list[dict]) -> str:
    """Everything an executed notebook printed (stdout), in order."""
    return "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")


def _notice(nb: nbformat.NotebookNode, phrase: str) -> str:
    """The markdown cell holding ``phrase``, on one line."""
    return " ".join(next(c.source for c in nb.cells
                         if c.cell_type == "markdown" and phrase in c.source).split())


def _check_00(nb: nbformat.NotebookNode, outputs: list[dict]) -> None:
    """00's "what to notice" on the channel gates states the saturations its cell printed."""
    sat = {k: int(v) for k, v in re.findall(r"^(\S+)\.attn\.channel\s+near 0 or 1: (\d+)%",
                                            _printed(outputs), flags=re.M)}
    text = _notice(nb, "act like switches")
    assert len(sat) == 8 and sat["layer1.0"] == sat["layer4.0"], sat
    assert f"In `layer1.0` and `layer4.0` {sat['layer1.0']} % of the gates" in text
    assert f"In `layer3.0` only {sat['layer3.0']} % are: more than half lie in between" in text
    assert sat["layer3.0"] < 50 and sat["layer3.0"] == min(sat.values())


def _check_01(nb: nbformat.NotebookNode, outputs: list[dict]) -> None:
    """01's notices state the parameter counts and class specificities its cells printed."""
    printed = _printed(outputs)
    added = {m: int(a.replace(",", "")) for m, a in re.findall(
        r"^(\w+)\s+[\d,]+\s+\+([\d,]+)\s", printed, flags=re.M)}
    base = int(re.search(r"^resnet50\s+([\d,]+)", printed, flags=re.M).group(1).replace(",", ""))
    text = _notice(nb, "SE adds")
    se = added["se_resnet50"]
    assert f"SE adds {se / 1e6:.1f} M parameters (+{100 * se / base:.1f} %)" in text
    assert f"CBAM {added['cbam_resnet50'] - se:,} more than SE" in text
    eca = added["eca_resnet50"]
    assert f"ECA only {eca} in total (+{100 * eca / base:.4f} %)" in text
    spec = dict(re.findall(r"^(\S+)\.attn\s+class specificity ([\d.]+)", printed, flags=re.M))
    assert (f"rises from {spec['layer1.1']} to {spec['layer4.1']} in the same way"
            in _notice(nb, "Fig. 6 of the SE paper"))
    assert float(spec["layer1.1"]) < float(spec["layer2.1"]) < float(spec["layer3.1"]) \
        < float(spec["layer4.1"])


def _check_05(nb: nbformat.NotebookNode, outputs: list[dict]) -> None:
    """05's notice states the agreement table it printed: pointing range, the mask's pointing,
    the range of ρ, top-20 % IoU under one half."""
    rows = re.findall(r"^(gradcam|ig|saliency)\s+([\d.]+) ± [\d.]+\s+([\d.]+)\s+([\d.]+)"
                      r"\s+([\d.]+)$", _printed(outputs), flags=re.M)
    rho, iou, p_attn, p_attr = ([float(r[i]) for r in rows] for i in (1, 2, 3, 4))
    text = _notice(nb, "every method finds the object")
    assert len(rows) == 3 and len(set(p_attn)) == 1
    assert f"(pointing {min(p_attr):.2f}–{max(p_attr):.2f}; the mask scores {p_attn[0]:.2f}" \
        in text
    assert "(ρ ≈ 0.2–0.3)" in text and 0.15 <= min(rho) and max(rho) < 0.35
    assert "overlap by well under half" in text and max(iou) < 0.5


def _check_07(nb: nbformat.NotebookNode, outputs: list[dict]) -> None:
    """07's "what to notice" on the heads states the numbers its table printed, and the
    explorer opened on a query inside the object."""
    import torch

    from attnviz.datasets import make_shapes

    printed = _printed(outputs)
    table = printed[printed.index("on object / area share"):]
    ratios = [float(v) for v in re.findall(r"^\s*\d+\s+([\d.]+)×", table, flags=re.M)]
    mean = float(re.search(r"mean\s+([\d.]+)×", table).group(1))
    text = _notice(nb, "only head")
    local = [h for h, r in enumerate(ratios) if r > 1]
    others = [r for r in ratios if r <= 1]
    assert len(ratios) == 4 and local == [3], ratios
    assert f"only head {local[0]} localises" in text
    assert f"{ratios[local[0]]:.2f}× the object's area share" in text
    assert f"Heads 0–2 put *less* than the area share there ({min(others):.2f}–" \
           f"{max(others):.2f}×)" in text
    assert f"The mean of heads ({mean:.2f}×)" in text and min(ratios) < mean < max(ratios)
    still = [o["data"]["text/plain"] for o in outputs
             if "last view of the explorer" in o.get("data", {}).get("text/plain", "")]
    row, col = map(int, re.search(r"query \((\d+), (\d+)\)", still[-1]).groups())
    masks = make_shapes(4, seed=3).masks
    cells = torch.nn.functional.adaptive_avg_pool2d(masks[:1, None].float(), (8, 8))[0, 0]
    assert cells[row, col] > 0.5, (row, col)  # the query lies inside the object
    assert "mean of heads" in still[-1]
    # reopened without a kernel: right after the widget, a still image of its last view
    saved = _outputs(nbformat.reads(nbformat.writes(nb), as_version=4))
    at = next(i for i, o in enumerate(saved) if WIDGET_MIME in o.get("data", {}))
    snapshot = saved[at + 1]["data"]
    jpeg = Image.open(io.BytesIO(base64.b64decode(snapshot["image/jpeg"])))
    assert jpeg.size[0] > 200 and "last view of the explorer" in snapshot["text/plain"]
    assert f'src="data:image/jpeg;base64,{snapshot["image/jpeg"]}"' in snapshot["text/html"]


def _execute(nb: nbformat.NotebookNode, folder: Path) -> float:
    client = NotebookClient(nb, timeout=TIME_LIMIT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    t0 = time.perf_counter()
    client.execute()
    return time.perf_counter() - t0


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNVIZ_STATIC", "1")  # explorers also leave static figures
    monkeypatch.delenv("ATTNVIZ_DATA", raising=False)  # the package's own files
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    nb = nbformat.read(path, as_version=4)
    elapsed = _execute(nb, path.parent)
    outputs = _outputs(nb)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    stderr = [o["text"] for o in outputs if o.get("name") == "stderr"]
    assert path not in MINE or not stderr, f"{path.name} printed to stderr (a pink box): {stderr}"
    solutions = _solution_blocks(nb)  # executed: no cell ran a solution, none printed one
    ran = [c.source for c in nb.cells if c.cell_type == "code" and c.execution_count]
    assert not [b for b in solutions for src in ran if b.strip().splitlines()[-1] in src]
    assert not [o for o in outputs if "Solution" in str(o.get("text", o.get("data", "")))]
    images = [o for o in outputs if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert images, f"{path.name} produced no figure"
    if "from attnviz.widgets import" in path.read_text():
        widgets = [o for o in outputs if WIDGET_MIME in o.get("data", {})]
        assert widgets, f"{path.name}: the explorer widget was not displayed"
    if path.stem == "00_quickstart":  # the explorer's state is the reader's, not a solution's
        still = [o["data"]["text/plain"] for o in outputs
                 if "last view of the explorer" in o.get("data", {}).get("text/plain", "")]
        assert still and "chelsea" not in still[-1], still
        _check_00(nb, outputs)
    _check_long_cells_warn(nb)
    checks = {"01_channel_attention": _check_01, "05_attention_vs_attribution": _check_05,
              "07_self_attention": _check_07}
    if path.stem in checks:  # "what to notice" lines state what the outputs show
        checks[path.stem](nb, outputs)
    if path.stem == "06_your_own_model":  # the explorer shows the 32-px model as trained
        still = [o["data"]["text/plain"] for o in outputs
                 if "last view of the explorer" in o.get("data", {}).get("text/plain", "")]
        assert still and "16×16" in still[-1] and "112×112" not in still[-1], still
        assert any(f"prediction: {c}" in still[-1] for c in CLASSES), still
        # the saturation line: every block of ours below demo-cbam-plain's mean, as stated
        line = next(o["text"] for o in outputs if o.get("name") == "stdout"
                    and "demo-cbam-plain mean:" in o.get("text", ""))
        ours, plain = line.split("| demo-cbam-plain mean:")
        values = [float(v) for v in re.findall(r": ([0-9.]+)", ours)]
        assert values and max(values) < float(plain), line
        accuracy = float(re.search(r"after 200 steps: ([\d.]+)%", _printed(outputs)).group(1))
        stated = float(re.search(r"about (\d+) %", _notice(nb, "accuracy is above chance")
                                 ).group(1))
        assert 20 < accuracy and abs(accuracy - stated) <= 5, (accuracy, stated)
    print(f"{path.name}: {elapsed:.1f} s, {len(images)} figures")


@pytest.mark.slow
def test_executed_explorer_keeps_a_static_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reopened without a kernel, the widget cannot show: the next output is its last view."""
    monkeypatch.delenv("ATTNVIZ_STATIC", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    path = notebooks_dir() / "explorer.ipynb"
    nb = nbformat.read(path, as_version=4)
    _execute(nb, path.parent)
    saved = nbformat.reads(nbformat.writes(nb), as_version=4)  # as written to disk
    outputs = _outputs(saved)
    at = next(i for i, o in enumerate(outputs) if WIDGET_MIME in o.get("data", {}))
    snapshot = outputs[at + 1]["data"]
    jpeg = base64.b64decode(snapshot["image/jpeg"])
    assert Image.open(io.BytesIO(jpeg)).size == (640, 272)
    assert f'src="data:image/jpeg;base64,{snapshot["image/jpeg"]}"' in snapshot["text/html"]
    assert "last view of the explorer: image shapes_circle.png" in snapshot["text/plain"]


@pytest.mark.slow
def test_report_notebook_runs_with_its_defaults_from_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As after `attnviz notebooks DEST` and Run All in JupyterLab: the kernel runs in the
    notebook's folder, with no parameters injected."""
    monkeypatch.delenv("ATTNVIZ_DATA", raising=False)
    copy = Path(shutil.copy(notebooks_dir() / REPORT_NOTEBOOK, tmp_path))
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(copy, as_version=4)
    _execute(nb, tmp_path)
    errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert not errors, errors
    assert (tmp_path / "reports" / "summary.csv").is_file()


@pytest.mark.slow
def test_papermill_runs_the_report_notebook_in_notebooks_with_its_defaults(
        tmp_path: Path) -> None:
    """`cd notebooks && papermill report.ipynb out.ipynb`: the report lands in
    notebooks/reports/ (ignored by git). A reports/ folder already there is moved aside for the
    run and put back; what the test wrote is removed, so nothing is left in the tree."""
    folder = notebooks_dir()
    template = (folder / REPORT_NOTEBOOK).read_bytes()
    reports = folder / "reports"
    aside = tmp_path / "users-reports"
    if reports.exists():
        shutil.move(reports, aside)
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNVIZ_DATA", "JPY_SESSION_NAME")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "papermill", REPORT_NOTEBOOK, str(tmp_path / "out.ipynb"),
             "--kernel", "python3"],
            cwd=folder, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            timeout=TIME_LIMIT_S, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((reports / "summary.json").read_text())
        assert summary["n_images"] == len(list((folder.parent / "data" / "images").glob("*.*g")))
        assert (reports / "report.html").stat().st_size > 10_000
    finally:
        shutil.rmtree(reports, ignore_errors=True)
        for partial in folder.glob(".reports.attnviz-partial-*"):
            shutil.rmtree(partial, ignore_errors=True)
        if aside.exists():
            shutil.move(aside, reports)
    assert (folder / REPORT_NOTEBOOK).read_bytes() == template

"""The README and docs/ say what the code does: the README stays short and links every page,
the numbers quoted from the model cards are the cards', and the documented commands exit with
the documented codes (``make report``'s own command line included: no "could not read" entry
for the files the project ships)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnviz.models import DEMO_MODELS, demo_card

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TIMEOUT_S = 300


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)#\s]+)\)", path.read_text(encoding="utf-8"))


def test_readme_is_short_and_links_every_page() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) < 200
    linked = set(_links(README))
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages and pages <= linked, pages - linked
    for page in [README, *DOCS.glob("*.md")]:
        for target in _links(page):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_readme_pictures_are_small_pngs() -> None:
    pictures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", README.read_text(encoding="utf-8"))
    assert sorted(pictures) == ["docs/images/explorer.png", "docs/images/report.png"]
    for name in pictures:
        data = (ROOT / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 200_000, name


def _row(model: str) -> list[str]:
    text = (DOCS / "demo-models.md").read_text(encoding="utf-8")
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| `{model}` |")]
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_demo_table_quotes_the_model_cards(model: str) -> None:
    accuracy = demo_card(model)["test"]["accuracy"]
    assert _row(model)[1] == f"{100 * accuracy:.4g}%"


def test_demo_cbam_row_quotes_its_card() -> None:
    test = demo_card("demo-cbam")["test"]
    layer = test["best_spatial_layer"]
    (trained,) = [r for r in test["layers"] if r["name"] == layer]
    (random,) = [r for r in test["random_init"]["layers"] if r["name"] == layer]
    cell = _row("demo-cbam")[2]
    assert (f"pointing game {trained['pointing']:.3f} ({random['pointing']:.3f}), raw "
            f"energy-in-box {trained['energy_raw']:.2f} ({random['energy_raw']:.2f})") in cell


def test_demo_weights_time_is_the_sum_of_the_cards() -> None:
    """One figure everywhere: the cards' train_seconds added up (demo models train one after
    another), rounded to 10 minutes."""
    seconds = sum(demo_card(m)["train_seconds"] for m in DEMO_MODELS)
    minutes = int(round(seconds / 600) * 10)
    said = f"about {minutes // 60} h {minutes % 60} min"
    for path in (README, DOCS / "demo-models.md", ROOT / "Makefile"):
        assert said in path.read_text(encoding="utf-8"), path.name
    assert f"{round(seconds):,} s" in (DOCS / "demo-models.md").read_text(encoding="utf-8")


def _attnviz(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ATTNVIZ_DATA"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "attnviz", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S,
                          stdin=subprocess.DEVNULL)


def test_documented_exit_codes(tmp_path: Path) -> None:
    import attnviz

    version = _attnviz("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"attnviz {attnviz.__version__}")
    bad = _attnviz("report", "data/images", "--no-such-flag")
    assert bad.returncode == 2 and bad.stderr.startswith("attnviz: error: ")
    missing = _attnviz("report", str(tmp_path / "nothing.png"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    one = _attnviz("report", "data/images/shapes_star.png", "--model", "demo-cbam",
                   "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["n_images"] == 1


def test_make_report_reads_every_shipped_image(tmp_path: Path) -> None:
    """`make report`'s own command (from `make -n`), into a temporary folder."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    lines = subprocess.run(["make", "--no-print-directory", "-n", "report"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True,
                           timeout=60).stdout.strip().splitlines()
    dry = [ln for ln in lines if not ln.startswith("make")][-1]  # (run from make test, too)
    argv = shlex.split(dry)
    assert Path(argv[0]).name == "attnviz" and argv[1:3] == ["report", "data/images"], dry
    out = argv.index("--out") + 1
    argv[out] = str(tmp_path / "reports")
    run = _attnviz(*argv[1:])
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["n_could_not_read"] == 0 and summary["could_not_read"] == []
    assert summary["n_images"] == len(list((ROOT / "data" / "images").iterdir()))


def test_readme_notebooks_table_lists_every_notebook() -> None:
    from attnviz.resources import notebook_paths

    rows = re.findall(r"^\| `(\w+)` \|", README.read_text(encoding="utf-8"), flags=re.M)
    assert rows == [p.stem for p in notebook_paths()]


def test_every_notebook_states_its_run_all_time_and_the_readme_table_agrees() -> None:
    """Each notebook says at the top how long Run All takes on a 2-core laptop; the README's
    notebooks table gives the same number; the lessons that used to stall a class stay within
    their budgets (04 and 05 ≤ 30 s, 06 ≤ 60 s)."""
    import nbformat

    from attnviz.resources import notebook_paths

    table = dict(re.findall(r"^\| `(\w+)` \|.*\| (\d+) s \|$", README.read_text(encoding="utf-8"),
                            flags=re.M))
    stated = {}
    for path in notebook_paths():
        top = nbformat.read(path, as_version=4).cells[0].source.splitlines()[:3]
        (line,) = [x for x in top if x.startswith("*Expected time:")]
        m = re.fullmatch(r"\*Expected time: about (\d+) s for Run All on a 2-core laptop\.\*", line)
        assert m, (path.name, line)
        stated[path.stem] = int(m.group(1))
    assert {k: int(v) for k, v in table.items()} == stated
    assert stated["04_reading_attention"] <= 30 and stated["05_attention_vs_attribution"] <= 30
    assert stated["06_your_own_model"] <= 60

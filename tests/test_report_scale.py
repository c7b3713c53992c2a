"""A 100-image report of the trained demo model: size and figure counts, and --max-figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from report_helpers import figure_counts, write_shapes

from attnviz import report

MAX_BYTES = 8_000_000  # the size goal for 100 images (issue: reports, second version)


@pytest.fixture(scope="module")
def hundred(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("hundred"), 100, seed=11)


@pytest.mark.parametrize(("max_figures", "shown"), [(None, 100), (10, 10), (0, 0)])
def test_hundred_images(hundred, tmp_path, max_figures, shown):
    options = {} if max_figures is None else {"max_figures": max_figures}
    html = report.write_report(hundred, model="demo-cbam", out_dir=tmp_path / "out",
                               progress=False, **options)
    size = html.stat().st_size
    page = html.read_text()
    # per image with figures: the input, 8 spatial masks over it, 8 blocks of channel bars
    assert figure_counts(page) == {"sections": shown, "inputs": shown, "overlays": 8 * shown,
                                   "svg": 8 * shown}
    assert size <= MAX_BYTES
    if shown:
        assert size / shown < 60_000  # per image with figures, everything included
    else:
        assert "No per-image figures" in page and size < 200_000
    with open(html.parent / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 100 * 16  # summaries for every image
    summary = json.loads((html.parent / "summary.json").read_text())
    assert summary["n_images"] == 100 and len(summary["predictions"]) == 100
    assert page.count("<tr><td>") >= 100  # the predictions table lists every image

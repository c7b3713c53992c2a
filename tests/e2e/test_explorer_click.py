"""The one explorer on demo-botnet's self-attention in a real JupyterLab + headless Chromium: a
click on the picture (the object's cell) picks that query, and the picture changes to it.

    .venv/bin/python -m pytest tests/e2e/test_explorer_click.py -m e2e -s   # -s: the latency
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .browser import JS_FIRST_RENDER, JS_NEW_SRC, JS_RUN_ALL, Session, open_notebook, write_notebook
from .conftest import LabServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NOTEBOOK = "botnet_explorer.ipynb"
FIRST_RENDER_MS = 60_000
REDRAW_MS = 20_000
CELL = '''import attnviz
from attnviz.widgets import AttentionExplorer
model = attnviz.load_model("demo-botnet", device="cpu")
AttentionExplorer(model, attnviz.sample_images("shapes"))'''


@pytest.fixture
def lab_notebooks() -> tuple[Path, ...]:
    return ()  # the test writes its own notebook


def _target(cell: tuple[int, int]) -> tuple[float, float, tuple[int, int]]:
    """The pixel of the explorer's picture (its natural size) at the centre of ``cell`` on the
    attention map, from the same figure built here; the picture's size."""
    import attnviz
    from attnviz.widgets import AttentionExplorer

    ex = AttentionExplorer(attnviz.load_model("demo-botnet", device="cpu"),
                           attnviz.sample_images("shapes"), static=False)
    grid = (ex.row.max + 1, ex.col.max + 1)
    box, height = ex.weights_axes.get_window_extent(), ex.figure.bbox.height
    x = box.x0 + (cell[1] + 0.5) * box.width / grid[1]
    y = height - box.y1 + (cell[0] + 0.5) * box.height / grid[0]
    assert ex.fig.cell_at(x, y, grid) == cell and (ex.row.value, ex.col.value) != cell
    return x, y, (round(ex.figure.bbox.width), round(height))


def test_a_click_on_the_picture_picks_the_query(chromium: Path, lab_server: LabServer,
                                                tmp_path: Path) -> None:
    from playwright.sync_api import expect

    write_notebook(lab_server.notebook_dir / NOTEBOOK, CELL)
    cell = (2, 5)  # the bundled circle covers it (the demo opens on the centre, (4, 4))
    x, y, size = _target(cell)
    with Session(chromium, tmp_path, lab_server) as s:
        page = s.page
        s.stage = "kernel ready"
        open_notebook(page, lab_server, NOTEBOOK)
        s.stage = "first render"
        page.evaluate(JS_RUN_ALL)
        first = page.wait_for_function(JS_FIRST_RENDER, timeout=FIRST_RENDER_MS,
                                       polling=100).json_value()
        assert "errors" not in first, "the notebook failed:\n" + "\n".join(first["errors"])
        marker = page.locator(".attnviz-marker")
        expect(marker).to_contain_text("query=(4, 4) head=mean")
        img = page.locator("img.widget-image")
        img.scroll_into_view_if_needed()
        natural = tuple(img.evaluate("(el) => [el.naturalWidth, el.naturalHeight]"))
        assert natural == size, (natural, size)
        s.screenshot("explorer-click-1-opened")

        s.stage = "click"
        box = img.bounding_box()
        t0 = time.perf_counter()
        page.mouse.click(box["x"] + x * box["width"] / size[0],
                         box["y"] + y * box["height"] / size[1])
        expect(marker).to_contain_text(re.compile(r"attnviz-render 2: .* query=\(2, 5\) "),
                                       timeout=REDRAW_MS)
        page.wait_for_function(JS_NEW_SRC, arg=first["src"], timeout=REDRAW_MS, polling=20)
        latency = (time.perf_counter() - t0) * 1000
        caption = page.locator(".widget-html", has_text="key weights").first
        expect(caption).to_contain_text("query (2, 5) · mean of heads")
        s.screenshot("explorer-click-2-clicked")
        s.check_console()
    print(f"\nbrowser latency, click on the picture -> new query drawn and decoded: "
          f"{latency:.0f} ms")

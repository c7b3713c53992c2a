"""The bundled explorer.ipynb in a real JupyterLab + headless Chromium.

Open it (it must not show as modified), run it, move the layer slider and change the image,
measure the latency from a control change to the new image (printed), save, shut the kernel
down and reopen: the explorer's last view must show as a still image. A notebook executed
headless (nbclient, as papermill does) must show its still image too. Screenshots go to
tests/e2e/screenshots/.

    .venv/bin/python -m pytest tests/e2e -m e2e -s     # -s shows the timings
"""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import pytest

from .browser import (
    JS_FIRST_RENDER,
    JS_KERNEL_ERRORS,
    JS_LATENCY_SETUP,
    JS_NEW_SRC,
    JS_RUN_ALL,
    JS_SNAPSHOT_SHOWN,
    Session,
    open_notebook,
    write_notebook,
)
from .conftest import LabServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NOTEBOOK = "explorer.ipynb"
FIRST_RENDER_MS = 45_000
REDRAW_MS = 20_000
REPS = 6  # latency samples per control
EXPLORER_MS = 60  # the explorer's own share of a redraw, over the bare widget round trip


def _slider(page, label: str):
    return page.locator(".widget-slider").filter(
        has=page.locator("label", has_text=re.compile(rf"^{label}$")))


def _value(handle) -> int:
    return round(float(handle.get_attribute("aria-valuenow")))


def _latency(page, marker, act, expect_text: re.Pattern) -> float:
    """Milliseconds from the browser event of ``act()`` to the new image, decoded."""
    from playwright.sync_api import expect

    n = page.evaluate("() => window.__attnvizLatency.samples.length")
    act()
    page.wait_for_function("(n) => window.__attnvizLatency.samples.length > n", arg=n,
                           timeout=REDRAW_MS, polling=20)
    expect(marker).to_contain_text(expect_text, timeout=REDRAW_MS)
    return float(page.evaluate("() => window.__attnvizLatency.samples.at(-1)"))


def test_explorer_in_jupyterlab(chromium: Path, lab_server: LabServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    timings: dict[str, float] = {"server ready": lab_server.started_s}
    latency: dict[str, list[float]] = {}
    with Session(chromium, tmp_path, lab_server) as s:
        page = s.page
        s.stage = "kernel ready"
        t0 = time.perf_counter()
        open_notebook(page, lab_server, NOTEBOOK)
        timings["kernel ready"] = time.perf_counter() - t0
        assert page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty"
                             ) is False, "the notebook shows as modified right after opening"

        s.stage = "first render"
        t0 = time.perf_counter()
        page.evaluate(JS_RUN_ALL)
        first = page.wait_for_function(JS_FIRST_RENDER, timeout=FIRST_RENDER_MS,
                                       polling=100).json_value()
        assert "errors" not in first, "the notebook failed:\n" + "\n".join(first["errors"])
        marker = page.locator(".attnviz-marker")
        expect(marker).to_have_count(1)
        expect(marker).to_be_hidden()  # no visible debug line
        expect(page.locator("img.widget-image")).to_have_count(1)
        expect(page.locator(".attnviz-snapshot")).to_be_hidden()  # the live widget shows
        timings["first render"] = time.perf_counter() - t0
        s.screenshot("explorer-1-first-render")

        s.stage = "layer slider"
        handle = _slider(page, "layer").locator(".noUi-handle[role='slider']")
        start = _value(handle)  # the demo card's best layer
        t0 = time.perf_counter()
        handle.focus()
        page.keyboard.press("ArrowRight")
        expect(handle).to_have_attribute("aria-valuenow", re.compile(rf"^{start + 1}(\.0*)?$"),
                                         timeout=REDRAW_MS)
        expect(marker).to_contain_text(re.compile(rf"attnviz-render \d+: .* layer={start + 1} "),
                                       timeout=REDRAW_MS)
        src1 = page.wait_for_function(JS_NEW_SRC, arg=first["src"], timeout=REDRAW_MS,
                                      polling=50).json_value()
        timings["slider -> redraw"] = time.perf_counter() - t0
        s.screenshot("explorer-2-next-layer")

        s.stage = "image dropdown"
        select = page.locator(".widget-dropdown").filter(
            has=page.locator("label", has_text=re.compile(r"^image$"))).locator("select")
        names = [t.strip() for t in select.locator("option").all_text_contents()]
        assert len(names) >= 2, f"the image dropdown needs two images, has {names}"
        t0 = time.perf_counter()
        select.select_option(index=1)
        expect(marker).to_contain_text(
            re.compile(rf"attnviz-render \d+: image={re.escape(names[1])} layer={start + 1} "),
            timeout=REDRAW_MS)
        page.wait_for_function(JS_NEW_SRC, arg=src1, timeout=REDRAW_MS, polling=50)
        timings["dropdown -> redraw (model run)"] = time.perf_counter() - t0
        s.screenshot("explorer-3-second-image")

        s.stage = "latency"
        page.evaluate(JS_LATENCY_SETUP)
        layer = []
        for i in range(REPS):  # alternate between the next layer and the opening layer
            key, want = ("ArrowLeft", start) if i % 2 == 0 else ("ArrowRight", start + 1)
            handle.focus()
            layer.append(_latency(page, marker, lambda k=key: page.keyboard.press(k),
                                  re.compile(rf" layer={want} ")))
        latency["layer"] = layer
        # now on the layer after the opening one: a channel gate (layer3.1's)
        channel = _slider(page, "channel").locator(".noUi-handle[role='slider']")
        expect(channel).to_be_visible()
        latency["channel"] = [
            _latency(page, marker, lambda: (channel.focus(), page.keyboard.press("ArrowRight")),
                     re.compile(rf" channel={i + 1} ")) for i in range(REPS)]
        handle.focus()
        page.keyboard.press("ArrowLeft")  # back to the spatial mask
        expect(marker).to_contain_text(re.compile(rf" layer={start} "), timeout=REDRAW_MS)
        cmap = page.locator(".widget-dropdown").filter(
            has=page.locator("label", has_text="colour map")).locator("select")
        maps = [t.strip() for t in cmap.locator("option").all_text_contents()]
        order = [maps[(i + 1) % len(maps)] for i in range(REPS)]
        latency["colour map"] = [
            _latency(page, marker, lambda m=m: cmap.select_option(m), re.compile(r"attnviz-render"))
            for m in order]
        s.screenshot("explorer-4-colour-map")

        s.stage = "checks"
        errors = page.evaluate(JS_KERNEL_ERRORS)
        assert not errors, "kernel error output:\n" + "\n".join(errors)
        status = page.locator(".widget-html b[style*='#b00']")  # the explorer's own errors
        assert status.count() == 0, f"explorer error: {status.all_inner_texts()}"
        s.check_console()

        s.stage = "save and reopen"
        last = re.search(r"layer=(\d+)", marker.text_content()).group(1)
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=10_000)
        page.evaluate("() => window.jupyterapp.commands.execute('kernelmenu:shutdown')")
        page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
        open_notebook(page, lab_server, NOTEBOOK, reset=False)
        shown = page.wait_for_function(JS_SNAPSHOT_SHOWN, timeout=REDRAW_MS,
                                       polling=100).json_value()
        assert re.search(rf"layer {int(last)}: \S+", shown["caption"]), shown
        assert not page.get_by_text("Error displaying widget").is_visible()
        s.screenshot("explorer-5-reopened")

    print("\ne2e timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    print("browser latency, control change -> new image decoded (median / max of "
          f"{REPS}): " + ", ".join(f"{k} {statistics.median(v):.0f} / {max(v):.0f} ms"
                                   for k, v in latency.items()))
    # the target: the explorer adds at most 60 ms to the bare widget round trip measured on
    # the same machine, server and browser just now (absolute numbers follow the machine)
    floor = _floor_ms(chromium, lab_server, tmp_path / "floor")
    print(f"bare widget round trip (the floor): {floor:.0f} ms")
    for k, v in latency.items():
        assert statistics.median(v) - floor <= EXPLORER_MS, (k, v, floor)


def test_headless_executed_notebook_shows_its_last_view(chromium: Path, lab_server: LabServer,
                                                        tmp_path: Path) -> None:
    """nbclient / papermill output, opened in JupyterLab (untrusted: no widget, no script)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(lab_server.notebook_dir / NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(lab_server.notebook_dir)}}).execute()
    nbformat.write(nb, lab_server.notebook_dir / "executed.ipynb")
    with Session(chromium, tmp_path, lab_server) as s:
        s.stage = "open executed notebook"
        open_notebook(s.page, lab_server, "executed.ipynb")
        shown = s.page.wait_for_function(JS_SNAPSHOT_SHOWN, timeout=REDRAW_MS,
                                         polling=100).json_value()
        assert "image shapes_circle.png" in shown["caption"], shown
        assert not s.page.get_by_text("Error displaying widget").is_visible()
        s.screenshot("explorer-6-executed-headless")
        s.check_console()


FLOOR_CELL = '''
import io
import ipywidgets as W
import numpy as np
from PIL import Image

def frame(seed):
    pixels = np.random.default_rng(seed).integers(0, 255, (272, 640, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()

frames = [frame(0), frame(1)]
slider = W.IntSlider(0, 0, 10, description="layer", continuous_update=False)
image = W.Image(value=frames[0], format="jpeg")
slider.observe(lambda change: setattr(image, "value", frames[change["new"] % 2]), names="value")
W.VBox([slider, image])
'''


def test_bare_widget_round_trip(chromium: Path, lab_server: LabServer, tmp_path: Path) -> None:
    """The floor under the explorer's latency: a slider that swaps two ready JPEGs of the
    explorer's size, no drawing (printed next to the explorer's numbers)."""
    floor = _floor_ms(chromium, lab_server, tmp_path)
    assert 0 < floor < REDRAW_MS  # every change reached the page as a decoded image


def _floor_ms(chromium: Path, lab_server: LabServer, tmp_path: Path) -> float:
    """The median of REPS bare widget round trips (slider -> ready JPEG decoded), in ms."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_notebook(lab_server.notebook_dir / "floor.ipynb", FLOOR_CELL)
    with Session(chromium, tmp_path, lab_server) as s:
        page = s.page
        s.stage = "open"
        open_notebook(page, lab_server, "floor.ipynb")
        page.evaluate(JS_RUN_ALL)
        page.wait_for_function(JS_NEW_SRC, arg="", timeout=FIRST_RENDER_MS, polling=100)
        page.evaluate(JS_LATENCY_SETUP)
        handle = _slider(page, "layer").locator(".noUi-handle[role='slider']")
        samples = []
        for i in range(REPS):
            n = page.evaluate("() => window.__attnvizLatency.samples.length")
            handle.focus()
            page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
            page.wait_for_function("(n) => window.__attnvizLatency.samples.length > n", arg=n,
                                   timeout=REDRAW_MS, polling=20)
            samples.append(float(page.evaluate("() => window.__attnvizLatency.samples.at(-1)")))
        s.check_console()
    print(f"\nbare widget round trip (slider -> ready JPEG decoded, median / max of {REPS}): "
          f"{statistics.median(samples):.0f} / {max(samples):.0f} ms")
    return statistics.median(samples)

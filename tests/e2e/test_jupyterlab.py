"""The bundled explorer.ipynb in a real JupyterLab + headless Chromium: run it, move the layer
slider and change the image, and check that every change redraws, with no kernel or browser
errors. Screenshots go to tests/e2e/screenshots/.

    .venv/bin/python -m pytest tests/e2e -m e2e -s     # -s shows the timings
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .conftest import CHROMIUM_ARGS, SCREENSHOTS, LabServer

# the lab_server fixture serves a copy of the bundled explorer.ipynb (conftest: lab_notebooks)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NOTEBOOK = "explorer.ipynb"
KERNEL_READY_MS = 45_000
FIRST_RENDER_MS = 45_000
REDRAW_MS = 20_000

# Kernel ready = the notebook's session has a kernel that is connected and idle. The toolbar's
# idle indicator shows up earlier, and a run-all sent then is silently dropped.
JS_KERNEL_READY = """(path) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.context || w.context.path !== path || !w.context.isReady) return false;
  const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""

JS_RUN_ALL = """() => {
  window.__attnvizRunAll = 'pending';
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    (r) => { window.__attnvizRunAll = 'done: ' + r; },
    (e) => { window.__attnvizRunAll = 'failed: ' + e; });
}"""

# Kernel errors: tracebacks on stderr (JupyterLab shows error outputs with the stderr mime type)
# and any rendered text that mentions an error.
JS_KERNEL_ERRORS = """() => {
  const out = [];
  for (const el of document.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
    if (el.innerText.includes('Traceback')) out.push(el.innerText);
  }
  for (const el of document.querySelectorAll('.jp-RenderedText')) {
    if (el.innerText.includes('Error')) out.push(el.innerText);
  }
  return [...new Set(out)];
}"""

# The explorer has drawn: its marker says `attnviz-render 1:` and its image has a src that loaded.
# Kernel errors end the wait early (with the error text) instead of running into the timeout.
JS_FIRST_RENDER = """() => {
  const errors = (KERNEL_ERRORS)();
  if (errors.length) return {errors};
  const marker = [...document.querySelectorAll('.widget-html code')]
    .some((el) => el.textContent.includes('attnviz-render 1:'));
  const img = document.querySelector('img.widget-image');
  const src = img && img.getAttribute('src');
  return marker && src && img.complete && img.naturalWidth > 0 ? {src} : false;
}""".replace("KERNEL_ERRORS", JS_KERNEL_ERRORS)

# The explorer image shows a new, loaded src (it is set just before the marker).
JS_NEW_SRC = """(old) => {
  const img = document.querySelector('img.widget-image');
  const src = img && img.getAttribute('src');
  return src && src !== old && img.complete && img.naturalWidth > 0 ? src : false;
}"""

# Regexes for console errors that are not about the notebook or its widgets; explain each one.
# Empty: with the options in conftest (no news / update check, no outbound DNS) 10 runs in a row
# logged no console error at all, so every console error fails the test.
IGNORED_CONSOLE: list[str] = []


def _ignored(text: str) -> bool:
    return any(re.search(p, text) for p in IGNORED_CONSOLE)


def test_explorer_in_jupyterlab(chromium: Path, lab_server: LabServer, tmp_path: Path) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    timings = {"server ready": lab_server.started_s}
    console: list[str] = []
    stage = "start"
    page = None

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # new, empty
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: console.append(f"console.{m.type}: {m.text} "
                                                        f"({m.location.get('url', '')})")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

            stage = "kernel ready"
            t0 = time.perf_counter()
            page.goto(lab_server.url(f"lab/tree/{NOTEBOOK}", "reset"))
            page.wait_for_function(JS_KERNEL_READY, arg=NOTEBOOK, timeout=KERNEL_READY_MS,
                                   polling=100)
            timings["kernel ready"] = time.perf_counter() - t0

            stage = "first render"
            t0 = time.perf_counter()
            page.evaluate(JS_RUN_ALL)
            first = page.wait_for_function(JS_FIRST_RENDER, timeout=FIRST_RENDER_MS,
                                           polling=100).json_value()
            assert "errors" not in first, "the notebook failed:\n" + "\n".join(first["errors"])
            marker = page.locator(".widget-html code").filter(has_text="attnviz-render")
            expect(marker).to_have_count(1)
            expect(marker).to_be_visible()
            expect(page.locator("img.widget-image")).to_have_count(1)
            src0 = first["src"]
            timings["first render"] = time.perf_counter() - t0
            page.screenshot(path=SCREENSHOTS / "explorer-1-first-render.png")

            stage = "layer slider"
            slider = page.locator(".widget-slider").first
            expect(slider.locator("label")).to_have_text("layer")
            handle = slider.locator(".noUi-handle[role='slider']")
            t0 = time.perf_counter()
            handle.focus()
            page.keyboard.press("ArrowRight")
            expect(handle).to_have_attribute("aria-valuenow", re.compile(r"^1(\.0*)?$"),
                                             timeout=REDRAW_MS)
            expect(marker).to_contain_text(re.compile(r"attnviz-render \d+: .* layer=1 "),
                                           timeout=REDRAW_MS)
            src1 = page.wait_for_function(JS_NEW_SRC, arg=src0, timeout=REDRAW_MS,
                                          polling=50).json_value()
            timings["slider -> redraw"] = time.perf_counter() - t0
            page.screenshot(path=SCREENSHOTS / "explorer-2-layer-1.png")

            stage = "image dropdown"
            dropdown = page.locator(".widget-dropdown").filter(
                has=page.locator("label", has_text=re.compile(r"^image$")))
            select = dropdown.locator("select")
            names = [t.strip() for t in select.locator("option").all_text_contents()]
            assert len(names) >= 2, f"the image dropdown needs two images, has {names}"
            t0 = time.perf_counter()
            select.select_option(index=1)
            expect(marker).to_contain_text(
                re.compile(rf"attnviz-render \d+: image={re.escape(names[1])} layer=1 "),
                timeout=REDRAW_MS)
            page.wait_for_function(JS_NEW_SRC, arg=src1, timeout=REDRAW_MS, polling=50)
            timings["dropdown -> redraw"] = time.perf_counter() - t0
            page.screenshot(path=SCREENSHOTS / "explorer-3-second-image.png")

            stage = "checks"
            errors = page.evaluate(JS_KERNEL_ERRORS)
            assert not errors, "kernel error output:\n" + "\n".join(errors)
            status = page.locator(".widget-html b[style*='#b00']")  # the explorer's own errors
            assert status.count() == 0, f"explorer error: {status.all_inner_texts()}"
            run_all = page.evaluate("() => window.__attnvizRunAll")
            assert run_all is None or not str(run_all).startswith("failed"), run_all
            widget_errors = [c for c in console if not _ignored(c)]
            assert not widget_errors, "browser console errors:\n" + "\n".join(widget_errors)
        except (AssertionError, PlaywrightError) as e:
            if page is not None:
                try:
                    page.screenshot(path=SCREENSHOTS / "explorer-failed.png")
                except PlaywrightError:
                    pass
            raise AssertionError(
                f"failed at stage {stage!r}: {e}\n--- browser console:\n" + "\n".join(console)
                + f"\n--- JupyterLab log (tail):\n{lab_server.log_tail()}") from e
        finally:
            context.close()

    print("\ne2e timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    ignored = [c for c in console if _ignored(c)]
    if ignored:
        print("ignored console messages:\n  " + "\n  ".join(ignored))

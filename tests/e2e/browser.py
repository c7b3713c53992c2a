"""Chromium session and page probes for the JupyterLab tests (see conftest for the server)."""
from __future__ import annotations

import re
from pathlib import Path

from .conftest import CHROMIUM_ARGS, SCREENSHOTS, LabServer

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

# The explorer has drawn: its hidden marker says `attnviz-render 1:` and its image has a src
# that loaded. Kernel errors end the wait early (with the error text).
JS_FIRST_RENDER = """() => {
  const errors = (KERNEL_ERRORS)();
  if (errors.length) return {errors};
  const marker = [...document.querySelectorAll('.attnviz-marker')]
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

# Latency probe: a key press or a <select> change starts the clock; the explorer image's next
# src, once decoded, stops it.
JS_LATENCY_SETUP = """() => {
  const img = document.querySelector('img.widget-image');
  const lat = window.__attnvizLatency = {t0: null, samples: []};
  const start = () => { lat.t0 = performance.now(); };
  document.addEventListener('keydown', start, true);
  document.addEventListener('change', start, true);
  new MutationObserver(() => {
    const t0 = lat.t0;
    if (t0 === null) return;
    lat.t0 = null;
    const done = () => lat.samples.push(performance.now() - t0);
    img.decode().then(done, done);
  }).observe(img, {attributes: true, attributeFilter: ['src']});
}"""

# The explorer's still image (its last view) is on screen: loaded and not hidden.
JS_SNAPSHOT_SHOWN = """() => {
  const img = [...document.querySelectorAll('img')]
    .find((i) => (i.alt || '').startsWith('last view of the explorer'));
  if (!img || !img.complete || !img.naturalWidth || img.offsetParent === null) return false;
  const box = img.getBoundingClientRect();
  return box.width > 0 && box.height > 0 ? {caption: img.alt, width: img.naturalWidth} : false;
}"""

KERNEL_READY_MS = 45_000


def open_notebook(page, server: LabServer, name: str, reset: bool = True) -> None:
    """Open notebook ``name`` of ``server`` and wait until its kernel is ready."""
    page.goto(server.url(f"lab/tree/{name}", "reset" if reset else ""))
    page.wait_for_function(JS_KERNEL_READY, arg=name, timeout=KERNEL_READY_MS, polling=100)


def write_notebook(path: Path, source: str) -> None:
    """A one-cell Python 3 notebook of ``source`` at ``path``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    nbformat.write(nb, path)


# Regexes for console errors that are not about the notebook or its widgets; explain each one.
# - reopening a notebook whose widget models died with their kernel: the widget manager logs
#   the missing model once per widget output (the still image below it is what shows)
IGNORED_CONSOLE: list[str] = [r"widget model not found", r"Could not create a view"]


class Session:
    """A fresh Chromium profile and page; on failure: a screenshot, the console and the
    server log in the assertion message."""

    def __init__(self, chromium: Path, tmp_path: Path, server: LabServer) -> None:
        self.chromium, self.tmp_path, self.server = chromium, tmp_path, server
        self.console: list[str] = []
        self.stage = "start"

    def __enter__(self) -> Session:
        from playwright.sync_api import sync_playwright

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            str(self.tmp_path / "chromium-profile"),  # new, empty
            executable_path=str(self.chromium), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.on("console", lambda m: self.console.append(
            f"console.{m.type}: {m.text} ({m.location.get('url', '')})")
            if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return self

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png")

    def check_console(self) -> None:
        errors = [c for c in self.console if not any(re.search(p, c) for p in IGNORED_CONSOLE)]
        assert not errors, "browser console errors:\n" + "\n".join(errors)

    def __exit__(self, kind, err, tb) -> None:
        from playwright.sync_api import Error as PlaywrightError

        try:
            if err is not None and isinstance(err, (AssertionError, PlaywrightError)):
                try:
                    self.screenshot("explorer-failed")
                except PlaywrightError:
                    pass
                raise AssertionError(
                    f"failed at stage {self.stage!r}: {err}\n--- browser console:\n"
                    + "\n".join(self.console)
                    + f"\n--- JupyterLab log (tail):\n{self.server.log_tail()}") from err
        finally:
            self.context.close()
            self._pw.stop()

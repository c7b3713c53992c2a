"""Running a report: validate, build the model once, analyse, write the files aside and
publish them together (:mod:`.publish`). ``notebook=True`` runs the narrative notebook
``report.ipynb`` with papermill instead and keeps the executed copy."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ..models.preprocess import input_spec
from ..resources import REPORT_NOTEBOOK, notebooks_dir
from .analysis import ReportData, analyse, load_report_model
from .files import write_summaries
from .inputs import open_images
from .params import ReportParameters, validate
from .publish import NOTEBOOK_MARK, Publication


class ReportExecutionError(RuntimeError):
    """The report notebook raised: ``cell_index``, ``ename``, ``evalue`` name the failure and
    ``notebook`` the partly executed copy (with the error in it)."""

    def __init__(self, message: str, *, cell_index: int | None = None, ename: str = "",
                 evalue: str = "", notebook: Path | None = None) -> None:
        super().__init__(message)
        self.cell_index, self.ename, self.evalue = cell_index, ename, evalue
        self.notebook = notebook


def default_notebook() -> Path:
    """The bundled ``report.ipynb``."""
    return notebooks_dir() / REPORT_NOTEBOOK


def write_outputs(run: ReportData, params: ReportParameters,
                  folder: str | os.PathLike) -> list[Path]:
    """Write ``report.html``, ``summary.csv`` and ``summary.json`` of ``run`` into ``folder``."""
    from .render import render_page

    section = None
    if params.attribution:
        from .compare import attribution_section

        section = attribution_section(run, max_images=min(8, params.max_figures))
    page = render_page(run, params, section)
    out = Path(folder)
    csv_path, json_path = write_summaries(run, out)
    html = out / "report.html"
    html.write_text(page, encoding="utf-8")
    return [html, csv_path, json_path]


def publish_report(run: ReportData, params: ReportParameters) -> Path:
    """Write ``run``'s files aside and publish them into ``params.out_dir`` together."""
    with Publication(params.out_dir) as pub:
        write_outputs(run, params, pub.stage)
        pub.publish()
    return Path(params.out_dir) / "report.html"


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) while the report runs, so its partial files are
    removed (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any],
                     timeout: float | None = None) -> None:
    """Run ``notebook`` with papermill (kernel ``python3`` over IPC sockets in a private
    folder); a failing cell raises :class:`ReportExecutionError`."""
    import papermill as pm
    from jupyter_client.manager import AsyncKernelManager

    with tempfile.TemporaryDirectory(prefix="attnviz-kernel-") as tmp:

        class IPCKernelManager(AsyncKernelManager):
            # IPC sockets in a private folder: no open TCP ports
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(transport="ipc", ip=os.path.join(tmp, "kernel"), **kwargs)

        try:
            pm.execute_notebook(
                str(notebook), str(output), parameters=parameters, kernel_name="python3",
                progress_bar=False, log_output=False, cwd=os.getcwd(),
                execution_timeout=timeout, kernel_manager_class=IPCKernelManager,
                # progress bars (fd-level stderr) go to the terminal, not into the notebook
                extra_arguments=["--IPKernelApp.capture_fd_output=False"],
            )
        except pm.PapermillExecutionError as e:
            raise ReportExecutionError(
                f"report notebook failed in cell {e.cell_index} ({e.ename}: {e.evalue})",
                cell_index=e.cell_index, ename=e.ename, evalue=e.evalue, notebook=output,
            ) from None


def _mark_notebook(path: Path, stage: Path) -> None:
    """Mark the executed notebook as a report output (with the run id of its summary)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    run_id = json.loads((stage / "summary.json").read_text(encoding="utf-8")).get("run_id")
    nb.setdefault("metadata", {})[NOTEBOOK_MARK] = {"run_id": run_id}
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _run_notebook(params: ReportParameters, pub: Publication, template: Path,
                  timeout: float | None) -> None:
    nb_out = pub.stage / REPORT_NOTEBOOK
    try:
        execute_notebook(template, nb_out, {"parameters": params.to_json(),
                                            "stage": str(pub.stage)}, timeout=timeout)
    except ReportExecutionError as e:
        failed = Path(params.out_dir) / "report.failed.ipynb"
        if nb_out.is_file():
            os.replace(nb_out, failed)
            e.notebook = failed
        raise
    _mark_notebook(nb_out, pub.stage)


def write_report(
    images: Any = None,
    *,
    template: str | os.PathLike | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Validate, analyse, write and publish a report; returns ``out_dir/report.html``.

    ``images`` is a :class:`ReportParameters` or the images, with the other parameters as
    keywords (``model``, ``out_dir``, ``layers``, ``max_figures``, ``notebook``, ...).
    Writes ``report.html``, ``summary.csv``, ``summary.json`` (and with ``notebook=True`` the
    executed ``report.ipynb``), all published together. Raises ParameterError / ModelError /
    NoAttentionError before writing anything, and :class:`ReportExecutionError` when a
    notebook cell fails (the partial notebook is kept as ``report.failed.ipynb``). ``log``
    receives progress lines; ``template`` replaces the bundled notebook.
    """
    params = validate(ReportParameters.build(images, **options))
    nb_in = Path(template) if template is not None else default_notebook()
    if params.notebook and not nb_in.is_file():
        raise ParameterError(f"report notebook {os.fspath(nb_in)!r} not found")
    net, _ = load_report_model(params)  # built once; errors before anything is written
    source = open_images(params.images, input_spec(net).size)  # nothing matched: error here
    with _sigterm_raises(), Publication(params.out_dir) as pub:
        if log is not None:
            from ..models import model_device

            name = params.model if isinstance(params.model, str) else type(net).__name__
            what = f"{source.n} image(s)" if source.n is not None else \
                f"{len(source.shards or [])} tar shard(s)"
            log(f"{what} ({source.kind}), model {name}, device {model_device(net)}; "
                "writing the report ...")
        if params.notebook:
            _run_notebook(params, pub, nb_in, timeout)
        else:
            run = analyse(params, net=net, keep=params.max_figures, source=source,
                          progress=progress)
            write_outputs(run, params, pub.stage)
        pub.publish()
    return Path(params.out_dir) / "report.html"


__all__ = ["ReportExecutionError", "default_notebook", "execute_notebook", "publish_report",
           "write_outputs", "write_report"]

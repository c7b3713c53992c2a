"""Batch attention reports: record every attention weight of a model on a set of images and
write a self-contained HTML page with per-image figures and per-layer summaries.

    write_report(["photos/"], model="demo-cbam", out_dir="reports")   # report.html + summaries
    run = analyse(None, "demo-cbam")     # the analysis alone (None: the bundled sample images)

The parts, by concern:

* :mod:`.params` — :class:`ReportParameters`, every parameter defined once, and ``validate``;
* :mod:`.inputs`, :mod:`.analysis`, :mod:`.collect`, :mod:`.stats` — reading images, the batched
  forward passes inside :func:`attnviz.record`, the per-image statistics (columns documented in
  :mod:`.stats`);
* :mod:`.tiles`, :mod:`.figures`, :mod:`.render`, ``report.html.j2``, :mod:`.compare` — pictures
  composed with numpy/PIL, the page from one autoescaping Jinja2 template, the attribution
  section;
* :mod:`.files`, :mod:`.publish`, :mod:`.running` — ``summary.csv`` (formula-safe) and
  ``summary.json`` (strict JSON: NaN/Inf as null), one run per output folder at a time, files
  published together by rename, and the optional notebook run.
"""

from __future__ import annotations

from .analysis import Prediction, ReportData, analyse, image_progress, load_report_model
from .compare import attribution_section
from .files import read_summary, write_summaries
from .inputs import batches, open_images
from .params import MAX_FIGURES, ReportParameters, add_report_arguments, cli_options, validate
from .publish import REPORT_FILES, Publication
from .render import render_page, tables_html
from .running import (
    ReportExecutionError,
    default_notebook,
    execute_notebook,
    publish_report,
    write_outputs,
    write_report,
)
from .stats import SUMMARY_FIELDS, layer_stats

__all__ = [
    "MAX_FIGURES",
    "REPORT_FILES",
    "SUMMARY_FIELDS",
    "Prediction",
    "Publication",
    "ReportData",
    "ReportExecutionError",
    "ReportParameters",
    "add_report_arguments",
    "analyse",
    "attribution_section",
    "batches",
    "cli_options",
    "default_notebook",
    "execute_notebook",
    "image_progress",
    "layer_stats",
    "load_report_model",
    "open_images",
    "publish_report",
    "read_summary",
    "render_page",
    "tables_html",
    "validate",
    "write_outputs",
    "write_report",
    "write_summaries",
]

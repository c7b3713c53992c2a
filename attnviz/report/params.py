"""The report's parameters, defined once: :class:`ReportParameters` is what ``validate``,
``write_report``, ``analyse``, the ``attnviz report`` options and the report notebook all use."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..checks import (
    MAX_BATCH_SIZE,
    cap_workers,
    check_input_size,
    check_int,
    check_path_text,
)
from ..errors import ParameterError, require
from ..resources import REPORT_NOTEBOOK

#: default of ``--max-figures``: per-image figures for at most this many images
MAX_FIGURES = 100


def _opt(default: Any, help: str, flag: str | None = None, metavar: str | None = None,
         low: int | None = None, high: int | None = None) -> Any:
    """A parameter with its command-line option (``flag`` None: not a report option of the
    CLI, e.g. the model options, which the CLI defines for every command)."""
    meta = {"help": help, "flag": flag, "metavar": metavar, "low": low, "high": high}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ReportParameters:
    """Every parameter of a report, with its default. ``images``: files, folders or glob
    patterns (None: the bundled sample images); ``model``: a name or an ``nn.Module``."""

    images: tuple[str, ...] | None = _opt(None, "image files, folders or glob patterns")
    model: str | nn.Module = _opt("demo-cbam", "model name, your own file.py:factory, or a model")
    checkpoint: str | None = _opt(None, "local weights file for the model")
    model_args: str | dict | None = _opt(None, "keyword arguments for your own model's factory")
    input_size: int | None = _opt(None, "square input side (default: the model's)")
    mean: str | tuple[float, ...] | None = _opt(None, "normalisation mean (default: the model's)")
    std: str | tuple[float, ...] | None = _opt(None, "normalisation std (default: the model's)")
    labels: str | tuple[str, ...] | None = _opt(None, "class names: a file, one name a line")
    output: str | int | None = _opt(None, "which part of the model's output holds the logits: a "
                                          "key, an index or file.py:fn (None: automatic)")
    random_weights: bool = _opt(False, "allow a model without trained weights (the page says "
                                       "so at the top)")
    layers: str | None = _opt(None, "only attention modules whose name matches this glob "
                                    "(e.g. 'layer3*'; 're:...' for a regex)", "--layers", "PAT")
    device: str = _opt("auto", "auto (CUDA when present), cpu, cuda, cuda:1, ... "
                               "(default: %(default)s)", "--device")
    out_dir: str = _opt("reports", "output folder (default: %(default)s)", "--out", "DIR")
    top_k: int = _opt(10, "how many channels hovering over a channel chart lists: the largest "
                          "s(c) of an image's block, the largest |Δ| of a class's block (every "
                          "channel is drawn whatever K is; default: %(default)s)", "--top-k", "K",
                      1)
    max_figures: int = _opt(MAX_FIGURES, "per-image figures for the first N images; the "
                                         "summaries cover every image (default: %(default)s)",
                            "--max-figures", "N", 0)
    attribution: bool = _opt(False, "also compare a spatial mask with Grad-CAM / integrated "
                                    "gradients / saliency (Captum; slower)", "--attribution")
    amp: bool = _opt(False, "mixed precision (fp16 on CUDA, bf16 on CPU); weights recorded as "
                            "float32", "--amp")
    batch_size: int = _opt(16, f"images per forward pass, at most {MAX_BATCH_SIZE} "
                               "(default: %(default)s)", "--batch-size", "N", 1, MAX_BATCH_SIZE)
    num_workers: int = _opt(0, "DataLoader worker processes reading images, at most the CPU "
                               "count (default: %(default)s)", "--workers", "N", 0)
    threads: int | None = _opt(None, "CPU threads for the model, 1 to 1024 (default: the cores "
                                     "not busy with other work, at least 1)", "--threads", "N",
                               1, 1024)
    notebook: bool = _opt(False, "also run the report notebook (papermill; slower) and keep the "
                                 f"executed {REPORT_NOTEBOOK}: its tables, not the figures",
                          "--notebook")

    def __post_init__(self) -> None:
        for name in ("images", "labels", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):  # from JSON (the notebook's parameters)
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.images, (str, os.PathLike)):
            object.__setattr__(self, "images", (self.images,))

    @classmethod
    def build(cls, images: Any = None, **options: Any) -> ReportParameters:
        """``ReportParameters(images, **options)`` with a ParameterError (one line) for an
        option that does not exist."""
        if isinstance(images, ReportParameters):
            return replace(images, **options) if options else images
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ParameterError(f"unknown report option(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(names))}")
        if images is not None and not isinstance(images, (str, os.PathLike)):
            try:
                images = tuple(images)
            except TypeError:
                raise ParameterError(f"images must be files, folders or glob patterns, got "
                                     f"{images!r}") from None
        return cls(images=images, **options)

    def model_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`attnviz.load_model` (besides name and device)."""
        return {"checkpoint": self.checkpoint, "model_args": self.model_args,
                "input_size": self.input_size, "mean": self.mean, "std": self.std,
                "labels": self.labels}

    def to_json(self) -> dict[str, Any]:
        """The parameters as JSON values (what the notebook receives; a model object is named
        by its class)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.model, nn.Module):
            out["model"] = type(self.model).__name__
        return json.loads(json.dumps(out, default=str))


def _check_images(images: Iterable[Any] | None) -> tuple[str, ...] | None:
    if images is None:
        return None
    items = tuple(check_path_text("image path", p) for p in images)
    if not items:
        raise ParameterError("no images given: pass image files, folders or glob patterns")
    return items


def check_out_text(out_dir: object) -> str:
    """``out_dir`` as text: not empty, no NUL byte, not bytes."""
    text = check_path_text("output folder", out_dir)  # type: ignore[arg-type]
    if not text.strip():
        raise ParameterError("output folder must not be empty (--out ''); name a folder")
    return text


def validate(params: ReportParameters | None = None, *, out: bool = True,
             **options: Any) -> ReportParameters:
    """Check every parameter without building the model or writing anything; returns a
    normalised copy (workers capped at the CPU count, ``out_dir`` absolute). Raises a one-line
    ParameterError / MissingDependencyError naming the problem. ``out=False`` skips the checks
    that only matter for writing a report (output folder, template, Jinja2, papermill)."""
    from ..models import resolve_device
    from .publish import refuse_protected

    p = ReportParameters.build(**options) if params is None else ReportParameters.build(
        params, **options)
    check_int("top_k", p.top_k, 1)
    check_int("max_figures", p.max_figures, 0)
    check_int("batch_size", p.batch_size, 1, MAX_BATCH_SIZE)
    if p.input_size is not None:
        check_input_size(p.input_size)
    workers = cap_workers(p.num_workers)
    if p.threads is not None:
        check_int("threads", p.threads, 1, 1024)
    if not isinstance(p.model, nn.Module) and (not isinstance(p.model, str) or not p.model):
        raise ParameterError(f"model must be a model name or an nn.Module, got {p.model!r}")
    if p.layers is not None and (not isinstance(p.layers, str) or not p.layers):
        raise ParameterError(f"layers must be a non-empty pattern, got {p.layers!r}")
    if not isinstance(p.device, str) or not p.device:
        raise ParameterError(f"device must be a string such as 'auto', 'cpu', 'cuda', "
                             f"got {p.device!r}")
    resolve_device(p.device)
    if p.checkpoint is not None:
        ckpt = check_path_text("checkpoint", p.checkpoint)
        if not Path(ckpt).expanduser().is_file():
            raise ParameterError(f"checkpoint {ckpt!r} is not a file")
    if p.output is not None:
        from ..outputs import OutputSelector

        OutputSelector.parse(p.output)
    if p.attribution:
        require("captum", extra="attribution", feature="attribution")
    p = replace(p, images=_check_images(p.images), num_workers=workers)
    if not out:
        return p
    if p.notebook:
        require("papermill", "nbclient", "ipykernel", extra="lab", feature="--notebook")
    require("jinja2", extra="lab", feature="attnviz report")
    folder = Path(check_out_text(p.out_dir)).expanduser().absolute()
    refuse_protected(folder)
    return replace(p, out_dir=str(folder))


def add_report_arguments(parser: Any, int_type: Callable[..., Callable[[str], int]]) -> None:
    """Add every report option (the fields with a flag) to an argparse ``parser``;
    ``int_type(low, high)`` parses bounded integers."""
    for f in fields(ReportParameters):
        meta = f.metadata
        if not meta.get("flag"):
            continue
        kw: dict[str, Any] = {"help": meta["help"], "default": f.default, "dest": f.name}
        if isinstance(f.default, bool):
            kw["action"] = "store_true"
        else:
            kw["metavar"] = meta["metavar"]
            if meta["low"] is not None:
                kw["type"] = int_type(meta["low"], meta["high"])
        parser.add_argument(meta["flag"], **kw)


def cli_options(args: Any) -> dict[str, Any]:
    """The report options in parsed command-line ``args`` (every field present there, the
    model options of the CLI too), as keyword arguments of :func:`write_report`."""
    values: Mapping[str, Any] = vars(args)
    return {f.name: values[f.name] for f in fields(ReportParameters)
            if f.name != "images" and f.name in values}


__all__ = ["MAX_FIGURES", "ReportParameters", "add_report_arguments", "check_out_text",
           "cli_options", "validate"]

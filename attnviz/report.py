"""Batch attention report: read a set of images, record every attention weight, summarise.

    run = analyse(None, "demo-cbam")      # None: the bundled sample images; ReportData
    run.write_summaries("reports")         # summary.csv, summary.json
    write_report(["photos/"], model="demo-cbam", out_dir="reports")   # + .ipynb, .html

:func:`analyse` is the batch path: a torch ``DataLoader`` reads and resizes the images (an image
that cannot be read becomes an error marker, so it never kills its batch), the model runs on
whole batches inside :func:`attnviz.record`, and every recorded weight is moved to the CPU.
:func:`write_report` validates the parameters, runs the bundled ``report.ipynb`` with papermill
(the notebook calls :func:`analyse` and the figure helpers below) and exports it as one
self-contained HTML file: figures are embedded as data URIs and no script or style is loaded
from a CDN (no MathJax, require.js, Mermaid or widget JavaScript), so it opens offline.

Summary rows (``summary.csv``; one per image and attention layer; empty where not defined):

* all kinds: ``image``, ``layer``, ``kind``, ``mean``, ``min``, ``max``, ``std`` of the weights
  (for radix/paths: of the split-0 weights a_0 over channels).
* ``entropy``: normalised to 0..1 (1 = flat): channel s(c) over channels, spatial/context A over
  cells, radix/paths over the splits (mean over channels).
* channel: ``saturation``, the share of gates below 0.05 or above 0.95.
* spatial/context: ``peak_y``, ``peak_x`` (centre of the strongest cell, 0..1 from top/left) and
  ``share_above_half`` (share of cells with A > 0.5).
* radix/paths: ``mean_a0`` (mean split-0 weight) and ``balance`` = 1 − mean_c TV(a(c), uniform)
  / (1 − 1/R): 1 when every channel splits evenly, 0 when every channel picks one split (for
  R = 2 this is 1 − mean_c |a_0(c) − 1/2|·2).
"""
from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import metrics
from .checks import MAX_BATCH_SIZE, cap_workers, check_int, check_out_dir
from .errors import ImageError, ParameterError, require
from .images import find_images, load_image
from .models import DEMO_MODELS, load_model, resolve_device
from .models.preprocess import class_names, input_spec, model_device, prepare
from .models.registry import is_model
from .record import AttentionRecord, find_attention, record
from .resources import data_dir, notebooks_dir
from .terminal import shown

SUMMARY_FIELDS = (
    "image", "layer", "kind", "mean", "min", "max", "std", "entropy", "saturation",
    "peak_y", "peak_x", "share_above_half", "mean_a0", "balance",
)
_STAT_FIELDS = SUMMARY_FIELDS[3:]
_MAP_KINDS = ("spatial", "context")
_SPLIT_KINDS = ("radix", "paths")


class ReportExecutionError(RuntimeError):
    """The report notebook raised: ``cell_index``, ``ename``, ``evalue`` name the failure and
    ``notebook`` the partly executed copy (with the error in it)."""

    def __init__(self, message: str, *, cell_index: int | None = None, ename: str = "",
                 evalue: str = "", notebook: Path | None = None) -> None:
        super().__init__(message)
        self.cell_index, self.ename, self.evalue = cell_index, ename, evalue
        self.notebook = notebook


# -- reading images --------------------------------------------------------------------------------
def _reason(e: BaseException, path: str) -> str:
    """The reason part of an error message (the path is listed next to it)."""
    text = str(e).strip() or type(e).__name__
    for prefix in (f"cannot read image {path}: ", f"cannot read image {shown(path)}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text if isinstance(e, ImageError) else f"{type(e).__name__}: {text}"


def resize(image: Tensor, size: int) -> Tensor:
    """(3, H, W) → (3, size, size), as :func:`attnviz.models.preprocess.prepare` resizes."""
    if tuple(image.shape[-2:]) == (size, size):
        return image.float()
    return F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                         antialias=True, align_corners=False)[0]


class ImageFiles(Dataset):
    """Image files as ``(index, image, None)`` or, when a file cannot be read,
    ``(index, None, reason)``: a bad file never raises inside a DataLoader worker."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int) -> None:
        self.paths = [str(p) for p in paths]
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str | None]:
        path = self.paths[i]
        try:
            return i, resize(load_image(path), self.size), None
        except Exception as e:  # any failure on one file is reported, not raised
            return i, None, _reason(e, path)


def collate_images(
    items: Sequence[tuple[int, Tensor | None, str | None]],
) -> tuple[list[int], Tensor | None, list[tuple[int, str]]]:
    """Separate good images (stacked) from error markers: ``(indices, batch | None, bad)``."""
    good = [(i, im) for i, im, err in items if err is None and im is not None]
    bad = [(i, err or "unknown error") for i, im, err in items if err is not None or im is None]
    batch = torch.stack([im for _, im in good]) if good else None
    return [i for i, _ in good], batch, bad


# -- the analysis ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image: class index, label, probability, top classes."""

    index: int
    label: str
    prob: float
    top: list[tuple[str, float]]


@dataclass
class ReportData:
    """Everything :func:`analyse` found; tensors are on the CPU, images in model order.

    ``records`` has one :class:`AttentionRecord` per attention layer (model order) whose
    ``value`` holds all good images along the batch axis; ``bad`` lists ``(path, reason)``
    for inputs that could not be read (or matched no image); ``summaries`` the rows of
    ``summary.csv`` (see the module docstring).
    """

    model_name: str
    model: nn.Module
    device: str
    paths: list[str]
    images: Tensor
    logits: Tensor
    predictions: list[Prediction]
    records: list[AttentionRecord]
    bad: list[tuple[str, str]]
    summaries: list[dict[str, Any]]
    seconds: float
    layers: str | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))

    def __len__(self) -> int:
        return len(self.paths)

    def by_kind(self, kind: str) -> dict[str, Tensor]:
        """``{layer: (N, ...)}`` for one kind, in model order."""
        return {r.name: r.value for r in self.records if r.kind == kind}

    @property
    def channel(self) -> dict[str, Tensor]:
        return self.by_kind("channel")

    @property
    def spatial(self) -> dict[str, Tensor]:
        return self.by_kind("spatial")

    @property
    def radix(self) -> dict[str, Tensor]:
        return self.by_kind("radix")

    @property
    def kinds(self) -> list[str]:
        """The attention kinds present, in model order."""
        return list(dict.fromkeys(r.kind for r in self.records))

    def layer_table(self) -> list[dict[str, Any]]:
        """One row per layer: the per-image statistics averaged over the images."""
        out: list[dict[str, Any]] = []
        for r in self.records:
            rows = [s for s in self.summaries if s["layer"] == r.name]
            row: dict[str, Any] = {"layer": r.name, "kind": r.kind,
                                   "shape": "×".join(str(d) for d in r.value.shape[1:])}
            for f in _STAT_FIELDS:
                vals = [s[f] for s in rows if s.get(f) is not None]
                row[f] = sum(vals) / len(vals) if vals else None
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "device": self.device,
            "layers": self.layers,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "n_images": len(self.paths),
            "n_could_not_read": len(self.bad),
            "predictions": [
                {"image": p, "class_index": q.index, "label": q.label, "prob": q.prob,
                 "top": [{"label": n, "prob": v} for n, v in q.top]}
                for p, q in zip(self.paths, self.predictions, strict=True)
            ],
            "could_not_read": [{"image": p, "reason": r} for p, r in self.bad],
            "layers_summary": self.layer_table(),
            "rows": self.summaries,
        }

    def write_summaries(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``summary.csv`` (one row per image and layer) and ``summary.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = out / "summary.csv", out / "summary.json"
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
            w.writeheader()
            for row in self.summaries:
                w.writerow({k: ("" if row.get(k) is None else row[k]) for k in SUMMARY_FIELDS})
        json_path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return csv_path, json_path


def layer_stats(kind: str, value: Tensor) -> dict[str, list[float | None]]:
    """Per-image statistics of one layer's weights ``(N, ...)``: ``{field: [N values]}``."""
    v = value.detach().float().cpu()
    n = v.shape[0]
    stats: dict[str, Tensor] = {}
    if kind in _SPLIT_KINDS and v.ndim == 3:
        r = v.shape[1]
        a0 = v[:, 0]
        stats.update(mean=a0.mean(1), min=a0.amin(1), max=a0.amax(1), std=a0.std(1, correction=0),
                     mean_a0=a0.mean(1), entropy=metrics.entropy(v, 1, normalized=True).mean(1))
        if r > 1:
            tv = 0.5 * (v - 1.0 / r).abs().sum(1)  # (N, C): distance from the uniform split
            stats["balance"] = 1.0 - tv.mean(1) / (1.0 - 1.0 / r)
    else:
        flat = v.reshape(n, -1)
        stats.update(mean=flat.mean(1), min=flat.amin(1), max=flat.amax(1),
                     std=flat.std(1, correction=0),
                     entropy=metrics.entropy(flat, 1, normalized=True))
        if kind == "channel":
            stats["saturation"] = metrics.saturation(flat)
        elif kind in _MAP_KINDS and v.ndim == 3:
            h, w = v.shape[1:]
            peak = flat.argmax(1)
            stats["peak_y"] = ((peak // w).float() + 0.5) / h
            stats["peak_x"] = ((peak % w).float() + 0.5) / w
            stats["share_above_half"] = (flat > 0.5).float().mean(1)
    out: dict[str, list[float | None]] = {f: [None] * n for f in _STAT_FIELDS}
    for k, t in stats.items():
        out[k] = [float(x) for x in t.tolist()]
    return out


def summarise(paths: Sequence[str], records: Sequence[AttentionRecord]) -> list[dict[str, Any]]:
    """Rows ``{image, layer, kind, stats...}``: image-major, layers in model order."""
    per_layer = [(r, layer_stats(r.kind, r.value)) for r in records]
    rows = []
    for i, p in enumerate(paths):
        for r, stats in per_layer:
            rows.append({"image": p, "layer": r.name, "kind": r.kind,
                         **{f: stats[f][i] for f in _STAT_FIELDS}})
    return rows


def _as_inputs(images: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[str]:
    if images is None:  # the bundled sample images
        images = [data_dir() / "images"]
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    try:
        items = [os.fspath(x) for x in images]
    except TypeError:
        raise ParameterError(
            f"images must be files, folders or glob patterns, got {images!r}") from None
    if not items:
        raise ParameterError("no images given: pass image files, folders or glob patterns")
    return items


def collect_images(
    images: str | os.PathLike | Iterable[str | os.PathLike],
) -> tuple[list[str], list[tuple[str, str]]]:
    """``(paths, missed)`` for files/folders/globs; ParameterError when nothing matched at all."""
    inputs = _as_inputs(images)
    paths, missed = find_images(inputs)
    if not paths:
        detail = "; ".join(f"{i or repr(i)}: {why}" for i, why in missed)
        raise ParameterError(f"no images found in {', '.join(map(repr, inputs))} ({detail})")
    return [str(p) for p in paths], [(str(i), why) for i, why in missed]


def _load(model: str | nn.Module, checkpoint: str | os.PathLike | None,
          device: str | torch.device) -> tuple[nn.Module, str]:
    if isinstance(model, nn.Module):
        dev = resolve_device(device) if str(device) != "auto" else None
        return (model.to(dev) if dev is not None else model).eval(), type(model).__name__
    if not isinstance(model, str) or not model:
        raise ParameterError(f"model must be a model name or an nn.Module, got {model!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ParameterError(f"checkpoint {os.fspath(checkpoint)!r} is not a file")
    # A timm name without a checkpoint means its ImageNet weights: a report of random weights
    # would show nothing. attnviz architecture names without a checkpoint stay random init.
    pretrained = checkpoint is None and model not in DEMO_MODELS and not is_model(model)
    return load_model(model, pretrained=pretrained, checkpoint=checkpoint, device=device), model


def image_progress(total: int, desc: str, disable: bool = False):
    """A tqdm bar over images on the process's original stderr. Inside the report notebook that
    is the terminal running ``attnviz report`` (the kernel inherits it), so the bar shows
    there and stays out of the saved notebook and HTML."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, disable=disable, leave=False,
                file=sys.__stderr__, dynamic_ncols=True)


def analyse(
    images: str | os.PathLike | Iterable[str | os.PathLike] | None,
    model: str | nn.Module = "demo-cbam",
    checkpoint: str | os.PathLike | None = None,
    layers: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    num_workers: int = 0,
    top_k: int = 10,
    progress: bool = True,
    amp: bool = False,
) -> ReportData:
    """Run ``model`` over the images in batches and record every attention weight.

    Args:
        images: image files, folders (their image files) or glob patterns; None: the bundled
            sample images.
        model: a demo name (``"demo-cbam"``), an attnviz or timm model name, or a model.
        checkpoint: local weights for the architecture ``model`` names.
        layers: only attention modules whose name matches this pattern (``"layer3*"``).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:0"``, ...
        batch_size, num_workers: of the DataLoader that reads the images.
        top_k: kept for the report (how many top channels/classes it shows); checked here.
        progress: show a tqdm progress bar over the images.
        amp: mixed precision (fp16 autocast on CUDA, bf16 on CPU); the recorded weights stay
            float32. On CUDA the model and batches also use channels_last.

    Files that cannot be read are listed in ``bad`` with the reason, never raised.
    Raises ParameterError / ModelError / NoAttentionError for bad parameters.
    """
    t0 = time.perf_counter()
    check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    num_workers = cap_workers(num_workers)
    check_int("top_k", top_k, 1)
    paths, missed = collect_images(images)
    net, model_name = _load(model, checkpoint, device)
    dev = model_device(net)
    size = input_spec(net).size
    channels_last = dev.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    loader = DataLoader(
        ImageFiles(paths, size), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate_images, pin_memory=dev.type == "cuda",
    )
    good: list[int] = []
    bad_idx: list[tuple[int, str]] = []
    images_out: list[Tensor] = []
    logits_out: list[Tensor] = []
    chunks: dict[tuple[str, str], list[Tensor]] = {}
    first: dict[tuple[str, str], AttentionRecord] = {}
    bar = image_progress(len(paths), "attention", disable=not progress)
    try:
        # record() checks the layer pattern (NoAttentionError) before any image is read
        with torch.no_grad(), record(net, layers=layers) as rec:
            for idx, batch, bad in loader:
                bad_idx.extend(bad)
                if batch is not None:
                    x = prepare(net, batch)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                        logits = net(x)
                    for r in rec.latest():
                        first.setdefault((r.key, r.kind), r)
                        chunks.setdefault((r.key, r.kind), []).append(r.value.cpu())
                    rec.clear()
                    logits_out.append(logits.float().cpu())
                    images_out.append(batch.cpu())
                    good.extend(idx)
                bar.update(len(idx) + len(bad))
    finally:
        bar.close()
    records = [replace(first[n], value=torch.cat(chunks[n]), call=0)
               for n in sorted(first, key=lambda n: first[n].order)]
    good_paths = [paths[i] for i in good]
    logits_all = torch.cat(logits_out) if logits_out else torch.zeros(0, 0)
    imgs = torch.cat(images_out) if images_out else torch.zeros(0, 3, size, size)
    return ReportData(
        model_name=model_name, model=net, device=str(dev), paths=good_paths, images=imgs,
        logits=logits_all, predictions=_predictions(net, logits_all), records=records,
        bad=[(paths[i], why) for i, why in bad_idx] + missed,
        summaries=summarise(good_paths, records), seconds=time.perf_counter() - t0,
        layers=layers,
    )


def _predictions(model: nn.Module, logits: Tensor, k: int = 3) -> list[Prediction]:
    if logits.numel() == 0:
        return []
    names = class_names(model) or [f"class {i}" for i in range(logits.shape[1])]
    probs = logits.softmax(1)
    top = probs.topk(min(k, probs.shape[1]), 1)
    out = []
    for vals, idx in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        label = names[idx[0]] if idx[0] < len(names) else f"class {idx[0]}"
        out.append(Prediction(idx[0], label, vals[0],
                              [(names[j] if j < len(names) else f"class {j}", v)
                               for j, v in zip(idx, vals, strict=True)]))
    return out


# -- pieces the notebook displays ------------------------------------------------------------------
def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return _e(v)


def html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain HTML table of dict rows (floats to 3 decimals, empty cells for None)."""
    if not rows:
        return "<p><i>(no rows)</i></p>"
    cols = list(columns or rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return (f'<table class="attnviz-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def header_html(run: ReportData) -> str:
    """Title block: model, device, images, layers, time."""
    import attnviz

    counts: dict[str, int] = {}
    for r in run.records:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    kinds = ", ".join(f"{n} {k}" for k, n in counts.items()) or "none recorded"
    size = input_spec(run.model).size
    items = [
        ("model", run.model_name), ("device", run.device),
        ("images", f"{len(run)} analysed, {len(run.bad)} could not be read"),
        ("attention layers", kinds + (f" (pattern {run.layers!r})" if run.layers else "")),
        ("input size", f"{size}×{size}"),
        ("created", f"{run.created}, analysis {run.seconds:.1f} s"),
        ("versions", f"attnviz {attnviz.__version__}, torch {torch.__version__}"),
    ]
    rows = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td style='text-align:left'>"
                   f"{_e(v)}</td></tr>" for k, v in items)
    note = ""
    if run.model_name in DEMO_MODELS:
        note = (
            "<p style='border-left:4px solid #c80;padding:4px 8px'><b>Demo model.</b> "
            f"{_e(run.model_name)} was trained offline on generated shapes (64 px, classes "
            f"{_e(', '.join(getattr(run.model, 'class_names', [])))}); its attention is "
            "meaningful on the <code>shapes_*</code> images. Photos are out of distribution for "
            "it: their predictions and masks show what this small model does with unfamiliar "
            "input, not what an ImageNet model would attend to. For photos, run online with "
            "<code>--model resnest50d</code> (timm, ImageNet weights) or pass a checkpoint.</p>"
        )
    return f"<table>{rows}</table>{note}"


def bad_html(run: ReportData) -> str:
    """The "could not read" section: each bad input with its reason."""
    if not run.bad:
        return "<h2>Could not read</h2><p>Every image was read.</p>"
    items = "".join(f"<li><code>{_e(p)}</code>: {_e(why)}</li>" for p, why in run.bad)
    return (f'<h2>Could not read</h2><div class="attnviz-bad"><p>{len(run.bad)} input(s) were '
            f"skipped:</p><ul>{items}</ul></div>")


def image_heading_html(run: ReportData, i: int) -> str:
    p = run.predictions[i]
    top = ", ".join(f"{_e(n)} {v:.1%}" for n, v in p.top)
    return (f"<h3>{i + 1}. <code>{_e(run.paths[i])}</code></h3>"
            f"<p>prediction: <b>{_e(p.label)}</b> ({p.prob:.1%}); top: {top}</p>")


def channel_topk_figure(channel: dict[str, Tensor], index: int, top_k: int, ncols: int = 4):
    """The ``top_k`` largest s(c) of every block for one image (channel indices on the axis).

    Fixed 0–1 axis; laid out by hand (no constrained layout, ~3× faster to render)."""
    from matplotlib.figure import Figure

    from . import plot

    names = list(channel)
    ncols = max(1, min(ncols, len(names)))
    nrows = math.ceil(len(names) / ncols)
    height = 1.9 * nrows + 0.5
    fig = Figure(figsize=(3.0 * ncols, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.5 / height, bottom=0.35 / height,
                        wspace=0.08, hspace=0.6)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(names):
            ax.set_visible(False)
            continue
        w = channel[names[k]][index].float().numpy()
        plot.draw_channel_bars(ax, w, top_k=min(top_k, len(w)))
        ax.set_title(f"{plot.short_name(names[k])}  mean {w.mean():.2f}", fontsize=8)
        ax.set_xlabel("")
        ax.set_ylabel("s(c)" if k % ncols == 0 else "")
    fig.suptitle(f"channel weights s(c): the top {top_k} channels of each block "
                 "(channel index under each bar)", fontsize=10)
    return fig


def image_figures(run: ReportData, i: int, top_k: int = 10) -> list:
    """The figures of image ``i``: spatial masks (fixed 0–1), top-k channel bars, radix."""
    from . import plot

    figs = []
    spatial = run.spatial
    if spatial:
        figs.append(plot.spatial_grid(run.images[i], spatial, index=i))
    context = run.by_kind("context")
    if context:
        figs.append(plot.spatial_grid(run.images[i], context, index=i, stretch=True))
    channel = run.channel
    if channel:
        figs.append(channel_topk_figure(channel, i, top_k))
    radix = run.radix or run.by_kind("paths")
    if radix:
        name = list(radix)[-1]
        figs.append(plot.radix_heatmap(radix[name], index=i,
                                       title=f"{plot.short_name(name)}: split weights a_r(c)"))
    return figs


def summary_figures(run: ReportData) -> list:
    """Figures over all images (radix split means)."""
    from . import plot

    figs = []
    radix = run.radix or run.by_kind("paths")
    if radix and len(run):
        figs.append(plot.radix_split_means(radix))
    return figs


def predictions_html(run: ReportData) -> str:
    rows = [{"#": i + 1, "image": p, "prediction": q.label, "prob": q.prob}
            for i, (p, q) in enumerate(zip(run.paths, run.predictions, strict=True))]
    return html_table(rows)


def layers_html(run: ReportData) -> str:
    """Per-layer table (statistics averaged over images); columns without values are dropped."""
    rows = run.layer_table()
    cols = ["layer", "kind", "shape"] + [f for f in _STAT_FIELDS
                                         if any(r.get(f) is not None for r in rows)]
    return html_table(rows, cols)


def _attribution_layer(spatial: dict[str, Tensor]) -> str:
    """The deepest spatial mask with at least 7×7 cells (else the largest grid)."""
    names = list(spatial)
    fine = [n for n in names if min(spatial[n].shape[-2:]) >= 7]
    if fine:
        return fine[-1]
    return max(names, key=lambda n: spatial[n].shape[-2] * spatial[n].shape[-1])


def attribution_section(run: ReportData, max_images: int = 8,
                        methods: Sequence[str] = ("gradcam", "ig", "saliency")) -> list:
    """HTML and figures comparing one spatial mask with attribution maps (Captum).

    Returns a list of things to ``display``; a model without a spatial mask gets one message.
    """
    from IPython.display import HTML

    out: list = [HTML("<h2>Attention vs attribution</h2>")]
    spatial = run.spatial
    if not len(run):
        out.append(HTML("<p>No image could be read: nothing to attribute.</p>"))
        return out
    if not spatial:
        out.append(HTML(
            f"<p><b>Attribution skipped:</b> {_e(run.model_name)} has no spatial attention mask "
            f"(recorded kinds: {_e(', '.join(run.kinds) or 'none')}). The comparison needs a "
            "spatial mask A to set against Grad-CAM / integrated gradients.</p>"))
        return out
    try:
        from . import attribution
        from .attribution_plots import plot_attention_vs_attribution
    except ImportError as e:
        out.append(HTML(f"<p><b>Attribution skipped:</b> {_e(e)}</p>"))
        return out
    name = _attribution_layer(spatial)
    n = min(max_images, len(run))
    x = prepare(run.model, run.images[:n])
    maps = attribution.attribute(run.model, x, methods=methods, mask_layer=name)
    mask = spatial[name][:n]
    rows = []
    for m, a in maps.items():
        agree = attribution.agreement(mask, a)
        rows.append({"method": m, **{k: float(v.mean()) for k, v in agree.items()}})
    out.append(HTML(f"<p>Mask <code>{_e(name)}</code> on the first {n} image(s), against "
                    f"{', '.join(maps)} (maps normalised to their own maximum). Agreement, mean "
                    f"over images:</p>" + html_table(rows)))
    for i in range(n):
        out.append(plot_attention_vs_attribution(
            run.images[i], mask[i], {m: a[i] for m, a in maps.items()},
            title=f"{run.paths[i]}: {name}"))
    return out


# -- the full report -------------------------------------------------------------------------------
def default_notebook() -> Path:
    """The bundled ``report.ipynb``."""
    return notebooks_dir() / "report.ipynb"


@dataclass(frozen=True)
class ReportParameters:
    """Validated parameters, as the notebook receives them."""

    images: list[str]
    model: str
    checkpoint: str | None
    layers: str | None
    device: str
    out_dir: str
    top_k: int
    attribution: bool
    batch_size: int
    num_workers: int
    n_images: int
    missed: list[tuple[str, str]]
    amp: bool = False

    def notebook_parameters(self) -> dict[str, Any]:
        return {"images": self.images, "model": self.model, "checkpoint": self.checkpoint,
                "layers": self.layers, "device": self.device, "out_dir": self.out_dir,
                "top_k": self.top_k, "attribution": self.attribution,
                "batch_size": self.batch_size, "num_workers": self.num_workers, "amp": self.amp}


def validate(
    images: str | os.PathLike | Iterable[str | os.PathLike],
    model: str = "demo-cbam",
    out_dir: str | os.PathLike = "reports",
    checkpoint: str | os.PathLike | None = None,
    layers: str | None = None,
    device: str = "auto",
    top_k: int = 10,
    attribution: bool = False,
    batch_size: int = 16,
    num_workers: int = 0,
    amp: bool = False,
) -> ReportParameters:
    """Check every report parameter (the model is built once, on the CPU) and raise a readable
    ParameterError / ModelError / CheckpointError / NoAttentionError naming the problem."""
    check_int("top_k", top_k, 1)
    check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    num_workers = cap_workers(num_workers)
    if not isinstance(model, str) or not model:
        raise ParameterError(f"model must be a model name, got {model!r}")
    if layers is not None and (not isinstance(layers, str) or not layers):
        raise ParameterError(f"layers must be a non-empty pattern, got {layers!r}")
    if not isinstance(device, str) or not device:
        raise ParameterError(f"device must be a string such as 'auto', 'cpu', 'cuda', "
                             f"got {device!r}")
    resolve_device(device)
    if attribution:
        require("captum", extra="attribution", feature="attribution")
    paths, missed = collect_images(images)
    net, _ = _load(model, checkpoint, "cpu")
    size = input_spec(net).size  # one watched pass finds hand-written attention too
    find_attention(net.eval(), torch.zeros(1, 3, size, size), layers=layers)
    out = check_out_dir(out_dir)
    return ReportParameters(
        images=_as_inputs(images), model=model,
        checkpoint=None if checkpoint is None else os.fspath(checkpoint),
        layers=layers, device=device, out_dir=os.fspath(out.resolve()), top_k=top_k,
        attribution=bool(attribution), batch_size=batch_size, num_workers=num_workers,
        amp=bool(amp),
        n_images=len(paths), missed=missed,
    )


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any],
                     cwd: str | os.PathLike | None = None, timeout: float | None = None) -> None:
    """Run ``notebook`` with papermill (kernel ``python3`` over IPC sockets in a temporary
    folder); a failing cell raises :class:`ReportExecutionError`."""
    import papermill as pm
    from jupyter_client.manager import AsyncKernelManager

    with tempfile.TemporaryDirectory(prefix="attnviz-kernel-") as tmp:

        class IPCKernelManager(AsyncKernelManager):
            # IPC sockets in a private folder: no open TCP ports, and no warning from ipykernel
            # about unencrypted TCP. nbclient creates, owns and shuts down the kernel.
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(transport="ipc", ip=os.path.join(tmp, "kernel"), **kwargs)

        try:
            pm.execute_notebook(
                str(notebook), str(output), parameters=parameters, kernel_name="python3",
                progress_bar=False, log_output=False, cwd=str(cwd or os.getcwd()),
                execution_timeout=timeout, kernel_manager_class=IPCKernelManager,
                # fd-level stderr (the progress bars of image_progress) goes to the terminal
                # running the report, not into the saved notebook
                extra_arguments=["--IPKernelApp.capture_fd_output=False"],
            )
        except pm.PapermillExecutionError as e:
            raise ReportExecutionError(
                f"report notebook failed in cell {e.cell_index} ({e.ename}: {e.evalue}); "
                f"the partial notebook is {output}",
                cell_index=e.cell_index, ename=e.ename, evalue=e.evalue, notebook=output,
            ) from None


_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js %}{% endblock html_head_js %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block extra_css %}
<style type="text/css">
.attnviz-table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
.attnviz-table th, .attnviz-table td { border: 1px solid #ccc; padding: 2px 6px; }
.attnviz-table td { text-align: right; }
.attnviz-bad { background: #fff4e5; border-left: 4px solid #f0a020; padding: 4px 10px; }
</style>
{% endblock extra_css %}
"""

_EXTERNAL = re.compile(
    r"<(script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>"
    r"(?:\s*</script>)?", re.I)


def external_resources(page: str) -> list[str]:
    """Tags in ``page`` that would load a script, style, image or frame from the network."""
    return [m.group(0) for m in _EXTERNAL.finditer(page)]


def export_html(notebook: Path, output: Path, title: str | None = None) -> Path:
    """Self-contained HTML of an executed notebook: no code cells, figures as data URIs,
    nothing loaded from a CDN."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab", template_file="attnviz_report.html.j2",
        extra_loaders=[DictLoader({"attnviz_report.html.j2": _TEMPLATE})],
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
        mathjax_url="", require_js_url="",
    )
    page, _ = exporter.from_notebook_node(nb)
    for tag in external_resources(page):  # belt and braces: nothing from the network
        page = page.replace(tag, "")
    output.write_text(page, encoding="utf-8")
    return output


def write_report(
    images: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    notebook: str | os.PathLike | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> Path:
    """Validate, run the report notebook, export HTML; returns ``out_dir/report.html``.

    ``options`` are the report parameters of :func:`validate` (``model``, ``out_dir``,
    ``checkpoint``, ``layers``, ``device``, ``top_k``, ``attribution``, ``batch_size``,
    ``num_workers``). Writes ``report.html``, ``report.ipynb`` (executed), ``summary.csv``,
    ``summary.json``. Raises ParameterError / ModelError / NoAttentionError before running
    anything, and :class:`ReportExecutionError` when a notebook cell fails. ``log`` receives
    progress lines.
    """
    require("papermill", "nbconvert", "nbclient", "ipykernel", extra="lab",
            feature="the report notebook")
    try:
        params = validate(images, **options)
    except TypeError as e:  # an unknown option name
        raise ParameterError(str(e)) from None
    if log is not None:
        log(f"{params.n_images} image file(s), model {params.model}, device "
            f"{resolve_device(params.device)}; running the report notebook ...")
    nb_in = Path(notebook) if notebook is not None else default_notebook()
    if not nb_in.is_file():
        raise ParameterError(f"report notebook {os.fspath(nb_in)!r} not found")
    out = Path(params.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nb_out = out / "report.ipynb"
    execute_notebook(nb_in, nb_out, params.notebook_parameters(), timeout=timeout)
    return export_html(nb_out, out / "report.html", title=f"attnviz report: {params.model}")


def read_summary(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``summary.json`` a report wrote (``{}`` when missing)."""
    path = Path(out_dir) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


__all__ = [
    "SUMMARY_FIELDS",
    "ImageFiles",
    "Prediction",
    "ReportData",
    "ReportExecutionError",
    "ReportParameters",
    "analyse",
    "attribution_section",
    "collate_images",
    "export_html",
    "external_resources",
    "read_summary",
    "summarise",
    "validate",
    "write_report",
]

"""The report's batch analysis: read the images, run the model once over them inside
:func:`attnviz.record`, and keep per-image summaries of every attention layer.

    run = analyse(None, "demo-cbam")            # None: the bundled sample images
    run.summaries                                # one row per image and layer (see .stats)

A torch ``DataLoader`` reads and resizes the images (a file that cannot be read becomes an error
marker, so it never kills its batch; with ``num_workers=0``, when torch leaves a CPU free, a
reader thread decodes the next batch while the model runs). Summaries are computed batch by
batch, so memory does not grow with the number of images beyond ``keep``: the images and
attention weights held for figures.
"""

from __future__ import annotations

import datetime as _dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..checks import check_images_memory, check_input_size, cpu_count
from ..models import DEMO_MODELS, load_model
from ..models.preprocess import (
    check_class_names,
    class_names,
    input_spec,
    model_device,
    prepare,
)
from ..models.registry import is_model
from ..models.user import is_user_spec
from ..record import AttentionRecord, find_attention, record
from .collect import Collector
from .inputs import ImageFiles, collate_images, collect_images, prefetch
from .params import ReportParameters, validate
from .stats import STAT_FIELDS


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image: class index, label, probability, top classes
    (index -1, probability None when the logits are not finite)."""

    index: int
    label: str
    prob: float | None
    top: list[tuple[str, float]]


@dataclass
class ReportData:
    """Everything :func:`analyse` found; tensors are on the CPU, images in model order.

    ``paths``, ``logits``, ``predictions`` and ``summaries`` cover every image read;
    ``images`` and ``records`` (one :class:`AttentionRecord` per layer, keyed by
    ``(record.key, record.kind)``) only the first ``keep`` of them. ``layers_found`` describes
    every recorded layer; ``bad`` lists ``(path, reason)`` for inputs that could not be read;
    ``non_finite`` where NaN or infinite values appeared (logits or attention weights).
    """

    model_name: str
    model: nn.Module
    device: str
    paths: list[str]
    images: Tensor
    logits: Tensor
    predictions: list[Prediction]
    records: list[AttentionRecord]
    layers_found: list[dict[str, Any]]
    bad: list[tuple[str, str]]
    summaries: list[dict[str, Any]]
    non_finite: list[dict[str, Any]]
    split_means: dict[str, list[tuple[float, float]]]
    seconds: float
    layers: str | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def __len__(self) -> int:
        return len(self.paths)

    def by_kind(self, kind: str) -> dict[str, Tensor]:
        """``{layer key: (keep, ...)}`` for one kind, in model order."""
        return {r.key: r.value for r in self.records if r.kind == kind}

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
        return list(dict.fromkeys(info["kind"] for info in self.layers_found))

    def layer_table(self) -> list[dict[str, Any]]:
        """One row per layer: the per-image statistics averaged over every image."""
        sums: dict[tuple[str, str], dict[str, list[float]]] = {}
        for s in self.summaries:
            acc = sums.setdefault((s["layer"], s["kind"]), {})
            for f in STAT_FIELDS:
                if s.get(f) is not None:
                    acc.setdefault(f, []).append(s[f])
        out = []
        for info in self.layers_found:
            acc = sums.get((info["layer"], info["kind"]), {})
            out.append({**info, **{f: (sum(v) / len(v) if (v := acc.get(f)) else None)
                                   for f in STAT_FIELDS}})
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything ``summary.json`` holds (NaN / infinite values become null on writing)."""
        return {
            "run_id": self.run_id,
            "model": self.model_name,
            "device": self.device,
            "layers": self.layers,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "n_images": len(self.paths),
            "n_could_not_read": len(self.bad),
            "non_finite": self.non_finite,
            "predictions": [
                {"image": p, "class_index": q.index, "label": q.label, "prob": q.prob,
                 "top": [{"label": n, "prob": v} for n, v in q.top]}
                for p, q in zip(self.paths, self.predictions, strict=True)
            ],
            "could_not_read": [{"image": p, "reason": r} for p, r in self.bad],
            "layers_summary": self.layer_table(),
            "rows": self.summaries,
        }

    def write_summaries(self, out_dir: str) -> tuple[Any, Any]:
        """Write ``summary.csv`` and ``summary.json`` into ``out_dir`` (see :mod:`.files`)."""
        from .files import write_summaries

        return write_summaries(self, out_dir)


def predictions(model: nn.Module, logits: Tensor, k: int = 3) -> list[Prediction]:
    """Top-``k`` predictions per row of ``logits`` (non-finite rows: index -1)."""
    if logits.numel() == 0:
        return []
    names = class_names(model) or []

    def name(j: int) -> str:
        return names[j] if j < len(names) else f"class {j}"

    probs = logits.float().softmax(1)
    top = probs.topk(min(k, probs.shape[1]), 1)
    finite = torch.isfinite(logits).all(1).tolist()
    out = []
    for ok, vals, idx in zip(finite, top.values.tolist(), top.indices.tolist(), strict=True):
        if not ok:
            out.append(Prediction(-1, "not finite (NaN/Inf logits)", None, []))
            continue
        out.append(Prediction(idx[0], name(idx[0]), vals[0],
                              [(name(j), v) for j, v in zip(idx, vals, strict=True)]))
    return out


def load_report_model(params: ReportParameters) -> tuple[nn.Module, str]:
    """Build (or move) the model once, in eval mode on its device, and check with one watched
    forward pass of a blank image that it has attention (matching ``params.layers``)."""
    model, dev_text = params.model, params.device
    if isinstance(model, nn.Module):
        from ..models import resolve_device

        net = model if dev_text == "auto" else model.to(resolve_device(dev_text))
        name = type(model).__name__
    else:
        # A timm name without a checkpoint means its ImageNet weights: a report of random
        # weights would show nothing. attnviz architectures and your own models stay as built.
        pretrained = (params.checkpoint is None and model not in DEMO_MODELS
                      and not is_model(model) and not is_user_spec(model))
        net = load_model(model, pretrained=pretrained, device=dev_text, **params.model_options())
        name = model
    net.eval()
    size = input_spec(net).size
    find_attention(net, torch.zeros(1, 3, size, size, device=model_device(net)),
                   layers=params.layers)
    return net, name


def image_progress(total: int, desc: str, disable: bool = False) -> Any:
    """A tqdm bar over images on the process's original stderr (the terminal running
    ``attnviz report``, also from inside the report notebook's kernel)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, disable=disable, leave=False,
                file=sys.__stderr__, dynamic_ncols=True)


def _read_ahead(params: ReportParameters) -> bool:
    """Decode the next batch in a reader thread while the model runs? Only without DataLoader
    workers and when torch leaves a CPU free (a reader competing with every intra-op thread
    slows the forward pass more than it saves)."""
    return params.num_workers == 0 and torch.get_num_threads() < cpu_count()


def analyse(
    images: Any = None,
    model: str | nn.Module | None = None,
    *,
    net: nn.Module | None = None,
    keep: int | None = None,
    progress: bool = True,
    found: tuple[Sequence[str], Sequence[tuple[str, str]]] | None = None,
    **options: Any,
) -> ReportData:
    """Run the model over the images in batches and record every attention weight.

    ``images`` is a :class:`ReportParameters` or the images (files, folders, glob patterns;
    None: the bundled samples) with the other parameters as keywords (``model``, ``layers``,
    ``device``, ``batch_size``, ``num_workers``, ``amp``, ...). ``net``: the model
    ``params.model`` names, already built by :func:`load_report_model`. ``keep``: how many
    images (and their attention weights) to keep for figures (None: all). ``found``: the
    ``(paths, missed)`` of :func:`collect_images`, when already known.

    Files that cannot be read are listed in ``bad`` with the reason, never raised. Raises
    ParameterError / ModelError / NoAttentionError for bad parameters.
    """
    t0 = time.perf_counter()
    params = ReportParameters.build(images, **({"model": model} if model is not None else {}),
                                    **options)
    params = validate(params, out=False)
    paths, missed = found if found is not None else collect_images(params.images)
    paths = list(paths)
    if net is None:
        net, name = load_report_model(params)
    else:
        name = params.model if isinstance(params.model, str) else type(net).__name__
    dev = model_device(net)
    size = input_spec(net).size
    batch = min(params.batch_size, max(1, len(paths)))
    check_images_memory(f"--batch-size {batch}", batch, check_input_size(size))
    channels_last = dev.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    loader = DataLoader(
        ImageFiles(paths, size), batch_size=params.batch_size, shuffle=False,
        num_workers=params.num_workers, collate_fn=collate_images, pin_memory=channels_last,
    )
    col = Collector(paths, len(paths) if keep is None else keep)
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    bar = image_progress(len(paths), "attention", disable=not progress)
    try:
        # record() checks the layer pattern (NoAttentionError) before any image is read
        with torch.no_grad(), record(net, layers=params.layers) as rec:
            for idx, batch, bad in (prefetch(loader) if _read_ahead(params) else loader):
                if batch is not None:
                    x = prepare(net, batch)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(dev.type, dtype=amp_dtype, enabled=params.amp):
                        logits = net(x)
                    if not col.good_paths:  # the first batch: names must fit the outputs
                        check_class_names(net, int(logits.shape[-1]))
                    col.add(idx, batch, logits.float().cpu(), rec.latest())
                    rec.clear()
                col.add_bad(bad)
                bar.update(len(idx) + len(bad))
        col.flush()
    finally:
        bar.close()
    logits_all = col.logits()
    return ReportData(
        model_name=name, model=net, device=str(dev), paths=col.good_paths,
        images=col.images(size), logits=logits_all, predictions=predictions(net, logits_all),
        records=[replace(r, call=0) for r in col.records()], layers_found=col.layers_found,
        bad=col.bad + [(str(i), why) for i, why in missed], summaries=col.summaries,
        non_finite=col.non_finite(), split_means=col.splits.table(),
        seconds=time.perf_counter() - t0, layers=params.layers,
    )


__all__ = ["Prediction", "ReportData", "analyse", "image_progress", "load_report_model",
           "predictions"]

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
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from .. import threads
from ..checks import check_images_memory, check_input_size, cpu_count
from ..engine import forward, load_for_run, probe, random_weights_note
from ..engine.sources import Source
from ..models.preprocess import (
    check_class_names,
    class_names,
    input_spec,
    model_device,
    normalize,
)
from ..outputs import CLASSIFIER, NO_PREDICTION, NONE, OutputSelector, top_classes
from ..record import AttentionRecord, record
from .classes import RULE, predicted_classes
from .collect import Collector
from .inputs import batches, open_images, prefetch
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
    ``logits`` are the per-image scores of :meth:`attnviz.outputs.Output.image_scores`
    ((N, classes): a classifier's logits, a dense prediction's class shares; (N, 0) when the
    model makes no class prediction, ``output_kind`` ``"none"``). ``random_weights``: the
    banner when the model's weights are those of its initialisation.
    ``images`` and ``records`` (one :class:`AttentionRecord` per layer, keyed by
    ``(record.key, record.kind)``) only the first ``keep`` of them. ``layers_found`` describes
    every recorded layer; ``bad`` lists ``(path, reason)`` for inputs that could not be read;
    ``non_finite`` where NaN or infinite values appeared (logits or attention weights);
    ``class_channels`` how each predicted class's channel weights deviate from the mean over all
    images (:meth:`.classes.ClassChannels.deviations`, every image counted).
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
    class_channels: list[dict[str, Any]] = field(default_factory=list)
    layers: str | None = None
    output_kind: str = CLASSIFIER
    predicted_maps: Tensor | None = None
    masks: dict[int, Tensor] = field(default_factory=dict)  # ground truth of kept images
    figures_limited: bool = False  # fewer figures than asked: the kept weights' memory bound
    output: Any = None  # the --output selector (attribution targets use it too)
    output_source: str = "output"
    random_weights: str | None = None
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
        """One row per layer: the per-image statistics averaged over every image (computed
        once: the page and ``summary.json`` both show it)."""
        cached = self.__dict__.get("_layer_table")
        if cached is None:
            cached = self.__dict__["_layer_table"] = self._layer_table()
        return cached

    def _layer_table(self) -> list[dict[str, Any]]:
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
            "output": {"kind": self.output_kind, "source": self.output_source},
            "random_weights": self.random_weights is not None,
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
            "class_channels": {"rule": RULE, "blocks": self.class_channels},
            "rows": self.summaries,
        }


def predictions(model: nn.Module, logits: Tensor, k: int = 3,
                kind: str = CLASSIFIER) -> list[Prediction]:
    """Top-``k`` predictions per row of the per-image scores ``logits`` (see
    :func:`attnviz.outputs.top_classes`); non-finite rows: index -1; ``kind`` ``"none"``: no
    class prediction."""
    if kind == NONE:
        return [Prediction(-1, NO_PREDICTION, None, []) for _ in range(logits.shape[0])]
    names = class_names(model)
    out = []
    for index, top in zip(predicted_classes(logits).tolist(),
                          top_classes(logits, kind, names, k), strict=True):
        if not top:
            out.append(Prediction(-1, "not finite (NaN/Inf logits)", None, []))
            continue
        out.append(Prediction(index, top[0][0], top[0][1], top))
    return out


def load_report_model(params: ReportParameters) -> tuple[nn.Module, str]:
    """Build (or move) the model once, in eval mode on its device (:func:`load_for_run`: a
    model with random weights is refused without ``random_weights``), and check with one
    watched forward pass of a blank image that it has attention (matching ``params.layers``) and
    that ``params.output`` fits its output."""
    net, name = load_for_run(params.model, params.device, random_weights=params.random_weights,
                             **params.model_options())
    probe(net, params.layers, params.output)
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
    source: Source | None = None,
    **options: Any,
) -> ReportData:
    """Run the model over the images in batches and record every attention weight.

    ``images`` is a :class:`ReportParameters` or the images (files, folders, glob patterns;
    None: the bundled samples) with the other parameters as keywords (``model``, ``layers``,
    ``device``, ``batch_size``, ``num_workers``, ``amp``, ...). ``net``: the model
    ``params.model`` names, already built by :func:`load_report_model`. ``keep``: how many
    images (and their attention weights) to keep for figures (None: all). The images are read
    as ``attnviz stats`` reads them (:func:`.inputs.open_images`: also an ImageFolder tree,
    ``shapes:N`` with ground truth, tar shards); ``source``: already opened.

    Files that cannot be read are listed in ``bad`` with the reason, never raised. Raises
    ParameterError / ModelError / NoAttentionError for bad parameters.
    """
    t0 = time.perf_counter()
    params = ReportParameters.build(images, **({"model": model} if model is not None else {}),
                                    **options)
    params = validate(params, out=False)
    if net is None:
        net, name = load_report_model(params)
    else:
        name = params.model if isinstance(params.model, str) else type(net).__name__
    selector = OutputSelector.parse(params.output)
    kinds: dict[str, str] = {}
    dev = model_device(net)
    size = input_spec(net).size
    source = source if source is not None else open_images(params.images, size)
    batch = min(params.batch_size, max(1, source.n or params.batch_size))
    check_images_memory(f"--batch-size {batch}", batch, check_input_size(size))
    channels_last = dev.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    classes = len(class_names(net) or []) or None
    loader = batches(source, size, params.batch_size, params.num_workers, channels_last, classes)
    col = Collector(keep if keep is not None else 2**62)  # None: keep every image
    bar = image_progress(source.n or 0, "attention", disable=not progress)
    try:
        # record() checks the layer pattern (NoAttentionError) before any image is read
        with threads.using(params.threads), torch.no_grad(), \
                record(net, layers=params.layers) as rec:
            for b in (prefetch(loader) if _read_ahead(params) else loader):
                if b["image"] is not None:
                    x = normalize(net, b["image"].to(dev))
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    out = forward(net, x, selector, params.amp)
                    if not kinds and out.kind == CLASSIFIER:  # names must fit the outputs
                        check_class_names(net, int(out.classes or 0))
                    kinds.setdefault(out.kind, out.source)
                    col.add(b["name"], b["image"], out, rec.latest(), b["mask"])
                    rec.clear()
                col.add_bad(b["bad"])
                bar.update(len(b["seen"]))
        col.flush()
    finally:
        bar.close()
    logits_all = col.logits()
    kind = next(iter(kinds), NONE)
    return ReportData(
        model_name=name, model=net, device=str(dev), paths=col.good_paths,
        images=col.images(size), logits=logits_all,
        predictions=predictions(net, logits_all, kind=kind),
        records=[replace(r, call=0) for r in col.records()], layers_found=col.layers_found,
        bad=col.bad + [(str(i), why) for i, why in source.skipped], summaries=col.summaries,
        non_finite=col.non_finite(), split_means=col.splits.table(),
        seconds=time.perf_counter() - t0, layers=params.layers, output_kind=kind,
        class_channels=(col.classes.deviations(class_names(net), params.top_k)
                        if kind != NONE else []),
        output_source=kinds.get(kind, ""), predicted_maps=col.predicted_maps(),
        masks=col.masks, figures_limited=col.limited,
        random_weights=random_weights_note(net), output=selector,
    )


__all__ = ["Prediction", "ReportData", "analyse", "image_progress", "load_report_model",
           "predictions"]

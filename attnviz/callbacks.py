"""Attention while training: watch masks and channel weights form.

    logger = AttentionLogger(model, probe.images, labels=probe.labels, objects=probe.masks,
                             every=50, log_dir="runs/tb")       # TensorBoard (optional)
    fit(model, images, labels, steps=400, logger=logger)         # or logger.step(i) yourself
    logger.history                                               # the same numbers, in memory

Every ``every`` steps the logger records one fixed probe batch (a few held-out images) with
:func:`attnviz.record` — in eval mode, without gradients, the model's train/eval state restored
after — and logs per attention layer:

* spatial masks (and global-context maps) as images on the honest scale of their kind
  (:func:`attnviz.vis.to_unit`), their mean and saturation (share of cells over 0.9), and with
  ground truth the pointing game and energy-in-box;
* channel weights s(c): a histogram, their spread and, with labels, class specificity;
* split weights: radix balance (1 even, 0 collapsed);
* attention maps: row entropy (1 = uniform).

A degenerate layer — every mask saturated, radix weights collapsed, s(c) constant — gets one
warning line, once, naming it. :class:`AttentionCallback` (``attnviz.callbacks.lightning``)
wraps the same logger for PyTorch Lightning.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import metrics
from .errors import ParameterError, missing_dependency
from .models.preprocess import prepare
from .record import record
from .vis import to_unit

#: masks are "saturated" when this share of their cells is over ``SATURATED_AT``
SATURATED_AT = 0.9
DEGENERATE_SHARE = 0.95


class AttentionWarning(UserWarning):
    """Attention that looks degenerate while training (one line, once per layer)."""


@dataclass
class History:
    """What the logger saw: ``scalars[tag]`` = ``[(step, value), ...]``; ``maps[layer]`` =
    ``[(step, (H, W) mask of the first probe image), ...]``."""

    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    maps: dict[str, list[tuple[int, Tensor]]] = field(default_factory=lambda: defaultdict(list))

    def series(self, tag: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one scalar."""
        pairs = self.scalars.get(tag, [])
        return [s for s, _ in pairs], [v for _, v in pairs]


class AttentionLogger:
    """Logs a model's attention on a fixed probe batch every ``every`` training steps.

    Args:
        model: the model being trained.
        probe: a few [0, 1] images ``(N, 3, H, W)`` (resized as the model expects).
        labels: their classes (for class specificity), optional.
        objects: their ground-truth object masks ``(N, H, W)`` (pointing, energy), optional.
        every: log every this many steps (step 0 included).
        log_dir: a TensorBoard log folder (needs the ``tensorboard`` package); None: in
            memory only (:attr:`history`).
        layers: only attention modules whose name matches (as in :func:`attnviz.record`).
        images: how many probe images are logged as pictures per layer.
    """

    def __init__(self, model: nn.Module, probe: Tensor, labels: Tensor | None = None,
                 objects: Tensor | None = None, every: int = 100, log_dir: str | None = None,
                 layers: str | None = None, images: int = 4) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ParameterError(f"every must be a whole number of steps >= 1, got {every!r}")
        if not isinstance(probe, Tensor) or probe.ndim != 4:
            raise ParameterError("probe must be a (N, 3, H, W) batch of images in [0, 1]")
        self.model, self.probe, self.every, self.layers = model, probe, every, layers
        self.labels, self.objects, self.images = labels, objects, images
        self.history = History()
        self.writer = _writer(log_dir) if log_dir is not None else None
        self._warned: set[str] = set()

    def step(self, step: int) -> bool:
        """Call after each training step; logs when ``step`` is a multiple of ``every``.
        Returns whether it logged."""
        if step % self.every:
            return False
        self.log(step)
        return True

    @torch.no_grad()
    def log(self, step: int) -> None:
        """Record the probe batch now and log every layer's numbers and pictures."""
        was_training = self.model.training
        self.model.eval()
        try:
            x = prepare(self.model, self.probe)
            with record(self.model, layers=self.layers) as rec:
                self.model(x)
            records = rec.cpu().records
        finally:
            self.model.train(was_training)
        for r in records:
            self._layer(step, r.key, r.kind, r.value.float())
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()

    # -- per kind ---------------------------------------------------------------------------
    def _scalar(self, step: int, tag: str, value: float) -> None:
        self.history.scalars[tag].append((step, float(value)))
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def _layer(self, step: int, key: str, kind: str, v: Tensor) -> None:
        if kind in ("spatial", "context") and v.ndim == 3:
            self._maps(step, key, kind, v)
        elif kind == "channel":
            self._scalar(step, f"{key}/s_sd", float(v.std()))
            self._scalar(step, f"{key}/saturation", float(metrics.saturation(v).mean()))
            if self.labels is not None and len(set(self.labels.tolist())) > 1:
                self._scalar(step, f"{key}/class_specificity",
                             metrics.class_specificity(v, self.labels))
            if self.writer is not None:
                self.writer.add_histogram(f"{key}/s", v, step)
            if float(v.std()) < 1e-3:
                self._warn(key, f"its channel weights s(c) are constant ({float(v.mean()):.3f})")
        elif kind in ("radix", "paths") and v.ndim == 3:
            r = v.shape[1]
            tv = 0.5 * (v - 1.0 / r).abs().sum(1)
            balance = float(1.0 - tv.mean() / (1.0 - 1.0 / r)) if r > 1 else 1.0
            self._scalar(step, f"{key}/balance", balance)
            if balance < 1 - DEGENERATE_SHARE:
                self._warn(key, f"its split weights collapsed to one split (balance {balance:.3f})")
        elif kind == "attention":
            self._scalar(step, f"{key}/entropy",
                         float(metrics.entropy(v, -1, normalized=True).mean()))

    def _maps(self, step: int, key: str, kind: str, v: Tensor) -> None:
        sat = float((v > SATURATED_AT).float().mean())
        self._scalar(step, f"{key}/mean", float(v.mean()))
        self._scalar(step, f"{key}/saturation", sat)
        if self.objects is not None and kind == "spatial":
            objects = self.objects.bool()
            self._scalar(step, f"{key}/pointing", metrics.pointing_game(v, objects))
            self._scalar(step, f"{key}/energy_in_box",
                         float(metrics.energy_in_box(v, objects).mean()))
        self.history.maps[key].append((step, v[0].clone()))
        if self.writer is not None:
            shown = v[: self.images]
            unit = torch.from_numpy(np.nan_to_num(to_unit(shown.numpy(), kind, v[0].numel())[0]))
            self.writer.add_images(f"{key}/maps", unit.float().clamp(0, 1)[:, None], step)
        if kind == "spatial" and sat > DEGENERATE_SHARE:
            self._warn(key, f"{sat:.0%} of its mask cells are over {SATURATED_AT} (saturated)")

    def _warn(self, key: str, what: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"attention layer {key}: {what}", AttentionWarning, stacklevel=4)


def _writer(log_dir: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise missing_dependency("AttentionLogger(log_dir=...)", "tensorboard", "train") from None
    return SummaryWriter(log_dir=log_dir)


def probe_batch(n: int = 8, size: int = 64, seed: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """``(images, labels, object masks)`` of ``n`` held-out generated shapes (a stream that is
    neither the training nor the test one): a probe batch for :class:`AttentionLogger`."""
    from .datasets import make_shapes

    data = make_shapes(n, seed=seed, size=size)
    return data.images, data.labels, data.masks


def mask_strip(history: History, layer: str, steps: Sequence[int] | None = None) -> Any:
    """A matplotlib figure: ``layer``'s mask on the first probe image at the logged steps,
    on the fixed 0–1 scale (the masks forming over training)."""
    from matplotlib.figure import Figure

    from .vis import CELLS, DEFAULT_CMAP

    frames = [(s, m) for s, m in history.maps.get(layer, []) if steps is None or s in steps]
    if not frames:
        raise ParameterError(f"no masks of {layer!r} were logged; logged layers: "
                             f"{sorted(history.maps)}")
    fig = Figure(figsize=(1.6 * len(frames), 1.9))
    for i, (s, m) in enumerate(frames):
        ax = fig.add_subplot(1, len(frames), i + 1)
        ax.imshow(m.numpy(), vmin=0, vmax=1, cmap=DEFAULT_CMAP, interpolation=CELLS)
        ax.set_title(f"step {s}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{layer}: mask A over training (fixed 0–1 scale)", fontsize=9)
    return fig


def saturation_curves(history: History, reference: dict[str, float] | None = None,
                      label: str = "reference") -> Any:
    """A matplotlib figure: each spatial layer's mask saturation (share of cells over 0.9)
    over the logged steps, with ``reference`` (``{layer: saturation}`` of another model, e.g.
    from ``AttentionLogger(...).log(0)``) as dashed lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.6))
    ax = fig.add_subplot(1, 1, 1)
    for tag in sorted(t for t in history.scalars if t.endswith("/saturation")
                      and t[:-len("/saturation")] in history.maps):
        steps, values = history.series(tag)
        ax.plot(steps, values, marker="o", ms=3, label=tag[:-len("/saturation")])
    for i, value in enumerate(sorted((reference or {}).values())):
        ax.axhline(value, ls="--", lw=0.8, color="grey",
                   label=f"{label} (each layer)" if i == 0 else None)
    ax.set(xlabel="training step", ylabel=f"share of cells > {SATURATED_AT}", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def final_saturation(history: History) -> dict[str, float]:
    """``{layer: saturation}`` of the last logged step of every spatial layer."""
    return {tag[:-len("/saturation")]: pairs[-1][1] for tag, pairs in history.scalars.items()
            if tag.endswith("/saturation") and tag[:-len("/saturation")] in history.maps}


__all__ = ["AttentionLogger", "AttentionWarning", "History", "final_saturation", "mask_strip",
           "probe_batch", "saturation_curves"]

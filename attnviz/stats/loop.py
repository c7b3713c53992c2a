"""One process's pass over its share of the data: batches in, aggregates (and rows) updated.

Images reach the device as one batch (pinned memory and non-blocking copies on CUDA, where the
model and batches also use channels_last); the recorded weights are reduced where they were
recorded. What comes back to the host per batch is at most one small tensor of per-image
numbers for ``--per-image``.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import forward
from ..models.preprocess import normalize
from ..record import record
from . import checkpoint
from .aggregate import Aggregate
from .checkpoint import Progress
from .perimage import RowWriter


@dataclass
class LoopOptions:
    """How a process runs its pass (see :func:`attnviz.stats.dataset_stats`)."""

    layers: str | None = None
    amp: bool = False
    save_every: float = 300.0
    progress: bool = True
    on_batch: Callable[[int], None] | None = None


class Inputs:
    """[0, 1] image batches → what the model takes, on its device
    (:func:`attnviz.models.preprocess.normalize`), and the ``--output`` selector."""

    def __init__(self, net: nn.Module, device: torch.device, output: Any = None) -> None:
        self.net, self.device, self.output = net, device, output
        self.cuda = device.type == "cuda"

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=self.cuda)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(self.net, self.to_device(images).float())
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x


def progress_bar(total: int | None, initial: int, world: int, enabled: bool) -> Any:
    """A tqdm bar on stderr in images and images/s; with several processes, rank 0's count
    times the number of processes (an estimate for the whole run)."""
    from tqdm import tqdm

    desc = "attention stats" if world == 1 else f"attention stats (x{world} processes)"
    return tqdm(total=total, initial=initial, unit="img", unit_scale=world if world > 1 else False,
                desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1)


class Pass:
    """Runs ``net`` over ``batches`` and keeps ``aggregate``, ``progress`` and ``rows``
    up to date; writes a checkpoint every ``options.save_every`` seconds."""

    def __init__(self, net: nn.Module, inputs: Inputs, aggregate: Aggregate, progress: Progress,
                 rows: RowWriter | None, options: LoopOptions, save_to: Path,
                 fingerprint: str) -> None:
        self.net, self.inputs, self.agg, self.progress = net, inputs, aggregate, progress
        self.rows, self.options = rows, options
        self.save_to, self.fingerprint = save_to, fingerprint

    def save(self) -> None:
        """Checkpoint: finish the per-image part, then write the partial sums."""
        if self.rows is not None:
            self.progress.parts = self.rows.close_part()
        checkpoint.save(self.save_to, self.fingerprint, self.progress, self.agg.state())

    def _step(self, batch: dict[str, Any], rec: Any) -> None:
        x = self.inputs(batch["image"])
        out = forward(self.net, x, self.inputs.output, self.options.amp)
        records = rec.latest()
        rec.clear()
        labels = self.inputs.to_device(batch["label"])
        masks = batch["mask"]
        objects = self.inputs.to_device(masks) if masks is not None else None
        result = self.agg.update(records, out, labels, objects)
        if self.rows is not None:
            self.rows.add(batch["name"], batch["index"], batch["label"], result)

    def run(self, batches: Iterable[dict[str, Any]], bar: Any) -> None:
        """The pass; ``KeyboardInterrupt`` leaves the last checkpoint as it was."""
        opts = self.options
        start = last_save = time.monotonic()
        base = self.progress.seconds
        with torch.no_grad(), record(self.net, layers=opts.layers) as rec:
            for batch in batches:
                if batch["image"] is not None:
                    self._step(batch, rec)
                self.progress.see(batch["seen"], batch["bad"])
                bar.update(len(batch["seen"]))
                now = time.monotonic()
                self.progress.seconds = base + now - start
                if now - last_save >= opts.save_every:
                    self.save()
                    last_save = time.monotonic()
                if opts.on_batch is not None:
                    opts.on_batch(self.progress.n_seen)
        if self.inputs.cuda:
            torch.cuda.synchronize(self.inputs.device)
        self.progress.seconds = base + time.monotonic() - start

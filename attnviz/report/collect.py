"""Batch-by-batch bookkeeping of :func:`attnviz.report.analyse`: summaries for every image,
attention weights and images only for the first ``keep`` (the ones that get figures)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import chain
from math import isfinite
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..kinds import KINDS, SPLIT_KINDS
from ..outputs import DENSE, Output
from ..record import AttentionRecord
from .classes import ClassChannels, predicted_classes
from .stats import STAT_FIELDS, SUMMARY_FIELDS, SplitMeans, layer_stats, nonfinite_images


class Pass(NamedTuple):
    """One forward pass waiting to be summarised."""

    names: list[str]
    values: list[tuple[AttentionRecord, Tensor]]
    predicted: Tensor | None  # the predicted class of each image (None: no classes)
    classes: int  # how many classes the model predicts

#: file names listed per non-finite finding (the count covers all)
EXAMPLES = 5
#: summaries are computed once this many images (or bytes of weights) are pending
STATS_IMAGES = 256
STATS_BYTES = 64 * 2**20
#: images and attention weights kept for a report's figures, in all (the summaries cover every
#: image whatever this is); past it no more images get figures
MAX_KEPT_BYTES = 1 * 2**30


class Collector:
    """Accumulates one report's batches (``add``) and bad files (``add_bad``)."""

    def __init__(self, keep: int, max_kept_bytes: int = MAX_KEPT_BYTES) -> None:
        self.keep = max(0, int(keep))
        self.max_kept_bytes, self.kept_bytes, self.limited = max_kept_bytes, 0, False
        self.good_paths: list[str] = []
        self.summaries: list[dict[str, Any]] = []
        self.layers_found: list[dict[str, Any]] = []
        self.bad: list[tuple[str, str]] = []
        self.splits = SplitMeans()
        self.classes = ClassChannels()  # channel weights per predicted class
        self._images: list[Tensor] = []
        self._logits: list[Tensor] = []
        self.masks: dict[int, Tensor] = {}  # ground truth of kept images, by position
        self._pred_maps: list[Tensor] = []
        self._first: dict[tuple[str, str], AttentionRecord] = {}
        self._chunks: dict[tuple[str, str], list[Tensor]] = {}
        self._bad_logits: list[str] = []
        self._bad_layers: dict[tuple[str, str], list[str]] = {}
        self._pending: list[Pass] = []  # passes not summarised yet
        self._pending_images = self._pending_bytes = 0

    def add_bad(self, bad: Sequence[tuple[str, str]]) -> None:
        """Items that could not be read: ``(name, reason)``."""
        self.bad.extend(bad)

    def _first_seen(self, r: AttentionRecord, value: Tensor) -> None:
        self._first[r.key, r.kind] = r
        info: dict[str, Any] = {"layer": r.key, "kind": r.kind,
                                "shape": "×".join(str(d) for d in value.shape[1:]),
                                "found_by": r.module_type}
        for g in ("q_grid", "k_grid"):
            if r.meta.get(g) is not None:
                info[g] = list(r.meta[g])
        self.layers_found.append(info)

    def add(self, names: Sequence[str], batch: Tensor, output: Output,
            records: Sequence[AttentionRecord], masks: Tensor | None = None) -> None:
        """One forward pass: its images' names, the images, the interpreted output, the
        records and, when the data has them, the ground-truth object masks."""
        names = list(names)
        start = len(self.good_paths)
        self.good_paths.extend(names)
        scores = output.image_scores()
        self._logits.append(scores.cpu() if scores is not None else torch.zeros(len(names), 0))
        kept = self._fit_kept(max(0, min(len(names), self.keep - start)), start, batch, records)
        if kept:
            self._images.append(batch[:kept].cpu())
            if masks is not None:
                self.masks.update({start + j: m.bool() for j, m in enumerate(masks[:kept].cpu())})
            pred = output.predicted()
            if output.kind == DENSE and pred is not None:
                self._pred_maps.append(pred[:kept].cpu())
        if output.logits is not None:
            bad = (~torch.isfinite(output.logits.flatten(1)).all(1)).tolist()
            self._bad_logits += [n for n, b in zip(names, bad, strict=True) if b]
        predicted = predicted_classes(scores.cpu()) if scores is not None else None
        values = []
        for r in records:
            v = r.value.detach().float().cpu()
            if (r.key, r.kind) not in self._first:
                self._first_seen(r, v)
            if kept:
                self._chunks.setdefault((r.key, r.kind), []).append(v[:kept])
            values.append((r, v))
            self._pending_bytes += v.numel() * 4
        self._pending.append(Pass(names, values, predicted,
                              scores.shape[1] if scores is not None and scores.ndim == 2 else 0))
        self._pending_images += len(names)
        if self._pending_images >= STATS_IMAGES or self._pending_bytes >= STATS_BYTES:
            self.flush()

    def _fit_kept(self, kept: int, start: int, batch: Tensor,
                  records: Sequence[AttentionRecord]) -> int:
        """How many of this batch's images may be kept for figures: the images and weights
        kept for the whole report stay within ``max_kept_bytes`` (then no more are kept, and
        ``limited`` says so); summaries always cover every image."""
        if not kept:
            return 0
        per_image = (batch[0].numel() + sum(r.value[0].numel() for r in records)) * 4
        room = max(0, self.max_kept_bytes - self.kept_bytes) // max(1, per_image)
        if room < kept:
            kept = int(room)
            self.keep = start + kept
            self.limited = True
        self.kept_bytes += kept * per_image
        return kept

    def flush(self) -> None:
        """Summarise the pending passes, each layer over all of them at once (fewer, larger
        tensor operations: cheaper than one small set per batch)."""
        pending, self._pending = self._pending, []
        self._pending_images = self._pending_bytes = 0
        grouped: dict[tuple[str, str], list[tuple[int, AttentionRecord, Tensor]]] = {}
        for b, p in enumerate(pending):
            for r, v in p.values:
                grouped.setdefault((r.key, r.kind), []).append((b, r, v))
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}  # per layer, its passes in order
        for key, items in grouped.items():
            same = len({v.shape[1:] for _, _, v in items}) == 1
            for group in ([items] if same else [[it] for it in items]):
                rows.setdefault(key, []).extend(
                    self._summarise(key, group, [n for b, _, _ in group
                                                 for n in pending[b].names]))
                self._by_class(group, pending)
        taken = dict.fromkeys(rows, 0)
        for p in pending:  # a row per image and layer, images in order, layers in pass order
            layers = []
            for r, _ in p.values:
                k, start = (r.key, r.kind), taken[r.key, r.kind]
                taken[k] = start + len(p.names)
                layers.append(rows[k][start:start + len(p.names)])
            self.summaries.extend(chain.from_iterable(zip(*layers, strict=True)))

    def _by_class(self, group: list[tuple[int, AttentionRecord, Tensor]],
                  pending: list[Pass]) -> None:
        """Channel weights of one layer over the passes in ``group`` into the per-class sums
        (kinds drawn as bars, models that predict classes)."""
        r0 = group[0][1]
        predicted = [pending[b].predicted for b, _, _ in group]
        if KINDS[r0.kind].draw != "bars" or any(p is None for p in predicted):
            return
        v = torch.cat([t for _, _, t in group]) if len(group) > 1 else group[0][2]
        self.classes.add(r0.key, v, torch.cat(predicted), pending[group[0][0]].classes)

    def _summarise(self, key: tuple[str, str], group: list[tuple[int, AttentionRecord, Tensor]],
                   names: list[str]) -> list[dict[str, Any]]:
        """The ``summary.csv`` rows of one layer over the passes in ``group`` (whose images are
        ``names``), in image order."""
        r0 = group[0][1]
        v = torch.cat([t for _, _, t in group]) if len(group) > 1 else group[0][2]
        st = layer_stats(r0.kind, v, r0.meta)
        if r0.kind in SPLIT_KINDS:  # min and max are split 0's
            flagged = nonfinite_images(v).tolist()
        else:  # min and max of all the image's weights: amin / amax keep a NaN, reach ±inf
            flagged = [not (isfinite(lo) and isfinite(hi))
                       for lo, hi in zip(st["min"], st["max"], strict=True)]
        if any(flagged):
            self._bad_layers.setdefault(key, []).extend(
                n for n, bad in zip(names, flagged, strict=True) if bad)
        if r0.kind in SPLIT_KINDS and v.ndim == 3:
            self.splits.add(r0.key, v)
        # one blank row copied per image, then filled column by column: 2.5x faster than
        # dict(zip(SUMMARY_FIELDS, values)) per row
        blank = dict.fromkeys(SUMMARY_FIELDS)
        blank.update(layer=r0.key, kind=r0.kind)
        rows = [blank.copy() for _ in names]
        for f, column in (("image", names), *((f, st[f]) for f in STAT_FIELDS)):
            if column and column[0] is not None:  # None: a field the kind does not define
                for row, x in zip(rows, column, strict=True):
                    row[f] = x
        return rows

    def logits(self) -> Tensor:
        return torch.cat(self._logits) if self._logits else torch.zeros(0, 0)

    def predicted_maps(self) -> Tensor | None:
        """(keep, H, W) predicted class maps of a dense output, else None."""
        return torch.cat(self._pred_maps) if self._pred_maps else None

    def images(self, size: int) -> Tensor:
        return torch.cat(self._images) if self._images else torch.zeros(0, 3, size, size)

    def records(self) -> list[AttentionRecord]:
        """The kept weights, one record per layer in model order."""
        keys = sorted(self._chunks, key=lambda k: (self._first[k].order, self._first[k].firing))
        return [replace(self._first[k], value=torch.cat(self._chunks[k])) for k in keys]

    def non_finite(self) -> list[dict[str, Any]]:
        """Where NaN / infinite values appeared: ``{"where", "layer", "kind", "images",
        "examples"}`` for the logits and each attention layer."""
        out = []
        if self._bad_logits:
            out.append({"where": "logits", "layer": None, "kind": None,
                        "images": len(self._bad_logits), "examples": self._bad_logits[:EXAMPLES]})
        for (key, kind), names in self._bad_layers.items():
            out.append({"where": "attention", "layer": key, "kind": kind, "images": len(names),
                        "examples": names[:EXAMPLES]})
        return out


__all__ = ["Collector"]

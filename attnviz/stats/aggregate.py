"""The whole run's aggregates: image counts and accuracy per class, one accumulator per layer.

Classes are the groups the per-class statistics are kept for: the data's labels when it has
them (ImageFolder sub-folders, the shapes classes, ``cls`` of tar samples), otherwise the
model's predicted class.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..outputs import CLASSIFIER, Output
from ..record import AttentionRecord
from .layers import BatchInfo, LayerSpec, LayerStats, make_layer
from .moments import DTYPE

COUNTS = ("images", "labelled", "correct")
#: the one group of a model without class prediction on data without labels
ALL_IMAGES = "all images"


@dataclass(frozen=True)
class ClassInfo:
    """``names`` of the groups; ``grouping`` is ``"label"``, ``"prediction"`` or ``"single"``
    (no class prediction and no labels: one group);
    ``to_output[k]`` the model output of label k (-1: none), None when accuracy is undefined;
    ``mapping`` says how labels were matched to outputs."""

    names: tuple[str, ...]
    grouping: str
    to_output: tuple[int, ...] | None = None
    mapping: str | None = None


def spec_of(r: AttentionRecord) -> LayerSpec:
    """The :class:`LayerSpec` of a record."""
    grid = {k: tuple(int(x) for x in r.meta[k]) if r.meta.get(k) else None
            for k in ("q_grid", "k_grid")}
    part = ({k: tuple(int(x) for x in r.meta[k]) for k in ("window", "grid", "shift", "image")
             if r.meta.get(k) is not None} if "window" in r.meta else None)
    return LayerSpec(r.key, r.name, r.kind, tuple(r.value.shape[1:]), r.module_type, r.order,
                     **grid, partition=part)


@dataclass
class BatchResult:
    """Per-image results of one batch, on the device: predictions, top probabilities and
    each layer's features (F, B)."""

    pred: Tensor
    prob: Tensor
    layers: list[tuple[LayerStats, Tensor]]


class Aggregate:
    """Counts and layer accumulators of one process; :meth:`reduce` merges all processes'."""

    def __init__(self, classes: ClassInfo, device: torch.device, ground_truth: bool) -> None:
        self.classes, self.device, self.ground_truth = classes, device, ground_truth
        k = len(classes.names)
        self.counts = {c: torch.zeros(k, dtype=DTYPE, device=device) for c in COUNTS}
        self.counts["unlabelled"] = torch.zeros(1, dtype=DTYPE, device=device)
        self.layers: dict[tuple[str, str], LayerStats] = {}
        to_out = classes.to_output if classes.to_output is not None else (-1,) * k
        self._to_output = torch.tensor(to_out, dtype=torch.long, device=device)

    def layer(self, spec: LayerSpec) -> LayerStats:
        """The accumulator of ``spec`` (created on first use)."""
        key = (spec.key, spec.kind)
        if key not in self.layers:
            self.layers[key] = make_layer(spec, len(self.classes.names), self.device,
                                          self.ground_truth)
        return self.layers[key]

    def update(self, records: Sequence[AttentionRecord], output: Output, labels: Tensor,
               objects: Tensor | None = None) -> BatchResult:
        """Add one batch: the model's interpreted ``output`` (a classifier's logits, a dense
        prediction's class shares, or no prediction: ``pred`` -1, ``prob`` NaN), ``labels``
        (B,) with -1 for none, and the batch's records (each (B, ...))."""
        scores = output.image_scores()
        if scores is None:
            pred = torch.full_like(labels, -1)
            prob = torch.full(labels.shape, float("nan"), device=labels.device)
        else:
            probs = scores.softmax(1) if output.kind == CLASSIFIER else scores
            prob, pred = probs.max(1)
        has = labels >= 0
        if self.classes.grouping == "single":
            group = torch.zeros_like(labels)
        elif self.classes.grouping == "label":
            group = torch.where(has, labels, pred.clamp_min(0))
        else:
            group = pred
        ones = torch.ones_like(group, dtype=DTYPE)
        self.counts["images"].index_add_(0, group, ones)
        self.counts["unlabelled"] += (~has).sum()
        target = self._to_output[labels.clamp_min(0)]
        scored = has & (target >= 0)
        self.counts["labelled"].index_add_(0, group, scored.to(DTYPE))
        self.counts["correct"].index_add_(0, group, (scored & (pred == target)).to(DTYPE))
        info = BatchInfo(group, objects)
        out = []
        for r in records:
            acc = self.layers.get((r.key, r.kind)) or self.layer(spec_of(r))
            out.append((acc, acc.update(r.value, info)))
        return BatchResult(pred, prob, out)

    # -- state -------------------------------------------------------------------------------
    def specs(self) -> list[LayerSpec]:
        """The layers, in model order."""
        return sorted((a.spec for a in self.layers.values()), key=lambda s: (s.order, s.key))

    def state(self) -> dict:
        """Everything, on the CPU, for a checkpoint."""
        return {"counts": {k: v.cpu() for k, v in self.counts.items()},
                "layers": [{"spec": s.to_json(),
                            "tensors": {k: t.cpu() for k, t in
                                        self.layers[s.key, s.kind].tensors().items()}}
                           for s in self.specs()]}

    def load(self, state: dict) -> None:
        """Restore :meth:`state`."""
        for k, v in state["counts"].items():
            self.counts[k] = v.to(self.device, DTYPE).clone()
        for item in state["layers"]:
            self.layer(spec_from_json(item["spec"])).load(item["tensors"])

    def check(self, images: int) -> None:
        """Raise ValueError unless the state is possible after ``images`` readable images:
        class counts whole, non-negative, summing to ``images`` (labelled <= images, correct
        <= labelled), and every layer's state finite and within those counts."""
        c = self.counts
        k = len(self.classes.names)
        for name, t in c.items():
            want = (1,) if name == "unlabelled" else (k,)
            if tuple(t.shape) != want:
                raise ValueError(f"counts {name}: shape {tuple(t.shape)}, {want} expected")
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) \
                    or bool((t != t.round()).any()):
                raise ValueError(f"counts {name} are not whole non-negative numbers")
        if int(c["images"].sum()) != images:
            raise ValueError(f"{int(c['images'].sum())} images counted per class but "
                             f"{images} read")
        if bool((c["labelled"] > c["images"]).any()) or bool((c["correct"] > c["labelled"]).any()) \
                or int(c["unlabelled"].sum()) > images:
            raise ValueError("more labelled or correct images than images")
        for acc in self.layers.values():
            acc.check(c["images"])

    def tensors(self) -> tuple[list[Tensor], list]:
        """``(sums, moments)`` in a fixed order, for the collectives."""
        sums = [self.counts[k] for k in (*COUNTS, "unlabelled")]
        moments = []
        for s in self.specs():
            acc = self.layers[s.key, s.kind]
            sums += [acc.sums[k] for k in sorted(acc.sums)]
            moments += [acc.moments[k] for k in sorted(acc.moments)]
        return sums, moments


def spec_from_json(d: dict) -> LayerSpec:
    """The inverse of :meth:`LayerSpec.to_json`."""
    grids = {k: tuple(d[k]) if d.get(k) else None for k in ("q_grid", "k_grid")}
    part = d.get("partition")
    return LayerSpec(d["key"], d["name"], d["kind"], tuple(d["shape"]), d["module_type"],
                     int(d["order"]), **grids,
                     partition={k: tuple(v) for k, v in part.items()} if part else None)

"""The model side of the explorers: one cached forward pass per image *content*.

Analyses are keyed by the image's content digest (see :mod:`.sources`) and kept in a small
least-recently-used cache, so moving a control never re-runs the model and an image with a
reused name never shows an earlier image's attention.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..engine import forward
from ..errors import NoAttentionError
from ..kinds import KINDS
from ..models.preprocess import class_names, input_spec, model_device, normalize
from ..outputs import CLASSIFIER, NO_PREDICTION, NONE, OutputSelector
from ..record import AttentionRecord, AttentionSite, find_attention, record

#: kinds the explorers draw (attention maps and other gates: see the records API)
DRAWABLE = tuple(k for k, entry in KINDS.items() if entry.explorer)


def drawable() -> tuple[str, ...]:
    """The kinds the explorer shows, as the kinds registry says now."""
    return tuple(k for k, entry in KINDS.items() if entry.explorer)
MAX_CACHED = 16  # analyses kept (records of a 64-px demo model: ~0.1 MB each)


@dataclass
class Analysis:
    """One image's cached forward pass: its records (CPU) and its top predictions."""

    image: torch.Tensor  # (3, H, W) in [0, 1], as shown
    records: list[AttentionRecord]
    top: list[tuple[str, float]]
    output_kind: str = CLASSIFIER  # see attnviz.outputs: classifier, dense or none

    def prediction_text(self) -> str:
        """``prediction: ...`` for a classifier, ``predicted map: ...`` (class shares) for a
        dense output, ``no class prediction`` otherwise."""
        if self.output_kind == NONE or not self.top:
            return NO_PREDICTION
        head = "prediction" if self.output_kind == CLASSIFIER else "predicted map"
        return f"{head}: " + ", ".join(f"{n} {p:.1%}" for n, p in self.top)


def model_card(model: nn.Module) -> dict | None:
    """The model card of a bundled demo model (set by ``load_model``), else None."""
    card = getattr(model, "model_card", None)
    return card if isinstance(card, dict) else None


class Analyser:
    """Runs ``model`` once per image content and caches the recorded weights."""

    def __init__(self, model: nn.Module, layers: str | Sequence[str] | None,
                 kinds: Sequence[str], max_cached: int = MAX_CACHED, output: Any = None) -> None:
        self.model, self.layers, self.kinds = model.eval(), layers, tuple(kinds)
        self.output = OutputSelector.parse(output)
        # fails early with a clear message (no attention, bad pattern, bad kind): one watched
        # pass on a blank image finds hand-written attention too
        size = input_spec(model).size
        blank = torch.zeros(1, 3, size, size, device=model_device(model))
        found = find_attention(model, blank, layers=layers)
        self.sites: list[AttentionSite] = [s for s in found if s.kind in self.kinds]
        if not self.sites:
            rows = [s.name for s in found if s.kind == "attention"]
            hint = (f"; it has self-attention maps ({', '.join(rows[:3])}"
                    f"{', ...' if len(rows) > 3 else ''}): explore them with "
                    "attnviz.widgets.AttentionExplorer(model)" if rows else "")
            raise NoAttentionError(
                f"{type(model).__name__} has no attention of the kinds this explorer draws "
                f"({', '.join(self.kinds)}){hint}")
        self.class_names = class_names(model)
        self.max_cached = max_cached
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self.forward_count = 0

    def cached(self, digest: str) -> Analysis | None:
        a = self._cache.get(digest)
        if a is not None:
            self._cache.move_to_end(digest)
        return a

    def get(self, digest: str,
            load: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> Analysis:
        """The analysis of the image with content ``digest``; ``load()`` gives, when the model
        has to run, the image as shown and the model's input, (3, S, S) in [0, 1], resized from
        the full image by :func:`attnviz.models.preprocess.resize` as reports and stats do."""
        a = self.cached(digest)
        if a is None:
            a = self._run(*load())
            self._cache[digest] = a
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return a

    def forget(self, digests: Sequence[str]) -> None:
        for d in digests:
            self._cache.pop(d, None)

    def _run(self, image: torch.Tensor, pixels: torch.Tensor) -> Analysis:
        x = normalize(self.model, pixels[None].to(model_device(self.model)))
        with torch.no_grad(), record(self.model, self.layers, self.kinds) as rec:
            out = forward(self.model, x, self.output)
        self.forward_count += 1
        rec = rec.cpu()
        top = out.top(self.class_names)
        return Analysis(image=image.cpu(), records=rec.latest(), top=top[0] if top else [],
                        output_kind=out.kind)

    def opening_layer(self, first: Analysis) -> int:
        """The layer to open on: the demo card's best spatial layer when this explorer draws
        it, else the spatial mask with the most contrast on the first image, else 0."""
        names = [r.name for r in first.records]
        best = ((model_card(self.model) or {}).get("test") or {}).get("best_spatial_layer")
        if best in names:
            return names.index(best)
        spatial = [(float(r.value[0].std()), i) for i, r in enumerate(first.records)
                   if r.kind == "spatial"]
        return max(spatial)[1] if spatial else 0

    def out_of_distribution(self, origin: str) -> str | None:
        """A warning when a demo model (trained on generated shapes) sees a photo or upload."""
        card = model_card(self.model)
        if not card or (card.get("data") or {}).get("source") != "shapes":
            return None
        if origin == "photo":
            return ("out of distribution: this demo model was trained only on generated shapes, "
                    "so its prediction and attention on a photo mean nothing (for photos use "
                    "ImageNet weights, e.g. load_model('resnest50d', pretrained=True))")
        if origin == "upload":
            return ("this demo model was trained only on generated shapes: unless your image "
                    "looks like them, its prediction and attention mean nothing")
        return None

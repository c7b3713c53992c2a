"""Models whose outputs are not a (batch, classes) tensor, for the one-engine tests: a CBAM
segmentation net, a CBAM detector-style net returning a tuple, dict-returning nets with and
without ``logits``, ``ModelOutput``-like results, and a HuggingFace-style ``pixel_values=``
model. Loaded by the tests from Python and through ``--model tests/engine_models.py:NAME``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from attnviz.examples import TutorialCBAMBlock

C, K = 8, 3


class Backbone(nn.Module):
    """A stem and one tutorial-style CBAM block (channel gate s(c) and spatial mask A)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU())
        self.block = TutorialCBAMBlock(C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x))


class Segmenter(nn.Module):
    """(B, K, H, W) per-pixel class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = Backbone(), nn.Conv2d(C, K, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


class Detector(nn.Module):
    """A YOLO-style tuple: boxes (B, N, 4), objectness (B, N), class scores (B, N, K)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.boxes, self.obj, self.cls = nn.Conv2d(C, 4, 1), nn.Conv2d(C, 1, 1), nn.Conv2d(C, K, 1)

    def forward(self, x):
        f = self.backbone(x)
        b = f.shape[0]
        return (self.boxes(f).flatten(2).transpose(1, 2), self.obj(f).reshape(b, -1),
                self.cls(f).flatten(2).transpose(1, 2))


class DictNet(nn.Module):
    """A dict; with ``logits`` (B, K) when ``with_logits``, else only features and boxes."""

    def __init__(self, with_logits: bool = True) -> None:
        super().__init__()
        self.backbone, self.fc = Backbone(), nn.Linear(C, K)
        self.with_logits = with_logits

    def forward(self, x):
        feats = self.backbone(x).mean((2, 3))
        if self.with_logits:
            return {"features": feats, "logits": self.fc(feats)}
        return {"features": feats, "boxes": self.fc(feats)[..., None].expand(-1, -1, 4)}


class ModelOutput(OrderedDict):
    """Like ``transformers.utils.ModelOutput``: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Result:
    """A result object that is not a mapping, with a ``logits`` attribute."""

    logits: torch.Tensor
    hidden: torch.Tensor


class HFStyle(nn.Module):
    """HuggingFace vision style: ``forward(pixel_values=...)`` returning a ModelOutput."""

    def __init__(self, dataclass_result: bool = False) -> None:
        super().__init__()
        self.backbone, self.classifier = Backbone(), nn.Linear(C, K)
        self.dataclass_result = dataclass_result

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False):
        feats = self.backbone(pixel_values).mean((2, 3))
        logits = self.classifier(feats)
        if self.dataclass_result:
            return Result(logits, feats)
        return ModelOutput(logits=logits, hidden_states=feats)


def _small(model: nn.Module) -> nn.Module:
    model.input_size = 32  # type: ignore[attr-defined]  (32-px inputs keep the tests quick)
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, 0, 0.3)
    return model.eval()


def segmenter() -> nn.Module:
    return _small(Segmenter())


def detector() -> nn.Module:
    return _small(Detector())


def dict_logits() -> nn.Module:
    return _small(DictNet(True))


def dict_plain() -> nn.Module:
    return _small(DictNet(False))


def hf_style() -> nn.Module:
    return _small(HFStyle())


def result_object() -> nn.Module:
    return _small(HFStyle(dataclass_result=True))


def seg_logits(out):
    """An ``--output file.py:fn`` post-processor: the detector's class scores as (B, K) by
    the max over anchors."""
    return out[2].amax(1)


#: name → (factory, expected output kind)
CASES = {
    "segmenter": (segmenter, "dense"),
    "detector": (detector, "none"),
    "dict_logits": (dict_logits, "classifier"),
    "dict_plain": (dict_plain, "none"),
    "hf_style": (hf_style, "classifier"),
    "result_object": (result_object, "classifier"),
}

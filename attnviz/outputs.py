"""What a model's output means: the one place every command and explorer asks.

    out = interpret(call_model(model, x), batch=len(x))     # or output="logits" / 0 / "f.py:fn"
    out.kind          # "classifier", "dense" or "none"
    out.logits        # (B, classes) or (B, K, H, W), float32 on the model's device; None for "none"

The rules (also the README's table):

============================================================  ============================
the model returns                                             meaning
============================================================  ============================
a ``(B, classes)`` tensor; a dict / ``ModelOutput`` whose     ``classifier``: predictions,
``logits`` is one; a tuple / list whose first item is one     top-k, per-class statistics
a ``(B, K, H, W)`` tensor (K >= 2), or ``logits`` of that     ``dense``: a predicted class
shape, or a tuple whose first item is one                     per pixel
anything else (detector tuples, feature maps, embeddings)     ``none``: attention only,
                                                              "no class prediction"
============================================================  ============================

``output=`` (``--output``) picks the logits explicitly: a key or attribute name (``"logits"``,
``"seg"``), an index into a tuple (``0``), or ``"file.py:fn"`` / ``"package.module:fn"``, a
function called with the raw output that returns the logits. A selector that does not fit the
output is a :class:`~attnviz.errors.ParameterError`. Models whose ``forward`` takes
``pixel_values`` (HuggingFace vision models) are called as ``model(pixel_values=x)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ParameterError
from .terminal import one_line

CLASSIFIER, DENSE, NONE = "classifier", "dense", "none"
KINDS = (CLASSIFIER, DENSE, NONE)
#: what the pages say when there is no class prediction
NO_PREDICTION = "no class prediction"


def describe(out: Any, depth: int = 0) -> str:
    """A short description of a model output, for messages: ``Tensor(2, 5)``,
    ``dict with keys ['boxes', 'scores']``, ``tuple of 2: (Tensor(2, 8, 4), ...)``."""
    if isinstance(out, Tensor):
        return f"Tensor{tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with keys {list(out)[:8]}"
    if isinstance(out, (tuple, list)):
        if depth > 0:
            return f"{type(out).__name__} of {len(out)}"
        items = ", ".join(describe(o, 1) for o in out[:3])
        return f"{type(out).__name__} of {len(out)}: ({items}{', ...' if len(out) > 3 else ''})"
    return type(out).__name__


@dataclass(frozen=True)
class OutputSelector:
    """``--output``: which part of the output holds the logits.

    Exactly one of ``key`` (a dict key or attribute), ``index`` (into a tuple / list) or ``fn``
    (a function of the raw output) is set; ``text`` is what the user typed.
    """

    text: str
    key: str | None = None
    index: int | None = None
    fn: Callable[[Any], Any] | None = None

    @classmethod
    def parse(cls, spec: str | int | Callable[[Any], Any] | OutputSelector | None,
              ) -> OutputSelector | None:
        """``None`` (automatic), ``"logits"``, ``0`` / ``"0"``, ``"file.py:fn"`` or a callable.

        Raises:
            ParameterError: an empty selector, or a function spec that cannot be imported.
        """
        if spec is None or isinstance(spec, OutputSelector):
            return spec
        if callable(spec):
            return cls(getattr(spec, "__name__", "function"), fn=spec)
        if isinstance(spec, bool):
            raise ParameterError(f"output must be a key, an index or file.py:fn, got {spec!r}")
        if isinstance(spec, int):
            return cls(str(spec), index=spec)
        if not isinstance(spec, str) or not spec.strip():
            raise ParameterError(f"output must be a key, an index or file.py:fn, got {spec!r}")
        text = spec.strip()
        if text.lstrip("-").isdigit():
            return cls(text, index=int(text))
        from .models.user import import_object, is_user_spec

        if is_user_spec(text):
            fn = import_object(text)
            if not callable(fn):
                raise ParameterError(f"--output {text}: {type(fn).__name__} is not callable")
            return cls(text, fn=fn)
        return cls(text, key=text)

    def select(self, out: Any) -> Any:
        """The part of ``out`` this selector names.

        Raises:
            ParameterError: the key / index is not in the output, or the function raised.
        """
        if self.fn is not None:
            try:
                return self.fn(out)
            except Exception as e:
                raise ParameterError(f"--output {self.text} raised {type(e).__name__}: "
                                     f"{one_line(str(e))[:200]}") from None
        if self.index is not None:
            if isinstance(out, (tuple, list)) and -len(out) <= self.index < len(out):
                return out[self.index]
            raise ParameterError(f"--output {self.text} does not fit: the model returns "
                                 f"{describe(out)}")
        if isinstance(out, Mapping) and self.key in out:
            return out[self.key]
        if not isinstance(out, (Tensor, tuple, list, Mapping)) and hasattr(out, str(self.key)):
            return getattr(out, str(self.key))
        raise ParameterError(f"--output {self.text} does not fit: the model returns "
                             f"{describe(out)}")


@dataclass(frozen=True)
class Output:
    """A model output, interpreted.

    Attributes:
        kind: ``"classifier"``, ``"dense"`` or ``"none"``.
        logits: ``(B, classes)`` or ``(B, K, H, W)`` as float32 (None for ``"none"``).
        source: where the logits came from (``"output"``, ``"output['logits']"``,
            ``"output[0]"``, ``"--output f.py:fn"``) or, for ``"none"``, what the output was.
    """

    kind: str
    logits: Tensor | None
    source: str

    @property
    def classes(self) -> int | None:
        """The number of classes (None: no class prediction)."""
        return None if self.logits is None else int(self.logits.shape[1])

    def predicted(self) -> Tensor | None:
        """The predicted class: ``(B,)`` for a classifier, ``(B, H, W)`` for a dense output."""
        return None if self.logits is None else self.logits.argmax(1)

    def probabilities(self) -> Tensor | None:
        """Softmax over the classes (dim 1), the shape of ``logits``."""
        return None if self.logits is None else self.logits.softmax(1)

    def image_scores(self) -> Tensor | None:
        """``(B, classes)`` per-image scores: the logits of a classifier; for a dense output
        the share of each class in the predicted map (what the image is mostly predicted as)."""
        if self.logits is None:
            return None
        if self.kind == CLASSIFIER:
            return self.logits
        pred = self.logits.argmax(1).flatten(1)
        k = self.logits.shape[1]
        onehot = torch.zeros(pred.shape[0], k, device=pred.device)
        onehot.scatter_add_(1, pred, torch.ones_like(pred, dtype=onehot.dtype))
        return onehot / pred.shape[1]

    def top(self, names: Sequence[str] | None = None, k: int = 3,
            ) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` best ``(class name, value)`` (see :func:`top_classes`)."""
        scores = self.image_scores()
        return [] if scores is None else top_classes(scores, self.kind, names, k)

    def take(self, rows: slice | Tensor) -> Output:
        """The same output for a subset of the batch."""
        return Output(self.kind, None if self.logits is None else self.logits[rows], self.source)


def class_name(names: Sequence[str] | None, j: int) -> str:
    """The name of output ``j`` (``"class j"`` beyond the known names)."""
    return names[j] if names is not None and 0 <= j < len(names) else f"class {j}"


def top_classes(scores: Tensor, kind: str, names: Sequence[str] | None = None, k: int = 3,
                ) -> list[list[tuple[str, float]]]:
    """Per row of ``scores`` (:meth:`Output.image_scores`, (N, classes)), the ``k`` best
    ``(class name, value)``: softmax probabilities of classifier logits, class shares of a dense
    prediction as they are. A row with a NaN or infinite value gives an empty list."""
    if scores.numel() == 0:
        return [[] for _ in range(scores.shape[0])]
    scores = scores.float()
    probs = scores.softmax(1) if kind == CLASSIFIER else scores
    finite = torch.isfinite(scores).all(1).tolist()
    top = probs.topk(min(k, probs.shape[1]), 1)
    return [[(class_name(names, j), v) for j, v in zip(idx, vals, strict=True)] if ok else []
            for ok, idx, vals in zip(finite, top.indices.tolist(), top.values.tolist(),
                                     strict=True)]


def _classify(t: Any, batch: int | None) -> str | None:
    """The kind of a tensor that holds logits, or None."""
    if not isinstance(t, Tensor) or not t.is_floating_point():
        return None
    if batch is not None and (t.ndim == 0 or t.shape[0] != batch):
        return None
    if t.ndim == 2 and t.shape[1] >= 1:
        return CLASSIFIER
    if t.ndim == 4 and t.shape[1] >= 2:
        return DENSE
    return None


def _auto(out: Any, batch: int | None) -> tuple[Any, str] | None:
    """``(tensor, source)`` of the logits found by the automatic rules, or None."""
    if _classify(out, batch):
        return out, "output"
    if isinstance(out, Mapping):
        if _classify(out.get("logits"), batch):
            return out["logits"], "output['logits']"
        return None
    if isinstance(out, (tuple, list)):
        if out and _classify(out[0], batch):
            return out[0], "output[0]"
        return None
    logits = getattr(out, "logits", None)  # ModelOutput-like objects that are not mappings
    if _classify(logits, batch):
        return logits, "output.logits"
    return None


def interpret(out: Any, batch: int | None = None,
              output: str | int | Callable[[Any], Any] | OutputSelector | None = None,
              detach: bool = True) -> Output:
    """What ``out`` (a model's raw output for a batch of ``batch`` images) means.

    Args:
        out: whatever the model's forward returned.
        batch: the number of images in the batch (checked against the logits' first axis).
        output: the ``--output`` selector (see :class:`OutputSelector`); None: the rules of
            the module docstring.

        detach: detach the logits (False: gradients flow through them).

    Returns:
        An :class:`Output`; its logits are float32 (detached unless ``detach=False``).

    Raises:
        ParameterError: an explicit selector that does not fit the output, or that picks
        something that is not ``(B, classes)`` or ``(B, K, H, W)`` logits.

    Examples:
        >>> interpret({"logits": torch.zeros(2, 5)}, 2).kind
        'classifier'
        >>> interpret((torch.zeros(2, 8, 4), torch.zeros(2, 8)), 2).kind
        'none'
    """
    sel = OutputSelector.parse(output)
    if sel is not None:
        picked = sel.select(out)
        found = _auto(picked, batch)
        if found is None:
            raise ParameterError(
                f"--output {sel.text} picked {describe(picked)}: not logits of shape "
                f"(batch{'=' + str(batch) if batch else ''}, classes) or (batch, classes, H, W)")
        t, where = found
        source = f"--output {sel.text}" if where == "output" else f"--output {sel.text}: {where}"
    else:
        found = _auto(out, batch)
        if found is None:
            return Output(NONE, None, describe(out))
        t, source = found
    kind = _classify(t, batch)
    return Output(str(kind), (t.detach() if detach else t).float(), source)


def class_scores(out: Any, batch: int | None = None,
                 output: str | int | Callable[[Any], Any] | OutputSelector | None = None,
                 ) -> Tensor:
    """(B, classes) class scores that gradients flow through, the targets of attribution: a
    classifier's logits; for a dense prediction, each class's logit summed over the pixels
    predicted as that class (the class's score over its predicted region).

    Raises:
        ParameterError: the output holds no class prediction (pass ``output=`` to pick it).
    """
    o = interpret(out, batch, output, detach=False)
    if o.logits is None:
        raise ParameterError(f"attribution needs class scores, but the model returns {o.source}:"
                             " pass output= (--output) to pick its logits")
    if o.kind == CLASSIFIER:
        return o.logits
    region = torch.zeros_like(o.logits).scatter_(1, o.logits.argmax(1, keepdim=True), 1.0)
    return (o.logits * region).flatten(2).sum(2)


def takes_pixel_values(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes its image as ``pixel_values`` (HuggingFace vision)."""
    forward = model.forward
    func = getattr(forward, "__func__", None)
    return _first_is_pixel_values(forward, False) if func is None else \
        _first_is_pixel_values(func, True)


@functools.lru_cache(maxsize=256)
def _first_is_pixel_values(forward: Any, bound: bool) -> bool:
    """(per forward function: reading a signature costs about 0.1 ms, once per batch)
    ``bound``: ``forward`` is the function behind a bound method (its first parameter is the
    module)."""
    try:
        params = list(inspect.signature(forward).parameters)[1 if bound else 0:]
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "pixel_values"


def call_model(model: nn.Module, x: Tensor) -> Any:
    """``model(x)``, or ``model(pixel_values=x)`` when its forward names its input so."""
    if takes_pixel_values(model):
        return model(pixel_values=x)
    return model(x)


__all__ = ["CLASSIFIER", "DENSE", "KINDS", "NONE", "NO_PREDICTION", "Output", "OutputSelector",
           "call_model", "class_name", "class_scores", "describe", "interpret",
           "takes_pixel_values", "top_classes"]

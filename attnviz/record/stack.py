"""Which modules of a model are running now, and what the model was called with."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from torch import Tensor, nn

from .fxnames import fx_names

_RECURRENT = re.compile(r"LSTM|GRU|RNN|Recurrent", re.IGNORECASE)
_ACTIVATIONS = (nn.Sigmoid, nn.Hardsigmoid, nn.Softmax, nn.Softmax2d, nn.Identity)
_ACT_WORDS = ("sigmoid", "softmax", "gate", "act")


def is_activation(module: nn.Module) -> bool:
    """A parameter-free leaf that only applies an activation (``nn.Sigmoid``, timm gates)."""
    if isinstance(module, _ACTIVATIONS):
        return True
    name = type(module).__name__.lower()
    return (
        not module._modules
        and not module._parameters
        and any(w in name for w in _ACT_WORDS)
    )



class Frame(NamedTuple):
    """A running module: its name, itself, its input's shape and a (H, W) size argument."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    size: tuple[int, int] | None


class ModuleStack:
    """The modules of one model that are running now, innermost last (fed by forward hooks)."""

    def __init__(self, model: nn.Module, covered: set[nn.Module],
                 keep_recurrent: bool = False) -> None:
        self.keep_recurrent = keep_recurrent
        self.names: dict[nn.Module, str] = {m: n for n, m in model.named_modules()}
        self.order = {n: i for i, n in enumerate(self.names.values())}
        self.acts = {m for m in self.names if is_activation(m)}
        self.covered = covered
        self.covered_depth = 0
        self.frames: list[Frame] = []
        self.input_shape: tuple[int, ...] | None = None  # of the model's input, set per pass
        self._types: dict[str, str] | None = None
        self.fx = fx_names(model)
        self._by_name = {n: m for m, n in self.names.items()} if self.fx else {}

    def set_input(self, args: tuple, kwargs: dict) -> None:
        """The model was called: its first tensor argument, positional or keyword
        (``model(pixel_values=x)``), gives the batch."""
        for x in (*args, *kwargs.values()):
            if isinstance(x, Tensor) and x.ndim:
                self.input_shape = tuple(x.shape)
                return
        self.input_shape = None

    def batch_for(self, shape: tuple[int, ...]) -> int | None:
        """The batch size of a map of ``shape`` (…, Q, K): the model input's first axis, or its
        second for a sequence-first (T, B, C) input whose first axis is the token count."""
        x = self.input_shape
        if not x:
            return None
        q, k = shape[-2:]
        if len(shape) >= 4 and shape[0] == x[0]:
            return x[0]  # (B, heads, Q, K) already
        lead = math.prod(shape[:-2])
        if len(x) == 3 and x[0] in (q, k) and x[1] not in (q, k) and lead % x[1] == 0:
            return x[1]
        return x[0]

    def recurrent(self) -> bool:
        """True inside a recurrent cell (LSTM, GRU, ConvLSTM): its gates are not attention."""
        if self.keep_recurrent:
            return False
        return any(_RECURRENT.search(type(f.module).__name__) for f in self.frames)

    def find_attr(self, name: str) -> Frame | None:
        """The innermost running module that has attribute ``name``."""
        for f in reversed(self.frames):
            if hasattr(f.module, name):
                return f
        return None

    def push(self, module: nn.Module, args: tuple) -> str | None:
        name = self.names.get(module)
        if name is None:
            return None
        x = args[0] if args else None
        size = args[1] if len(args) > 1 else None  # timm's forward(x, size=(H, W))
        if not (isinstance(size, (tuple, list)) and len(size) == 2
                and all(isinstance(i, int) for i in size)):
            size = None
        self.frames.append(Frame(name, module, tuple(x.shape) if isinstance(x, Tensor) else (),
                                 tuple(size) if size else None))
        if module in self.covered:
            self.covered_depth += 1
        return name

    def pop(self, module: nn.Module) -> str | None:
        if module not in self.names:
            return None
        while self.frames:  # tolerate a frame lost to an exception inside a forward
            name, m, _, _ = self.frames.pop()
            if m in self.covered:
                self.covered_depth -= 1
            if m is module:
                return name
        return None

    def producer(self) -> str:
        """The innermost running module that is not a bare activation."""
        for name, m, _, _ in reversed(self.frames):
            if m not in self.acts:
                return self._fx_path(name, skip_acts=True)
        return self._fx_path("", skip_acts=True)

    def owner(self) -> str:
        return self._fx_path(self.frames[-1][0] if self.frames else "", skip_acts=False)

    def _fx_path(self, name: str, skip_acts: bool) -> str:
        """In a GraphModule the root runs every inlined module: name the graph's module."""
        if self.fx is None or name:
            return name
        for path in reversed(self.fx.paths() or []):
            m = self._by_name.get(path)
            if m is not None and not (skip_acts and m in self.acts):
                return path
        return name

    def type_name(self, name: str) -> str:
        if self._types is None:
            self._types = {n: type(m).__name__ for m, n in self.names.items()}
        return self._types.get(name, "model")

    def grid(self, n: int) -> tuple[int, int] | None:
        """(H, W) of the innermost running module whose 4-D input has H·W = n tokens."""
        for _, _, shape, _ in reversed(self.frames):
            if len(shape) == 4 and shape[2] * shape[3] == n:
                return shape[2], shape[3]
        return None

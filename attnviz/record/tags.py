"""What the observer knows about a weight it follows (:class:`Tag`), and the interface the
operation handlers see of the observer (:class:`Watcher`). A leaf module: the handlers
(``ops``, ``derive``, ``axes``, ``geometry``) and the observer import it, never each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor


@dataclass(frozen=True)
class Tag:
    kind: str  # "gate" (sigmoid family) | "softmax"
    src: int  # unique id of the activation call that made the weight
    base: Tensor  # the activation's output
    eff: Tensor  # the tagged tensor before any expand/broadcast
    producer: str
    dim: int | None = None  # softmax dim of ``base``
    piece: int | None = None  # index of a split/chunk/unbind piece
    act_input: Any = None  # weakref to the activation's input (x · σ(x) is SiLU, not attention)
    act: str = ""  # "sigmoid" / "hardsigmoid" for gates
    logits: bool = False  # a softmax of q @ kᵀ (its rows are queries)
    mixed: tuple[str, ...] = ()  # what the network did to the weight after its activation


class Watcher(Protocol):
    """The observer as its operation handlers use it (see ``observe.Observer``)."""

    stack: Any  # the ModuleStack: running modules, batch and grids
    queries: Any  # record(queries=...): a queries.QuerySpec or None

    def admit(self, shape: tuple[int, ...]) -> bool: ...
    def tag(self, t: Any, tag: Tag) -> None: ...
    def get(self, t: Any) -> Tag | None: ...
    def mark(self, t: Tensor, axes: Any) -> None: ...
    def axes_of(self, t: Any) -> Any: ...
    def new_tag(self, kind: str, out: Tensor, **kw: Any) -> None: ...
    def derived(self, tag: Tag, out: Tensor, op: str) -> Tag: ...
    def derive(self, tag: Tag, out: Any, op: str) -> None: ...
    def gate_meets(self, tag: Tag, feat: Tensor) -> None: ...
    def attention(self, tag: Tag, operand: Tensor | None = None, right: bool = False,
                  what: str = "attention map", values: Any = None) -> None: ...
    def weights(self, w: Tensor, what: str, batch: int | None = None,
                rows: list[int] | None = None, n_queries: int | None = None,
                **meta: Any) -> None: ...


__all__ = ["Tag", "Watcher"]

"""What a recording holds: typed records and read-only views over them.

Kinds and canonical shapes (``B`` = images in the forward pass):

    channel    (B, C)            s(c): x · s(c), a gate per channel            (SE, CBAM, ECA)
    spatial    (B, H, W)         A: x · A, a gate per position                 (CBAM spatial)
    radix      (B, R, C)         a_r: Σ_r a_r · U_r, sums to 1 over R          (ResNeSt)
    paths      (B, P, C)         a_p: Σ_p a_p · U_p, sums to 1 over P          (selective kernel)
    context    (B, H, W)         softmax over H·W pooling x into one vector     (global context)
    gate       as multiplied     any other gate: directional (B, C, H, 1) / (B, C, 1, W)
                                 (coordinate attention), full (B, C, H, W), ...
    attention  (B, heads, Q, K)  softmax(QKᵀ/√d) rows, out = attn @ V          (non-local, MHSA)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import ParameterError

KINDS = ("channel", "spatial", "radix", "paths", "context", "gate", "attention")


@dataclass(frozen=True)
class AttentionRecord:
    """One weight the network multiplied by, at one firing of one site.

    Attributes:
        name: qualified name of the module that made the weight (``layer3.0.attn.spatial``).
        kind: one of ``KINDS``.
        value: the weight, float32, in the canonical shape of its kind.
        module_type: how it was found, e.g. ``"timm SEModule"`` (named adapter) or
            ``"observed sigmoid gate in ChannelAttention"``.
        order: position of the module in ``model.named_modules()`` (for sorting / sliders).
        stage, block: the network stage and block index, when the name shows them.
        call: index of the forward pass inside this recording (0, 1, ...).
        firing: index of this firing of ``name`` inside its forward pass (a module called twice
            in one pass gives firings 0 and 1).
        source: ``"adapter"`` or ``"observed"``.
        meta: extra facts, e.g. ``q_grid`` / ``k_grid`` (H, W) of an attention map.
    """

    name: str
    kind: str
    value: torch.Tensor
    module_type: str
    order: int
    stage: int | None
    block: int | None
    call: int
    firing: int = 0
    source: str = "adapter"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def made(cls, name: str, kind: str, value: torch.Tensor, module_type: str, order: int,
             stage: int | None, block: int | None, call: int, firing: int, source: str,
             meta: dict[str, Any]) -> AttentionRecord:
        """The recorder's constructor: the same record, every field given, without the frozen
        ``__init__``'s ``object.__setattr__`` per field (half the time; a recording builds one
        record per site and pass)."""
        rec = object.__new__(cls)
        rec.__dict__.update(name=name, kind=kind, value=value, module_type=module_type,
                            order=order, stage=stage, block=block, call=call, firing=firing,
                            source=source, meta=meta)
        return rec

    @property
    def key(self) -> str:
        """``name`` for the first firing in a pass, ``name#k`` for the k-th further one."""
        return self.name if self.firing == 0 else f"{self.name}#{self.firing}"

    @property
    def label(self) -> str:
        """Short label for plots: ``s3b0 spatial`` (or the name when no stage is known)."""
        if self.stage is None:
            return f"{self.key} {self.kind}"
        extra = f"#{self.firing}" if self.firing else ""
        return f"s{self.stage}b{self.block if self.block is not None else 0}{extra} {self.kind}"


class RecordSet:
    """Read-only access to a list of records: ``.channel``, ``.spatial``, ... by kind."""

    def __init__(self, records: Sequence[AttentionRecord] = ()) -> None:
        self.records: list[AttentionRecord] = list(records)

    def by_kind(self, kind: str) -> dict[str, torch.Tensor]:
        """``{key: tensor}`` for one kind, in model order. Several forward passes are
        concatenated along the batch axis; passes whose shapes differ (another image size)
        cannot be, and raise: read them one at a time with :meth:`passes`."""
        if kind not in KINDS:
            raise ParameterError(f"unknown attention kind {kind!r}; choose from {KINDS}")
        grouped: dict[str, list[torch.Tensor]] = {}
        for r in sorted(self.records, key=lambda r: (r.order, r.firing, r.call)):
            if r.kind == kind:
                grouped.setdefault(r.key, []).append(r.value)
        out = {}
        for k, v in grouped.items():
            if len(v) > 1 and len({t.shape[1:] for t in v}) > 1:
                raise ParameterError(
                    f"{k!r} was recorded at different sizes in one recording "
                    f"({', '.join(str(tuple(t.shape)) for t in v)}); read each forward pass "
                    "with rec.passes()"
                )
            out[k] = v[0] if len(v) == 1 else torch.cat(v, 0)
        return out

    @property
    def channel(self) -> dict[str, torch.Tensor]:
        """Channel weights s(c): ``{name: (B, C)}``."""
        return self.by_kind("channel")

    @property
    def spatial(self) -> dict[str, torch.Tensor]:
        """Spatial masks A: ``{name: (B, H, W)}``."""
        return self.by_kind("spatial")

    @property
    def radix(self) -> dict[str, torch.Tensor]:
        """Split-attention (mixing) weights: ``{name: (B, R, C)}``, summing to 1 over R."""
        return self.by_kind("radix")

    @property
    def paths(self) -> dict[str, torch.Tensor]:
        """Selective-kernel path weights: ``{name: (B, P, C)}``, summing to 1 over P."""
        return self.by_kind("paths")

    @property
    def context(self) -> dict[str, torch.Tensor]:
        """Global-context pooling weights: ``{name: (B, H, W)}``, summing to 1 over H·W."""
        return self.by_kind("context")

    @property
    def gates(self) -> dict[str, torch.Tensor]:
        """Other gates in the shape the network multiplied by: ``{name: (B, C, H, 1) | ...}``."""
        return self.by_kind("gate")

    @property
    def attention(self) -> dict[str, torch.Tensor]:
        """Attention maps: ``{name: (B, heads, Q, K)}``, rows summing to 1 over K."""
        return self.by_kind("attention")

    def passes(self) -> list[RecordSet]:
        """One :class:`RecordSet` per forward pass, in order."""
        calls: dict[int, list[AttentionRecord]] = {}
        for r in self.records:
            calls.setdefault(r.call, []).append(r)
        return [RecordSet(calls[c]) for c in sorted(calls)]

    def latest(self) -> list[AttentionRecord]:
        """The records of the last forward pass, in model order."""
        last: dict[tuple[str, str], AttentionRecord] = {}
        for r in self.records:
            last[r.key, r.kind] = r
        return sorted(last.values(), key=lambda r: (r.order, r.firing))

    def cpu(self) -> RecordSet:
        """A new :class:`RecordSet` of the same records with every tensor on the CPU (they stay
        on the model's device until then); this one is left as it is."""
        return RecordSet([replace(r, value=r.value.cpu()) for r in self.records])

    def summary(self) -> str:
        """``channel=16, spatial=8`` (layers per kind), or ``empty``."""
        counts: dict[str, set[str]] = {}
        for r in self.records:
            counts.setdefault(r.kind, set()).add(r.key)
        return ", ".join(f"{k}={len(counts[k])}" for k in KINDS if k in counts) or "empty"

    def __iter__(self) -> Iterator[AttentionRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"RecordSet({len(self.records)} records: {self.summary()})"

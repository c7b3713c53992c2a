"""``record(model, queries=...)``: keep only the chosen query rows of attention maps.

Most people look at one row of an attention map — the class token's, or the pixel they
clicked — not all Q×K. With ``queries`` the recorder keeps only those rows (``meta["queries"]``
lists their indices); where it computes the weights itself (fused
``F.scaled_dot_product_attention``) it computes only those rows, never the full map.

    record(model, queries="cls")               # row 0 (a class token)
    record(model, queries=[0, 5])              # rows by index
    record(model, queries=[(3, 4)])            # the query at pixel (row 3, col 4) of its grid
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ParameterError


@dataclass(frozen=True)
class QuerySpec:
    """Which query rows to keep: the class token, indices, or pixels of the query grid."""

    text: str
    cls: bool = False
    indices: tuple[int, ...] = ()
    pixels: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, spec: Any) -> QuerySpec | None:
        """``None``, ``"cls"``, an index, a list of indices or a list of ``(row, col)`` pixels.

        Raises:
            ParameterError: anything else.
        """
        if spec is None or isinstance(spec, QuerySpec):
            return spec
        if spec == "cls":
            return cls("cls", cls=True)
        if isinstance(spec, int) and not isinstance(spec, bool):
            return cls(str(spec), indices=(spec,))
        if isinstance(spec, Sequence) and not isinstance(spec, str) and spec:
            if all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
                return cls(repr(list(spec)), indices=tuple(spec))
            if all(isinstance(p, Sequence) and len(p) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in p) for p in spec):
                return cls(repr(list(spec)), pixels=tuple((int(r), int(c)) for r, c in spec))
        raise ParameterError(f"queries must be 'cls', an index, a list of indices or a list of "
                             f"(row, col) pixels, got {spec!r}")

    def rows(self, q: int, grid: tuple[int, int] | None) -> list[int] | None:
        """The row indices to keep of a map with ``q`` queries on ``grid`` (None: keep every
        row, e.g. pixels asked for but the queries are not the pixels of a known grid)."""
        if self.cls:
            return [0]
        if self.indices:
            rows = [i % q for i in self.indices if -q <= i < q]
            return rows or None
        if grid is None or grid[0] * grid[1] > q:
            return None
        prefix = q - grid[0] * grid[1]  # class / register tokens before the pixels
        rows = [prefix + r * grid[1] + c for r, c in self.pixels
                if 0 <= r < grid[0] and 0 <= c < grid[1]]
        return rows or None


def select(q: Tensor, mask: Tensor | None, is_causal: bool, rows: list[int] | None,
           n_keys: int) -> tuple[Tensor, Tensor | None, bool]:
    """SDPA's ``query``, ``attn_mask`` and ``is_causal`` for the kept ``rows`` only (a causal
    mask becomes an explicit one: row i keeps the keys up to its own position)."""
    if rows is None:
        return q, mask, is_causal
    idx = torch.tensor(rows, device=q.device)
    q = q.index_select(-2, idx)
    if mask is not None and mask.ndim >= 2 and mask.shape[-2] > 1:
        mask = mask.index_select(-2, idx.to(mask.device))
    if is_causal:
        keep = torch.arange(n_keys, device=q.device)[None] <= idx[:, None]
        if mask is None:
            mask = keep
        elif mask.dtype == torch.bool:
            mask = mask & keep
        else:
            mask = mask.masked_fill(~keep, float("-inf"))
    return q, mask, False


def keep_rows(spec: QuerySpec | None, value: Tensor, meta: dict[str, Any], owned: bool,
              ) -> tuple[Tensor, dict[str, Any], bool]:
    """An attention map ``(B, heads, Q, K)`` reduced to the rows ``spec`` keeps (an index copy:
    owned, needing no second copy), with ``meta["queries"]``; unchanged without a spec."""
    grid = meta.get("q_grid")
    rows = spec.rows(value.shape[2], tuple(grid) if grid else None) if spec else None
    if rows is None:
        return value, meta, owned
    idx = torch.tensor(rows, device=value.device)
    return value.index_select(2, idx), {**meta, "queries": rows}, True


__all__ = ["QuerySpec", "keep_rows", "select"]

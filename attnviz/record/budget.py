"""What a recording may hold, and what it left out: the memory budget, checked before a weight
is copied or computed, and sites dropped after an internal failure. Neither ever raises inside
the user's forward pass: both skip the site with one warning."""

from __future__ import annotations

import math
import warnings

DEFAULT_MAX_BYTES = 2 * 1024**3


class MemoryBudgetWarning(UserWarning):
    """Sites were skipped because recording them would exceed ``max_bytes``."""


class Budget:
    """Bytes held by one recording, and the sites it skipped.

    Args:
        max_bytes: the most bytes of records to hold.
        heads: ``"mean"`` stores one map per image instead of one per head.
        skipped: the recorder's list of skipped site names (appended to).
        problems: the recorder's list of problem messages (appended to).
    """

    def __init__(self, max_bytes: int, heads: str, skipped: list[str],
                 problems: list[str]) -> None:
        self.max_bytes, self.heads = max_bytes, heads
        self.skipped, self.problems = skipped, problems
        self.used = 0
        self.over = False
        self.message = ""  # the first over-budget warning
        self._failed: set[str] = set()

    def stored_bytes(self, kind: str, shape: tuple[int, ...]) -> int:
        """Bytes a float32 record of ``shape`` takes once stored (heads averaged if asked)."""
        numel = math.prod(shape)
        if kind == "attention" and self.heads == "mean" and len(shape) >= 4:
            numel //= shape[1]
        return numel * 4

    def admit(self, name: str, kind: str, shape: tuple[int, ...]) -> bool:
        """May a weight of ``shape`` made at ``name`` be kept? Over the budget it is skipped, and
        the first skip warns once."""
        nbytes = self.stored_bytes(kind, shape)
        if self.used + nbytes <= self.max_bytes:
            return True
        if name not in self.skipped:
            self.skipped.append(name)
        if not self.over:
            self.over = True
            msg = (f"recording {name!r} ({kind} {tuple(shape)}, {nbytes / 2**20:.1f} MiB) would "
                   f"hold {(self.used + nbytes) / 2**20:.1f} MiB of records, over max_bytes="
                   f"{self.max_bytes / 2**20:.1f} MiB: it and any further site over the budget "
                   "are skipped (see rec.skipped); record fewer layers (layers=...), average "
                   "attention heads (heads='mean'), use smaller images, or raise max_bytes")
            self.message = msg
            self.problems.append(msg)
            warnings.warn(msg, MemoryBudgetWarning, stacklevel=4)
        return False

    def failed(self, name: str, error: Exception) -> None:
        """An internal failure at ``name``: drop that site with one warning."""
        if name in self._failed:
            return
        self._failed.add(name)
        msg = (f"attnviz could not record {name or '(model)'!r} ({type(error).__name__}: "
               f"{error}); that site is left out of this recording, the forward pass is unchanged")
        self.skipped.append(name)
        self.problems.append(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def reset(self) -> None:
        """Forget what is held (``Recorder.clear``)."""
        self.used = 0
        self.over = False

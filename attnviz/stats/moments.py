"""Streaming count, mean and variance per group, in constant memory and on the data's device.

A batch's per-group count, mean and sum of squared deviations (M2) are computed in one pass
with ``index_add_`` and merged into the running state with the pairwise formula of Chan, Golub
and LeVeque (1979), the batch form of Welford's update:

    δ = mean_b − mean_a,   n = n_a + n_b
    mean = mean_a + δ · n_b / n,   M2 = M2_a + M2_b + δ² · n_a · n_b / n

Everything is float64, so the order in which batches (or processes) are merged changes the
result only in the last bits.
"""
from __future__ import annotations

import torch
from torch import Tensor

DTYPE = torch.float64


class Moments:
    """Count ``n`` (groups,), ``mean`` and ``m2`` (groups, *shape) of a stream of values."""

    def __init__(self, groups: int, shape: tuple[int, ...], device: torch.device | str = "cpu"):
        self.groups, self.shape = int(groups), tuple(int(s) for s in shape)
        self.n = torch.zeros(self.groups, dtype=DTYPE, device=device)
        self.mean = torch.zeros((self.groups, *self.shape), dtype=DTYPE, device=device)
        self.m2 = torch.zeros_like(self.mean)

    def col(self, t: Tensor) -> Tensor:
        """(groups,) → (groups, 1, ..., 1) to broadcast against ``mean``."""
        return t.view(-1, *([1] * len(self.shape)))

    def update(self, x: Tensor, group: Tensor | None = None) -> None:
        """Add ``x`` (B, *shape), one row per image, to group ``group[i]`` (all to group 0
        when None)."""
        b = x.shape[0]
        if b == 0:
            return
        x = x.detach().to(DTYPE).reshape(b, *self.shape)
        if group is None or self.groups == 1:  # one group: plain reductions, fewer kernels
            mean_b = x.mean(0, keepdim=True)
            dev = x - mean_b
            self.merge(torch.full_like(self.n, b), mean_b, (dev * dev).sum(0, keepdim=True))
            return
        # per group Σx and Σx² in one index_add; within one batch (values of order 1, float64)
        # M2 = Σx² − n·mean² loses nothing that matters, and batches merge with Chan's formula
        n_b = torch.bincount(group, minlength=self.groups).to(DTYPE)
        both = torch.zeros((self.groups, 2, *self.shape), dtype=DTYPE, device=x.device)
        both.index_add_(0, group, torch.stack([x, x * x], 1))
        mean_b = both[:, 0] / self.col(n_b.clamp_min(1))
        m2_b = (both[:, 1] - self.col(n_b) * mean_b * mean_b).clamp_min(0)
        self.merge(n_b, mean_b, m2_b)

    def merge(self, n_b: Tensor, mean_b: Tensor, m2_b: Tensor) -> None:
        """Chan's merge of another state's ``(n, mean, m2)`` into this one."""
        n = self.n + n_b
        safe = n.clamp_min(1)
        delta = mean_b - self.mean
        self.mean += delta * self.col(n_b / safe)
        self.m2 += m2_b + delta * delta * self.col(self.n * n_b / safe)
        self.n = n

    @property
    def var(self) -> Tensor:
        """Population variance M2 / n (NaN for a group without values)."""
        return self.m2 / self.col(self.n).where(self.col(self.n) > 0, torch.nan)

    def total(self) -> Moments:
        """All groups merged into one."""
        out = Moments(1, self.shape, self.n.device)
        n = self.n.sum()
        out.n = n.view(1)
        if n > 0:
            mean = (self.col(self.n) * self.mean).sum(0) / n
            out.mean = mean[None]
            out.m2 = (self.m2 + self.col(self.n) * (self.mean - mean) ** 2).sum(0)[None]
        return out

    def tensors(self) -> dict[str, Tensor]:
        """The state, for checkpoints."""
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    def load(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`tensors` (shapes must match)."""
        for name in ("n", "mean", "m2"):
            value = state[name].to(device=self.n.device, dtype=DTYPE)
            if value.shape != getattr(self, name).shape:
                raise ValueError(f"{name}: shape {tuple(value.shape)} in the saved state, "
                                 f"{tuple(getattr(self, name).shape)} expected")
            setattr(self, name, value.clone())

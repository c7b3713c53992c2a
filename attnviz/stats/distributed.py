"""One process or many: ``torch.distributed`` set up from torchrun's environment, the share of
the data each process reads, and the collectives that merge the partial aggregates.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` set) the process group is
created with gloo for the CPU and NCCL for CUDA; without it everything runs in this process.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

from ..processes import die_with_parent
from .moments import Moments


def launched() -> bool:
    """True inside a process started by torchrun (or another launcher setting its variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def env_rank() -> int:
    """This process's rank from the launcher's environment (0 without one)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes (``local_rank`` on
    its machine) and the collective ``backend`` (None: one process, nothing to merge)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False

    @classmethod
    def start(cls, device_type: str, timeout_s: float = 1800.0) -> Dist:
        """Join the launcher's process group (or use one already set up)."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())
        if not launched():
            return cls()
        die_with_parent()  # a launcher killed (even by SIGKILL) takes its workers with it
        local = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), local, backend, owned=True)

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def main(self) -> bool:
        """True on the process that writes the aggregates (rank 0)."""
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group if this object created it."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum_(self, tensors: Sequence[Tensor]) -> None:
        """Sum each tensor over the processes, in place (one collective for all)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        _unflatten(flat, tensors)

    def merge_moments_(self, moments: Sequence[Moments]) -> None:
        """Merge every process's :class:`Moments` into the run's, in place: sums of n and
        n·mean give the mean, then Σ M2_r + n_r (mean_r − mean)² the M2 (two collectives)."""
        if not self.active or not moments:
            return
        ns = [m.n.clone() for m in moments]
        sums = [m.mean * m.col(m.n) for m in moments]
        self.sum_(ns + sums)
        means = [s / m.col(n.clamp_min(1)) for m, n, s in zip(moments, ns, sums, strict=True)]
        m2 = [m.m2 + m.col(m.n) * (m.mean - mean) ** 2
              for m, mean in zip(moments, means, strict=True)]
        self.sum_(m2)
        for m, n, mean, q in zip(moments, ns, means, m2, strict=True):
            m.n, m.mean, m.m2 = n, mean, q


def _unflatten(flat: Tensor, tensors: Sequence[Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


class UnpaddedSampler(Sampler):
    """This rank's share of ``n`` items as ``(position, index)`` pairs: the indices of
    :class:`~torch.utils.data.DistributedSampler` (in order, not shuffled) without the
    repeated items it pads the last round with, so no item is counted twice. ``start`` skips
    the first positions (``--resume``)."""

    def __init__(self, n: int, rank: int, world: int, start: int = 0) -> None:
        self.n, self.rank, self.world, self.start = n, rank, world, start

    def real(self) -> int:
        """How many items this rank reads in all (its share without padding)."""
        return len(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return max(0, self.real() - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # DistributedSampler(shuffle=False) gives rank r the indices r, r + world, ... (then
        # padding); computed here one at a time instead of as a list of all n indices
        for pos in range(self.start, self.real()):
            yield pos, self.rank + pos * self.world

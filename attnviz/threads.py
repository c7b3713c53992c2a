"""How many CPU threads attnviz's work uses: one rule for every command and notebook.

Machines people use are busy (a browser, a kernel, other jobs). PyTorch's default, one
intra-op thread per core, collapses when another process holds a core: its threads wait for
each other at every operation (a 1,000-image report took 13.8–100 s with 2 threads against
4.3 s with one while the machine's other core was busy). The rule:

    threads = max(1, min(cores, cores - round(load average over the last minute)))

i.e. only the cores nobody else is using, and never fewer than one — on an idle 8-core
machine all 8, on a 2-core laptop with a browser busy on one core, 1. ``--threads N``
(``threads=N``) sets it explicitly. ``benchmarks/threads.py`` measures the rule against 1 and
2 threads under a background load it starts itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .checks import check_int, cpu_count


def free_cores() -> int:
    """Cores not busy with other work: the CPU count minus the 1-minute load average
    (rounded), at least 1; the CPU count where the load average is unknown."""
    cores = cpu_count()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, cores - round(load)))


def apply(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, or :func:`free_cores` when None. Returns
    the number set.

    Raises:
        ParameterError: ``threads`` is not an integer from 1 to 1024.
    """
    n = free_cores() if threads is None else check_int("threads", threads, 1, 1024)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def using(threads: int | None = None, share: int = 1) -> Iterator[int]:
    """Run a block with :func:`apply`'s thread count (the free cores divided among ``share``
    processes of one run when ``threads`` is None), restoring the previous count after."""
    before = torch.get_num_threads()
    n = apply(threads if threads is not None else max(1, free_cores() // max(1, share)))
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def add_threads_argument(parser: object) -> None:
    """``--threads N`` for a command (default: the free cores, see :func:`free_cores`)."""
    parser.add_argument(  # type: ignore[attr-defined]
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads for the model (default: the cores not busy with other work, "
             "at least 1)")


__all__ = ["add_threads_argument", "apply", "free_cores", "using"]

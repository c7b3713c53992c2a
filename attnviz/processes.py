"""Processes that die with the one that started them (Linux), so a killed launcher never leaves
workers or servers behind."""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int | None = None, sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (even by SIGKILL);
    exit at once if ``parent`` (default: the parent now) is already gone. Returns whether the
    request was made (Linux only)."""
    parent = os.getppid() if parent is None else parent
    made = False
    if sys.platform.startswith("linux"):
        import ctypes

        made = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig)) == 0
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    return made


__all__ = ["die_with_parent"]

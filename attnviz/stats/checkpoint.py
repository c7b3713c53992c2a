"""Per-process partial sums on disk, for ``--resume``.

Every ``--save-every`` seconds each process writes ``rank-RRRRR-of-WWWWW.pt`` into the work
folder (atomically: a temporary file renamed over the old one): its aggregates, how far it got
in each stream of items, the unreadable images so far and the number of finished per-image
parts. Files are read back with ``torch.load(weights_only=True)``: tensors, numbers, strings,
lists and dicts only.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ParameterError

#: unreadable images listed per process (all are counted)
MAX_LISTED = 1000


@dataclass
class Progress:
    """How far one process got: ``done[stream]`` items of each stream (``""`` for a
    map-style dataset, a shard path for tar shards), the unreadable items, and the rest."""

    done: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)
    n_bad: int = 0
    n_seen: int = 0
    parts: int = 0
    seconds: float = 0.0

    def see(self, seen: list[tuple[str, int]], bad: list[tuple[str, str]]) -> None:
        """Account for one batch's items (``(stream, pos)``) and its unreadable ones."""
        for stream, pos in seen:
            self.done[stream] = max(self.done.get(stream, 0), pos + 1)
        self.n_seen += len(seen)
        self.n_bad += len(bad)
        room = MAX_LISTED - len(self.bad)
        if room > 0:
            self.bad.extend((str(n), str(r)) for n, r in bad[:room])


def checkpoint_path(work: Path, rank: int, world: int) -> Path:
    return work / f"rank-{rank:05d}-of-{world:05d}.pt"


def fingerprint(**facts: Any) -> str:
    """What must not change between a run and its ``--resume`` (as canonical JSON)."""
    return json.dumps(facts, sort_keys=True, default=str)


def save(path: Path, fp: str, progress: Progress, aggregate: dict) -> None:
    """Write one process's state atomically."""
    tmp = path.with_name(path.name + ".tmp")
    state = {"fingerprint": fp, "progress": asdict(progress), "aggregate": aggregate}
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, fp: str) -> tuple[Progress, dict] | None:
    """The saved ``(progress, aggregate state)``; None when there is no checkpoint.
    A checkpoint of another run (data, model, process count, ...) is a ParameterError."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ParameterError(f"cannot resume: {str(path)!r} is damaged ({e}); start again "
                             "without --resume") from None
    if state.get("fingerprint") != fp:
        old, new = json.loads(state.get("fingerprint") or "{}"), json.loads(fp)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ParameterError(f"cannot resume: the saved run differs in {', '.join(diff)}; "
                             "run with the same settings, or start again without --resume")
    p = state["progress"]
    progress = Progress(dict(p["done"]), [tuple(b) for b in p["bad"]], int(p["n_bad"]),
                        int(p["n_seen"]), int(p["parts"]), float(p["seconds"]))
    return progress, state["aggregate"]

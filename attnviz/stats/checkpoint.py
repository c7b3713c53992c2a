"""Per-process partial sums on disk, for ``--resume``.

Every ``--save-every`` seconds each process writes ``rank-RRRRR-of-WWWWW.pt`` into the work
folder (atomically: a temporary file renamed over the old one): its aggregates, how far it got
in each stream of items, the unreadable images so far and the number of finished per-image
parts. Files are read back with ``torch.load(weights_only=True)``: tensors, numbers, strings,
lists and dicts only.
"""
from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ParameterError
from ..terminal import one_line

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
    try:
        torch.save(state, tmp)
    except RuntimeError as e:  # torch's writer reports a failed write (a full disk) this way
        tmp.unlink(missing_ok=True)
        raise OSError(errno.EIO, f"writing the checkpoint failed ({one_line(e)[:200]})",
                      str(tmp)) from None
    os.replace(tmp, path)


#: how a difference in a fingerprint fact is named in the refusal
_FACTS = {"files": "its files (names, sizes or modification times: the data changed)"}


def refuse(path: Path, reason: str) -> ParameterError:
    """The error for a checkpoint that cannot be continued."""
    return ParameterError(f"cannot resume: {str(path)!r} {reason}; start again without "
                          "--resume")


def _count(value: Any, what: str, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is {value!r}, not a count")
    if high is not None and value > high:
        raise ValueError(f"{what} is {value}, more than the {high} items this process reads")
    return value


def _progress(p: Any, items: int | None) -> Progress:
    """The saved progress, checked: counts within the ``items`` this process reads."""
    done = {str(k): _count(v, f"done[{k!r}]", items) for k, v in dict(p["done"]).items()}
    n_seen = _count(p["n_seen"], "n_seen", items)
    n_bad = _count(p["n_bad"], "n_bad", n_seen)
    bad = [(str(n), str(r)) for n, r in p["bad"]]
    if len(bad) > min(n_bad, MAX_LISTED):
        raise ValueError(f"{len(bad)} unreadable images listed but {n_bad} counted")
    if sum(done.values()) != n_seen:
        raise ValueError(f"{sum(done.values())} items done but {n_seen} seen")
    seconds = float(p["seconds"])
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds is {seconds}")
    return Progress(done, bad, n_bad, n_seen, _count(p["parts"], "parts", None), seconds)


def restore(aggregate: Any, state: dict, progress: Progress, path: Path) -> None:
    """Load ``state`` into ``aggregate`` (an :class:`~attnviz.stats.aggregate.Aggregate`) and
    check it against ``progress``: a state that no run could have saved is a ParameterError."""
    try:
        aggregate.load(state)
        aggregate.check(progress.n_seen - progress.n_bad)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise refuse(path, f"holds an impossible state ({one_line(e)})") from None


def load(path: Path, fp: str, items: int | None = None) -> tuple[Progress, dict] | None:
    """The saved ``(progress, aggregate state)``; None when there is no checkpoint.
    A checkpoint of another run (data, model, process count, ...), or one whose progress is
    not possible for ``items`` items (None: not known), is a ParameterError."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise refuse(path, f"is damaged ({one_line(e)})") from None
    if not isinstance(state, dict):
        raise refuse(path, "is not a checkpoint of attnviz stats")
    if state.get("fingerprint") != fp:
        try:
            old = json.loads(state.get("fingerprint") or "{}")
        except (TypeError, ValueError):
            old = {}
        old = old if isinstance(old, dict) else {}
        new = json.loads(fp)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ParameterError(f"cannot resume: the saved run differs in "
                             f"{', '.join(_FACTS.get(k, k) for k in diff)}; run with the same "
                             "settings and data, or start again without --resume")
    try:
        progress = _progress(state["progress"], items)
        aggregate = state["aggregate"]
        if not isinstance(aggregate, dict):
            raise ValueError("its aggregate is not a table")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise refuse(path, f"holds an impossible state ({one_line(e)})") from None
    return progress, aggregate

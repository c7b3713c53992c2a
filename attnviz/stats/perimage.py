"""``--per-image``: one Parquet row per image and attention layer, one file per process.

Columns: ``image`` (path, ``shapes:i`` or ``shard.tar#key``; bytes that are not UTF-8
escaped as ``\\xe9``), ``index``, ``rank``, ``label``
(-1: none), ``pred``, ``prob``, ``layer``, ``kind`` and the features of
:data:`attnviz.stats.layers.FEATURES` (null where the kind has none). Rows are written in row
groups as they come, so no process holds its whole table; a process writes parts into the work
folder's ``parts/`` (a new one after every checkpoint, so a checkpoint always matches whole
parts) and at the end joins them into ``per_image/rank-RRRRR.parquet``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MissingDependencyError, ParameterError
from ..terminal import text_name
from .aggregate import BatchResult
from .layers import FEATURES

ROW_GROUP = 65_536


def _pa() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("--per-image needs pyarrow, which is not installed: "
                                     "pip install 'attnviz[stats]'") from None
    return pa, pq


def schema() -> Any:
    """The Parquet schema of the rows."""
    pa, _ = _pa()
    fields = [("image", pa.string()), ("index", pa.int64()), ("rank", pa.int32()),
              ("label", pa.int32()), ("pred", pa.int32()), ("prob", pa.float32()),
              ("layer", pa.string()), ("kind", pa.string())]
    return pa.schema(fields + [(f, pa.float32()) for f in FEATURES])


def part_path(folder: Path, rank: int, part: int) -> Path:
    return folder / f"rank-{rank:05d}.part-{part:05d}.parquet"


def final_path(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.parquet"


class RowWriter:
    """Buffers rows and writes them as part files of this ``rank`` into ``folder``; parts
    from ``part`` on (written after the last checkpoint) are removed first."""

    def __init__(self, folder: Path, rank: int, part: int = 0) -> None:
        _pa()
        self.folder, self.rank, self.part = folder, rank, part
        self.folder.mkdir(parents=True, exist_ok=True)
        missing = [p for p in range(part) if not part_path(folder, rank, p).is_file()]
        if missing:
            raise ParameterError(f"cannot resume: per-image part {missing[0]} of process "
                                 f"{rank} is missing from {str(folder)!r}; start again "
                                 "without --resume")
        for p in folder.glob(f"rank-{rank:05d}.part-*.parquet"):
            if int(p.stem.rsplit("-", 1)[1]) >= part:
                p.unlink()
        self._cols: dict[str, list[np.ndarray]] = {}
        self._rows = 0
        self._writer: Any = None

    def add(self, names: list[str], index: torch.Tensor, labels: torch.Tensor,
            result: BatchResult) -> None:
        """The rows of one batch: its layers' features come to the CPU in one copy."""
        b, nf = len(names), len(FEATURES)
        if not result.layers or b == 0:
            return
        dev = result.pred.device
        full = torch.full((len(result.layers), nf, b), float("nan"), device=dev)
        for i, (acc, feats) in enumerate(result.layers):
            rows = [FEATURES.index(f) for f in acc.features]
            full[i, rows] = feats.float()
        head = torch.stack([result.pred.float(), result.prob.float()])
        host = torch.cat([head, full.flatten(0, 1)]).cpu().numpy()
        pred, prob, feats = host[0], host[1], host[2:].reshape(len(result.layers), nf, b)
        n_layers = len(result.layers)
        cols = {
            "image": np.tile(np.asarray([text_name(n) for n in names], dtype=object), n_layers),
            "index": np.tile(index.numpy(), n_layers),
            "rank": np.full(b * n_layers, self.rank, dtype=np.int32),
            "label": np.tile(labels.numpy().astype(np.int32), n_layers),
            "pred": np.tile(pred.astype(np.int32), n_layers),
            "prob": np.tile(prob, n_layers),
            "layer": np.repeat(np.asarray([a.spec.key for a, _ in result.layers], object), b),
            "kind": np.repeat(np.asarray([a.spec.kind for a, _ in result.layers], object), b),
        }
        for j, f in enumerate(FEATURES):
            cols[f] = feats[:, j, :].reshape(-1)
        for k, v in cols.items():
            self._cols.setdefault(k, []).append(v)
        self._rows += b * n_layers
        if self._rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        pa, pq = _pa()
        sch = schema()
        arrays = []
        for f in sch:
            v = np.concatenate(self._cols[f.name])
            mask = np.isnan(v) if v.dtype.kind == "f" else None
            arrays.append(pa.array(v, type=f.type, mask=mask))
        if self._writer is None:
            self._writer = pq.ParquetWriter(part_path(self.folder, self.rank, self.part), sch)
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=sch))
        self._cols, self._rows = {}, 0

    def close_part(self) -> int:
        """Finish the current part file (at a checkpoint); returns the parts finished so far."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self.part += 1
        return self.part

    def finish(self, target: Path) -> Path:
        """Join this rank's parts into ``target/rank-RRRRR.parquet`` (row group by row group,
        via a temporary file; an empty file with the schema when there were no rows). The
        parts stay until the work folder goes, so a crash here can still be resumed."""
        _, pq = _pa()
        parts = [part_path(self.folder, self.rank, p) for p in range(self.close_part())]
        target.mkdir(parents=True, exist_ok=True)
        out = final_path(target, self.rank)
        tmp = out.with_name(f".{out.name}.tmp")
        with pq.ParquetWriter(tmp, schema()) as writer:
            for p in parts:
                f = pq.ParquetFile(p)
                for g in range(f.num_row_groups):
                    writer.write_table(f.read_row_group(g))
        os.replace(tmp, out)
        return out

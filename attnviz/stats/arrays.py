"""Arrays inside ``stats.json``: ``{"dtype", "shape", "data"}`` with the little-endian bytes
of the array in base64 (4 bytes a float instead of ~12 characters of decimal text, so a
1000-class model's class-by-channel means stay a few tens of MB)."""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

DTYPES = ("float32", "float64", "int64")


def encode(value: torch.Tensor | np.ndarray | list, dtype: str = "float32") -> dict[str, Any]:
    """An array as a JSON object (NaN allowed: it stands for "no value")."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if dtype == "int64":
        arr = np.rint(np.nan_to_num(arr))
    arr = np.ascontiguousarray(arr.astype(np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode(obj: dict[str, Any]) -> np.ndarray:
    """The numpy array of an :func:`encode`\\ d object."""
    dtype = np.dtype(obj["dtype"]).newbyteorder("<")
    raw = base64.b64decode(obj["data"], validate=True)
    shape = tuple(int(s) for s in obj["shape"])
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError(f"array data holds {len(raw)} bytes, not {shape} of {obj['dtype']}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def decode_all(doc: Any) -> Any:
    """``doc`` with every encoded array replaced by its numpy array (recursively)."""
    if isinstance(doc, dict):
        if set(doc) == {"dtype", "shape", "data"}:
            return decode(doc)
        return {k: decode_all(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [decode_all(v) for v in doc]
    return doc

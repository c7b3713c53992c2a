"""Reading weights safely: safetensors first, pickles only with ``weights_only=True``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..terminal import one_line
from .preprocess import InputSpec

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
#: Most bytes the members of a checkpoint archive (torch's zip format) may declare in all.
MAX_CHECKPOINT_BYTES = 16 * 2**30
#: torch writes its archives uncompressed: members may declare at most this many times the
#: file's size (plus a MiB), else the file is a zip bomb and is refused before any inflating.
MAX_EXPANSION = 2


def check_archive_size(p: Path) -> None:
    """Refuse a zip checkpoint whose members declare more than :data:`MAX_CHECKPOINT_BYTES`
    or more than :data:`MAX_EXPANSION` times the file's size, from its directory alone
    (nothing is inflated). Other files (legacy pickles) are left to ``torch.load``.

    Args:
        p: the checkpoint file.
    """
    import zipfile

    from ..checks import size_text

    try:
        if not zipfile.is_zipfile(p):
            return
        with zipfile.ZipFile(p) as z:
            declared = sum(i.file_size for i in z.infolist())
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(p)!r} is a damaged archive: "
                              f"{one_line(e)}") from None
    size = p.stat().st_size
    if declared > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"checkpoint {str(p)!r} declares {size_text(declared)} of data, more than the "
            f"{size_text(MAX_CHECKPOINT_BYTES)} allowed; refused before reading it")
    if declared > MAX_EXPANSION * size + 2**20:
        raise CheckpointError(
            f"checkpoint {str(p)!r} declares {size_text(declared)} of data in a "
            f"{size_text(size)} file (torch stores tensors uncompressed: a zip bomb?); "
            "refused before reading it")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file. Pickles go through ``torch.load(weights_only=True)``,
    which refuses any object that would run code when loaded."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a file")
    if p.suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises several types for a bad header
            raise CheckpointError(
                f"checkpoint {str(p)!r} is not a valid safetensors file: {e}"
            ) from None
    if p.suffix in PICKLE_SUFFIXES:
        check_archive_size(p)
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            first = one_line(str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {str(p)!r} was refused: it is not a plain tensor file that loads with "
                f"weights_only=True ({first}). Convert trusted files to .safetensors."
            ) from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"checkpoint {str(p)!r} does not hold a state dict of tensors")
        _check_plain_tensors(obj, p)
        return obj
    raise CheckpointError(
        f"checkpoint {str(p)!r}: unsupported file type {p.suffix!r}; "
        f"use {SAFE_SUFFIXES + PICKLE_SUFFIXES}"
    )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors header (empty for other files)."""
    p = Path(path)
    if p.suffix not in SAFE_SUFFIXES or not p.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is not a valid safetensors file: {e}"
        ) from None


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" … (+{len(keys) - n} more)" if len(keys) > n else "")


def _check_plain_tensors(state: dict, p: Path) -> None:
    """Refuse non-string keys and tensors that are not plain (dense, on a real device)."""
    bad_keys = [repr(k) for k in state if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has keys that are not parameter names (strings): "
            f"{_short(bad_keys)}")
    odd = [f"{k} ({'meta' if v.is_meta else v.layout})" for k, v in state.items()
           if v.is_meta or v.layout != torch.strided]
    if odd:
        raise CheckpointError(
            f"checkpoint {str(p)!r} holds tensors without plain dense data (sparse, meta, ...): "
            f"{_short(odd)}")


def _check_values(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                  path: str | os.PathLike) -> None:
    """Refuse dtypes that would be converted silently (int8/uint8/bool/complex into a float
    parameter) and non-finite floating weights."""
    wrong = sorted(f"{k}: {str(v.dtype).removeprefix('torch.')}" for k, v in state.items()
                   if own[k].is_floating_point() and not v.is_floating_point())
    if wrong:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has tensors of the wrong kind of number (a float "
            f"parameter needs a float tensor; int, bool and complex are refused): {_short(wrong)}")
    bad = sorted(k for k, v in state.items()
                 if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has NaN or infinite values in {len(bad)} tensor(s): "
            f"{_short(bad)}")
    overflow = sorted(f"{k} ({str(v.dtype).removeprefix('torch.')} to "
                      f"{str(own[k].dtype).removeprefix('torch.')})" for k, v in state.items()
                      if v.is_floating_point() and v.dtype != own[k].dtype
                      and not bool(torch.isfinite(v.to(own[k].dtype)).all()))
    if overflow:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has values too large for the model's precision (they "
            f"would become infinite) in {len(overflow)} tensor(s): {_short(overflow)}")


def read_class_names(path: str | os.PathLike) -> list[str] | None:
    """Class names stored in a safetensors header (``classes``: a JSON list of strings), or
    None when there are none; anything else there is a CheckpointError."""
    raw = read_metadata(path).get("classes")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its 'classes' metadata is not a JSON list of names "
            f"(got {one_line(raw)[:80]!r})")
    return names


def read_preprocess(path: str | os.PathLike) -> InputSpec | None:
    """The preprocessing a model was trained with, stored in a safetensors header by
    :func:`save_weights` (``input``: ``{"size", "mean", "std"}``, mean / std null when the model
    takes [0, 1] images as they are); None when there is none."""
    raw = read_metadata(path).get("input")
    if raw is None:
        return None
    try:
        d = json.loads(raw)
        size = int(d["size"])
        mean = None if d.get("mean") is None else tuple(float(v) for v in d["mean"])
        std = None if d.get("std") is None else tuple(float(v) for v in d["std"])
        ok = 8 <= size <= 8192 and (mean is None) == (std is None) and all(
            len(v) == 3 and all(math.isfinite(x) for x in v) for v in (mean, std) if v is not None)
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise CheckpointError(f"checkpoint {str(path)!r}: its 'input' metadata is not "
                              f"{{size, mean, std}} (got {one_line(raw)[:80]!r})")
    return InputSpec(size, mean, std)


_WRAPPERS = ("module.", "model.", "_orig_mod.")  # DataParallel/DDP, Lightning, torch.compile


def _unwrap(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict:
    """Strip the key prefixes wrappers add, while every key carries one the model lacks."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPERS:
            if all(k.startswith(prefix) for k in state) and not any(
                    k.startswith(prefix) for k in own):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                changed = True
    return state


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a mismatch lists missing and unexpected keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    state = _unwrap(state, own)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches ({len(wrong_shape)}): {_short(wrong_shape)}")
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    _check_values(state, own, path)
    cast = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(cast, strict=True)
    return model


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: dict[str, object] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model``'s state dict as safetensors (optionally fp16) with JSON-able metadata;
    the model's preprocessing (``input``) and class names (``classes``) go with it unless
    ``metadata`` sets them."""
    from safetensors.torch import save_file

    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    meta_in: dict[str, object] = dict(metadata or {})
    spec = getattr(model, "attnviz_input", None)  # the preprocessing travels with the weights
    if isinstance(spec, InputSpec):
        meta_in.setdefault("input", {"size": spec.size, "mean": spec.mean, "std": spec.std})
    names = getattr(model, "class_names", None)
    if names:
        meta_in.setdefault("classes", list(names))
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta_in.items()}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(p), metadata=meta)
    return p

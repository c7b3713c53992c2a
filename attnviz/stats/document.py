"""``stats.json``: building it from the merged aggregates, its JSON schema, reading it back.

Arrays are ``{"dtype", "shape", "data"}`` objects (see :mod:`attnviz.stats.arrays`);
:func:`read_stats` returns the document with numpy arrays in their place. Variances are
population variances (M2 / n) over images.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ..terminal import one_line
from . import arrays
from .aggregate import Aggregate
from .moments import Moments

FORMAT = "attnviz-stats"
VERSION = 1


def moments_json(m: Moments) -> dict[str, Any]:
    """``{groups, n, mean, var}``, and ``total`` (all groups merged) when there are groups."""
    out = {"groups": m.groups, "n": arrays.encode(m.n, "int64"),
           "mean": arrays.encode(m.mean), "var": arrays.encode(m.var)}
    if m.groups > 1:
        out["total"] = moments_json(m.total())
    return out


def layers_json(agg: Aggregate) -> list[dict[str, Any]]:
    """One object per layer, in model order."""
    out = []
    for spec in agg.specs():
        acc = agg.layers[spec.key, spec.kind]
        out.append({**spec.to_json(), "features": list(acc.features),
                    "moments": {k: moments_json(m) for k, m in sorted(acc.moments.items())},
                    "sums": {k: arrays.encode(t) for k, t in sorted(acc.sums.items())}})
    return out


def classes_json(agg: Aggregate) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``classes`` and ``accuracy`` sections."""
    c = agg.counts
    classes = {"grouping": agg.classes.grouping, "mapping": agg.classes.mapping,
               "names": list(agg.classes.names),
               **{k: arrays.encode(c[k], "int64") for k in ("images", "labelled", "correct")}}
    n, correct = int(c["labelled"].sum().item()), int(c["correct"].sum().item())
    accuracy = {"top1": correct / n if n else None, "labelled": n, "correct": correct,
                "unlabelled": int(c["unlabelled"].item())}
    return classes, accuracy


def build(agg: Aggregate, *, model: dict, data: dict, run: dict,
          per_image: dict | None) -> dict[str, Any]:
    """The whole document (``data``, ``model``, ``run`` are filled in by the caller)."""
    from .. import __version__

    classes, accuracy = classes_json(agg)
    return {"format": FORMAT, "version": VERSION, "attnviz": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model, "data": data, "run": run, "classes": classes,
            "accuracy": accuracy, "layers": layers_json(agg), "per_image": per_image}


def read_stats(path: str | os.PathLike) -> dict[str, Any]:
    """A ``stats.json`` (or the folder holding it) with its arrays decoded to numpy."""
    p = Path(path)
    if p.is_dir():
        p = p / "stats.json"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ParameterError(f"cannot read {str(p)!r}: {one_line(e)}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ParameterError(f"{str(p)!r} is not an attnviz stats.json")
    if doc.get("version") != VERSION:
        raise ParameterError(f"{str(p)!r} has version {doc.get('version')!r}; this attnviz "
                             f"reads version {VERSION}")
    try:
        return arrays.decode_all(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ParameterError(f"{str(p)!r} holds a damaged array ({type(e).__name__}: "
                             f"{one_line(e)})") from None


# -- the schema (JSON Schema draft 2020-12) ------------------------------------------------------
_ARRAY = {"type": "object", "additionalProperties": False,
          "required": ["dtype", "shape", "data"],
          "properties": {"dtype": {"enum": list(arrays.DTYPES)},
                         "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                         "data": {"type": "string", "contentEncoding": "base64"}}}
_MOMENTS = {"type": "object", "additionalProperties": False,
            "required": ["groups", "n", "mean", "var"],
            "properties": {"groups": {"type": "integer", "minimum": 1},
                           "n": {"$ref": "#/$defs/array"}, "mean": {"$ref": "#/$defs/array"},
                           "var": {"$ref": "#/$defs/array"}, "total": {"$ref": "#/$defs/moments"}}}
_GRID = {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
_LAYER = {"type": "object", "additionalProperties": False,
          "required": ["key", "name", "kind", "shape", "module_type", "order", "q_grid", "k_grid",
                       "features", "moments", "sums"],
          "properties": {
              "key": {"type": "string"}, "name": {"type": "string"},
              "kind": {"enum": ["channel", "spatial", "radix", "paths", "context", "gate",
                                "attention"]},
              "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
              "module_type": {"type": "string"}, "order": {"type": "integer"},
              "q_grid": _GRID, "k_grid": _GRID,
              "partition": {"type": ["object", "null"],
                            "additionalProperties": {"type": "array",
                                                     "items": {"type": "integer"}}},
              "features": {"type": "array", "items": {"type": "string"}},
              "moments": {"type": "object", "required": ["features"],
                          "additionalProperties": {"$ref": "#/$defs/moments"}},
              "sums": {"type": "object", "additionalProperties": {"$ref": "#/$defs/array"}}}}
_NAMED = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": ["image", "reason"],
    "properties": {"image": {"type": "string"}, "reason": {"type": "string"}}}}
_COUNT = {"type": "integer", "minimum": 0}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "attnviz stats.json",
    "type": "object",
    "required": ["format", "version", "attnviz", "created", "model", "data", "run", "classes",
                 "accuracy", "layers", "per_image"],
    "properties": {
        "format": {"const": FORMAT}, "version": {"const": VERSION},
        "attnviz": {"type": "string"}, "created": {"type": "string"},
        "model": {"type": "object", "required": ["name", "checkpoint", "input_size", "outputs"],
                  "properties": {"name": {"type": "string"},
                                 "checkpoint": {"type": ["string", "null"]},
                                 "input_size": {"type": "integer", "minimum": 1},
                                 "outputs": {"type": ["integer", "null"], "minimum": 1},
                                 "output_kind": {"enum": ["classifier", "dense", "none"]},
                                 "random_weights": {"type": "boolean"}}},
        "data": {"type": "object", "required": ["kind", "spec", "n_items", "n_images", "n_bad",
                                                "bad", "skipped", "ground_truth"],
                 "properties": {"kind": {"enum": ["imagefolder", "files", "shapes",
                                                  "webdataset"]},
                                "spec": {"type": "array", "items": {"type": "string"}},
                                "n_items": _COUNT, "n_images": _COUNT, "n_bad": _COUNT,
                                "bad": _NAMED, "ground_truth": {"type": "boolean"},
                                "skipped": {"type": "array", "items": {
                                    "type": "array", "items": {"type": "string"},
                                    "minItems": 2, "maxItems": 2}}}},
        "run": {"type": "object", "required": ["world_size", "backend", "device", "amp",
                                               "batch_size", "seconds", "images_per_s",
                                               "resumed"],
                "properties": {"world_size": {"type": "integer", "minimum": 1},
                               "backend": {"enum": ["gloo", "nccl", None]},
                               "device": {"type": "string"}, "amp": {"type": "boolean"},
                               "batch_size": {"type": "integer", "minimum": 1},
                               "seconds": {"type": "number", "minimum": 0},
                               "images_per_s": {"type": "number", "minimum": 0},
                               "resumed": {"type": "boolean"}}},
        "classes": {"type": "object", "additionalProperties": False,
                    "required": ["grouping", "mapping", "names", "images", "labelled", "correct"],
                    "properties": {"grouping": {"enum": ["label", "prediction", "single"]},
                                   "mapping": {"type": ["string", "null"]},
                                   "names": {"type": "array", "items": {"type": "string"}},
                                   "images": {"$ref": "#/$defs/array"},
                                   "labelled": {"$ref": "#/$defs/array"},
                                   "correct": {"$ref": "#/$defs/array"}}},
        "accuracy": {"type": "object", "additionalProperties": False,
                     "required": ["top1", "labelled", "correct", "unlabelled"],
                     "properties": {"top1": {"type": ["number", "null"], "minimum": 0,
                                             "maximum": 1},
                                    "labelled": _COUNT, "correct": _COUNT, "unlabelled": _COUNT}},
        "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}},
        "per_image": {"oneOf": [{"type": "null"}, {
            "type": "object", "additionalProperties": False,
            "required": ["files", "rows", "columns"],
            "properties": {"files": {"type": "array", "items": {"type": "string"}},
                           "rows": _COUNT,
                           "columns": {"type": "array", "items": {"type": "string"}}}}]},
    },
    "$defs": {"array": _ARRAY, "moments": _MOMENTS, "layer": _LAYER},
}

"""Your own model: ``path/to/file.py:factory`` or ``package.module:factory_or_class`` (the
entry-point convention of uvicorn / gunicorn), and the preprocessing it needs.

    model = attnviz.load_model("mynet.py:build", checkpoint="runs/best.pt",
                               input_size=128, mean=(0.5,) * 3, std=(0.5,) * 3,
                               labels="labels.txt")
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError, ParameterError
from ..terminal import one_line, printable

_SPEC = re.compile(r"^(?P<target>[^:]+):(?P<attr>[A-Za-z_][\w.]*)$")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_user_spec(name: str) -> bool:
    """``file.py:attr`` or ``package.module:attr``."""
    m = _SPEC.match(name)
    if m is None:
        return False
    return m["target"].endswith(".py") or _DOTTED.fullmatch(m["target"]) is not None


#: largest labels file read (100,000 names of 100 characters are 10 MB)
MAX_LABELS_BYTES = 16 * 2**20
#: ``--model-args`` limits: nesting depth of its arrays / objects, and length in characters
MAX_ARGS_DEPTH = 32
MAX_ARGS_CHARS = 1_000_000


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` / ``{`` in JSON ``text`` (brackets in strings not counted),
    found without parsing (a parser recurses once per level)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_model_args(text: str | dict | None) -> dict[str, Any]:
    """``--model-args``: a JSON object of keyword arguments for the factory, at most
    :data:`MAX_ARGS_CHARS` long and :data:`MAX_ARGS_DEPTH` levels deep."""
    if text is None:
        return {}
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise ParameterError(f"--model-args must be a JSON object, got {type(text).__name__}")
    if len(text) > MAX_ARGS_CHARS:
        raise ParameterError(f"--model-args is {len(text)} characters long, at most "
                             f"{MAX_ARGS_CHARS}")
    depth = json_depth(text)
    if depth > MAX_ARGS_DEPTH:
        raise ParameterError(f"--model-args is nested {depth} levels deep, at most "
                             f"{MAX_ARGS_DEPTH} (the JSON parser recurses once per level)")
    try:
        args = json.loads(text)
    except ValueError as e:
        msg = f"--model-args is not valid JSON ({e}): {one_line(text)[:80]!r}"
        raise ParameterError(msg) from None
    if not isinstance(args, dict):
        raise ParameterError("--model-args must be a JSON object such as "
                             f"'{{\"num_classes\": 5}}', got {one_line(text)[:80]!r}")
    return args


def _import(target: str) -> Any:
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelError(f"model file {target!r} does not exist")
        name = f"attnviz_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except (Exception, SystemExit) as e:
            del sys.modules[name]
            raise ModelError(f"importing {target!r} failed: {_raised(e)}") from None
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise ModelError(f"cannot import module {target!r}: {_first_line(e)}") from None
    except SystemExit as e:
        raise ModelError(f"importing {target!r} failed: {_raised(e)}") from None
    except Exception as e:
        raise ModelError(f"importing {target!r} failed: {type(e).__name__}: "
                         f"{_first_line(e)}") from None


def _raised(e: BaseException) -> str:
    """What model code raised, for a message; ``sys.exit()`` in it is named as such (the
    model's code must not end attnviz, with exit 0 and nothing written)."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r}), which attnviz treats as an error"
    return f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return one_line(text.splitlines()[0]) if text else type(e).__name__


def import_object(spec: str) -> Any:
    """The object ``file.py:attr`` / ``package.module:attr`` names (its module is imported, so
    its top-level code runs, as with ``python file.py``)."""
    m = _SPEC.match(spec)
    if m is None:
        raise ParameterError(f"{spec!r} is not of the form path/to/file.py:name or "
                             "package.module:name")
    obj: Any = _import(m["target"])
    for part in m["attr"].split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{m['target']!r} has no attribute {m['attr']!r}")
        obj = getattr(obj, part)
    return obj


def load_user_model(spec: str, model_args: str | dict | None = None) -> nn.Module:
    """Import ``spec`` and call it with ``model_args``; the result must be an ``nn.Module``."""
    m = _SPEC.match(spec)
    if m is None:
        raise ParameterError(f"model {spec!r} is not of the form path/to/file.py:factory or "
                             "package.module:factory")
    args = parse_model_args(model_args)
    obj = import_object(spec)
    if isinstance(obj, nn.Module):
        model = obj
    elif callable(obj):
        try:
            model = obj(**args)
        except (Exception, SystemExit) as e:
            raise ModelError(f"{spec} raised {_raised(e)}") from None
    else:
        raise ModelError(f"{spec} is neither a factory nor a model: {type(obj).__name__}")
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_labels(path: str | os.PathLike | Sequence[str]) -> list[str]:
    """Class names: a list, or a text file with one name a line (blank lines ignored);
    control characters in a name (ESC, ...) are escaped, so that no figure or warning sends
    them to a terminal."""
    if not isinstance(path, (str, os.PathLike)):
        names = [str(n) for n in path]
    else:
        p = Path(path)
        if not p.exists():
            raise ParameterError(f"labels file {str(p)!r} does not exist")
        if not p.is_file():
            raise ParameterError(f"labels file {str(p)!r} is not a regular file (a folder or a "
                                 "device such as /dev/null); give a text file, one name a line")
        if p.stat().st_size > MAX_LABELS_BYTES:
            raise ParameterError(f"labels file {str(p)!r} is {p.stat().st_size} bytes, more "
                                 f"than the {MAX_LABELS_BYTES} a list of class names needs")
        try:
            names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            msg = f"labels file {str(p)!r} cannot be read: {_first_line(e)}"
            raise ParameterError(msg) from None
        names = [n for n in names if n]
    if not names:
        raise ParameterError("labels: no class names given")
    return [printable(n) for n in names]  # ESC and other control characters escaped


def parse_floats(text: str | float | Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """``--mean 0.5,0.5,0.5`` → a 3-tuple (one value is repeated three times)."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        parts: list = [text]
    else:
        parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        msg = f"{what} must be 1 or 3 numbers such as 0.5,0.5,0.5, got {text!r}"
        raise ParameterError(msg) from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(v == v and abs(v) != float("inf") for v in values):
        raise ParameterError(f"{what} must be 1 or 3 finite numbers, got {text!r}")
    if what == "std" and any(v <= 0 for v in values):
        raise ParameterError(f"std must be positive, got {text!r}")
    return values


def add_model_arguments(parser: Any, default: str = "demo-cbam") -> None:
    """``--model``, ``--checkpoint`` and the your-own-model options, for every command."""
    parser.add_argument("--model", default=default, metavar="MODEL",
                        help="a demo model (demo-cbam, demo-se, demo-resnest, demo-botnet: "
                             "offline), a timm name (its pretrained ImageNet weights: needs the "
                             "network unless --checkpoint is given), an attnviz architecture, or "
                             "your own path/to/file.py:factory or package.module:attr, which "
                             "imports and runs that code as `python file.py` would: name only "
                             "code you trust (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="weights file (.safetensors preferred; .pt/.pth weights-only)")
    parser.add_argument("--model-args", default=None, metavar="JSON",
                        help="keyword arguments for your factory, as a JSON object")
    parser.add_argument("--input-size", type=int, default=None, metavar="PX",
                        help="square input side (default: the model's, 224 for your own)")
    parser.add_argument("--mean", default=None, metavar="M", help="normalisation mean: 1 or 3 "
                        "numbers, comma-separated (default: the model's, else ImageNet)")
    parser.add_argument("--std", default=None, metavar="S", help="normalisation std (as --mean)")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one a line")
    parser.add_argument("--output", default=None, metavar="KEY|INDEX|FILE.py:FN",
                        help="which part of the model's output holds the logits: a dict key or "
                             "attribute (logits), a tuple index (0), or a function of the output "
                             "(default: found automatically; no class prediction when none)")
    parser.add_argument("--random-weights", action="store_true",
                        help="allow an architecture without trained weights (pages say "
                             "'random weights' at the top)")


def model_options(args: Any) -> dict[str, Any]:
    """The keyword arguments of ``load_model`` from parsed :func:`add_model_arguments`."""
    return dict(checkpoint=args.checkpoint, model_args=args.model_args,
                input_size=args.input_size, mean=args.mean, std=args.std, labels=args.labels)

"""``load_model``: attnviz demo checkpoints, attnviz builders, any timm model, local files."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..checks import check_input_size
from ..errors import ModelError, ParameterError
from ..samples import data_dir
from ..terminal import one_line
from .checkpoints import load_weights, read_class_names, read_preprocess
from .online import PROBE_TIMEOUT_S, fetch_guard, hub_offline_requested
from .preprocess import set_preprocess
from .registry import create_model, is_model, list_models
from .user import is_user_spec, load_user_model, parse_floats, read_labels

DEMO_MODELS = ("demo-cbam", "demo-cbam-plain", "demo-se", "demo-resnest", "demo-botnet")


def demo_card(name: str) -> dict:
    """The JSON model card of a bundled demo checkpoint."""
    card = data_dir() / "checkpoints" / f"{name}.json"
    if not card.is_file():
        raise ModelError(
            f"demo model {name!r} has no model card at {card}: the installation is incomplete "
            f"(reinstall attnviz) or $ATTNVIZ_DATA points to a folder without checkpoints/"
        )
    return json.loads(card.read_text())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ParameterError(f"bad device {device!r}: {one_line(e)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"device {device!r} asked for, but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(f"device {device!r} asked for, but there are only "
                                 f"{torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ParameterError(f"device {device!r} asked for, but Apple's MPS is not "
                                 "available here")
    elif dev.type != "cpu":
        raise ParameterError(f"device {device!r} is not supported: use auto, cpu, cuda, "
                             "cuda:N or mps")
    return dev


def load_model(
    name: str,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    *,
    model_args: str | dict | None = None,
    input_size: int | None = None,
    mean: str | float | Sequence[float] | None = None,
    std: str | float | Sequence[float] | None = None,
    labels: str | os.PathLike | Sequence[str] | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a model by name, load its weights, put it in eval mode on ``device``.

    Args:
        name: a demo model (``"demo-cbam"``, ``"demo-se"``, ``"demo-resnest"``: bundled trained
            weights, offline), an attnviz architecture (``attnviz.list_models()``), any timm
            model name (``"seresnet50"``, ``"resnest50d"``, ...), or your own model:
            ``"path/to/file.py:factory"`` / ``"package.module:factory_or_class"``.
        model_args: keyword arguments for your factory (a dict or a JSON object string).
        input_size, mean, std: preprocessing (square side; per-channel mean and std, 1 or 3
            values); unset parts keep the model's default (224 px and ImageNet statistics for
            your own models).
        labels: class names: a list or a text file with one name a line.
        pretrained: timm models only: download ImageNet weights through timm (needs network).
        checkpoint: a local weights file for the architecture (``.safetensors`` preferred;
            ``.pt``/``.pth`` are read with ``weights_only=True``).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        kwargs: passed to the builder (e.g. ``num_classes``).
    """
    dev = resolve_device(device)
    if input_size is not None:
        check_input_size(input_size)
    if not isinstance(name, str) or not name:
        raise ParameterError(f"model name must be a non-empty string, got {name!r}")
    if is_user_spec(name):
        model = load_user_model(name, model_args)
        if pretrained:
            raise ParameterError("pretrained=True is for timm names; pass checkpoint=PATH")
        if checkpoint is not None:
            load_weights(model, checkpoint)
    elif model_args is not None:
        raise ParameterError("model_args is for your own models (file.py:factory); "
                             "pass builder arguments as keywords")
    elif name in DEMO_MODELS:
        card = demo_card(name)
        model = create_model(card["architecture"], **{**card.get("builder_kwargs", {}), **kwargs})
        load_weights(model, data_dir() / "checkpoints" / card["weights"])
        model.class_names = list(card.get("classes", []))  # type: ignore[attr-defined]
        model.input_size = int(card.get("data", {}).get("size", 64))  # type: ignore[attr-defined]
        model.model_card = card  # type: ignore[attr-defined]  (explorers: best layer, data)
    elif is_model(name):
        if pretrained:
            raise ModelError(
                f"attnviz architecture {name!r} has no downloadable weights; pass checkpoint=PATH "
                f"or use a timm name such as 'seresnet50' with pretrained=True"
            )
        model = create_model(name, **kwargs)
        if checkpoint is not None:
            load_weights(model, checkpoint)
        else:
            _mark_random(model, name)
    else:
        model = _timm_model(name, pretrained, checkpoint, **kwargs)
        if not pretrained and checkpoint is None:
            _mark_random(model, name)
    if checkpoint is not None and name in DEMO_MODELS:
        load_weights(model, checkpoint)
    names = read_class_names(checkpoint) if checkpoint is not None else None
    if labels is not None:
        names = read_labels(labels)
        model.class_names = names  # type: ignore[attr-defined]
    elif names is not None and not hasattr(model, "class_names"):
        model.class_names = names  # type: ignore[attr-defined]
    saved = read_preprocess(checkpoint) if checkpoint is not None else None
    if saved is not None:  # what attnviz.train.fit trained with travels with its checkpoint
        set_preprocess(model, saved.size, saved.mean, saved.std, normalize=saved.mean is not None)
    if input_size is not None or mean is not None or std is not None:
        set_preprocess(model, input_size, parse_floats(mean, "mean"), parse_floats(std, "std"))
    return model.eval().to(dev)


_WARNED: set[str] = set()


def _mark_random(model: nn.Module, name: str) -> None:
    """Mark ``model`` as having random weights (pages and explorers say so) and warn once per
    name."""
    model.attnviz_random_weights = True  # type: ignore[attr-defined]
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"{name!r} has random weights (no checkpoint, no pretrained weights): its "
                      "attention is that of initialisation", stacklevel=3)


def _timm_model(
    name: str, pretrained: bool, checkpoint: str | os.PathLike | None, **kwargs: object
) -> nn.Module:
    import timm

    if not timm.list_models(name) and not timm.list_pretrained(name):
        raise ModelError(
            f"unknown model {name!r}: not a demo model {list(DEMO_MODELS)}, not an attnviz "
            f"architecture {list_models()}, and not a timm model name"
        )
    if pretrained and checkpoint is not None:
        raise ParameterError("pass either pretrained=True or checkpoint=PATH, not both")
    hint = (f"Download the weights on a machine that is online and pass them as "
            f"load_model({name!r}, checkpoint='path/to/weights.safetensors')")
    guard = fetch_guard(name) if pretrained else contextlib.nullcontext()
    if guard is None:
        why = ("HF_HUB_OFFLINE is set" if hub_offline_requested() else
               f"no network: their host could not be reached within {PROBE_TIMEOUT_S:g} s")
        raise ModelError(f"could not fetch pretrained weights for {name!r} ({why}) and they "
                         f"are not in the local cache. {hint}")
    try:
        with guard:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ConnectionError) as e:
        if not pretrained:
            raise
        reason = one_line(str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
        raise ModelError(
            f"could not fetch pretrained weights for {name!r} (no network, or the hub refused: "
            f"{reason}). {hint}"
        ) from None
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model

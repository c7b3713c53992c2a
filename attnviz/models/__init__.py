"""Floor 2: attention ResNet builders, the name registry and ``load_model``."""

from __future__ import annotations

from ..samples import data_dir
from . import builders as _builders  # noqa: F401  (registers the builders)
from .checkpoints import load_weights, read_state_dict, save_weights
from .loading import DEMO_MODELS, demo_card, load_model, resolve_device
from .preprocess import (
    InputSpec,
    Preprocess,
    class_names,
    input_spec,
    model_device,
    prepare,
    set_preprocess,
)
from .registry import create_model, list_models, register_model
from .resnet import Normalize, ResNet

__all__ = [
    "DEMO_MODELS",
    "InputSpec",
    "Preprocess",
    "Normalize",
    "ResNet",
    "class_names",
    "create_model",
    "data_dir",
    "demo_card",
    "input_spec",
    "list_models",
    "load_model",
    "load_weights",
    "model_device",
    "prepare",
    "read_state_dict",
    "register_model",
    "resolve_device",
    "save_weights",
    "set_preprocess",
]

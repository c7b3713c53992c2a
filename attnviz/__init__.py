"""attnviz: see the attention weights of attention-augmented ResNets.

model = attnviz.load_model("demo-cbam")
with attnviz.record(model) as rec:
    logits = model(x)
rec.channel, rec.spatial, rec.radix
"""

from __future__ import annotations

from .errors import (
    AttnvizError,
    CheckpointError,
    ImageError,
    MemoryBudgetError,
    MissingDependencyError,
    ModelError,
    NoAttentionError,
    ParameterError,
    RecorderBusyError,
)
from .models import DEMO_MODELS, create_model, list_models, load_model, resolve_device
from .record import AttentionRecord, Recorder, find_attention, record, supported_types
from .samples import data_dir, sample_images

_LAZY = (
    "agreement", "attribution", "datasets", "evaluate", "images", "metrics", "plot", "train",
    "widgets",
)


def __getattr__(name: str) -> object:
    """Import heavier submodules (plots, widgets, Captum) on first use: ``attnviz.plot``."""
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name == "load_image":
        from .images import load_image

        return load_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "DEMO_MODELS",
    "AttentionRecord",
    "AttnvizError",
    "CheckpointError",
    "ImageError",
    "MemoryBudgetError",
    "MissingDependencyError",
    "ModelError",
    "NoAttentionError",
    "ParameterError",
    "Recorder",
    "RecorderBusyError",
    "__version__",
    "create_model",
    "data_dir",
    "find_attention",
    "list_models",
    "load_model",
    "record",
    "resolve_device",
    "sample_images",
    "supported_types",
]

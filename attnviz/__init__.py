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
    ModelError,
    NoAttentionError,
    ParameterError,
    RecorderBusyError,
)
from .models import DEMO_MODELS, create_model, list_models, load_model, resolve_device
from .record import AttentionRecord, Recorder, find_attention, record, supported_types

__version__ = "0.1.0"

__all__ = [
    "DEMO_MODELS",
    "AttentionRecord",
    "AttnvizError",
    "CheckpointError",
    "ImageError",
    "ModelError",
    "NoAttentionError",
    "ParameterError",
    "Recorder",
    "RecorderBusyError",
    "__version__",
    "create_model",
    "find_attention",
    "list_models",
    "load_model",
    "record",
    "resolve_device",
    "supported_types",
]

"""Floor 2: adapters (one per attention module type) and the recorder."""

from __future__ import annotations

from .adapters import ADAPTERS, KINDS, Adapter, find_adapter, supported_types
from .recorder import AttentionRecord, AttentionSite, Recorder, find_attention, record

__all__ = [
    "ADAPTERS",
    "KINDS",
    "Adapter",
    "AttentionRecord",
    "AttentionSite",
    "Recorder",
    "find_adapter",
    "find_attention",
    "record",
    "supported_types",
]

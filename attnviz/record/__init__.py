"""Floor 2: adapters (named module types), the observer (any module) and the recorder."""

from __future__ import annotations

from .adapters import ADAPTERS, Adapter, find_adapter, supported_types
from .budget import MemoryBudgetWarning
from .find import find_attention
from .geometry import window_geometry, window_pixels, window_rows, window_to_image
from .ops import sdpa_weights
from .recorder import Recorder, record
from .records import KINDS, AttentionRecord, RecordSet
from .sites import AttentionSite, SiteList

__all__ = [
    "ADAPTERS",
    "KINDS",
    "MemoryBudgetWarning",
    "Adapter",
    "AttentionRecord",
    "AttentionSite",
    "RecordSet",
    "Recorder",
    "SiteList",
    "find_adapter",
    "find_attention",
    "record",
    "sdpa_weights",
    "supported_types",
    "window_geometry",
    "window_pixels",
    "window_rows",
    "window_to_image",
]

"""Attention statistics over whole datasets, on one process or many (``torchrun``).

    from attnviz.stats import dataset_stats, read_stats
    path = dataset_stats("shapes:2000", "demo-cbam", "out/")   # out/stats.json, out/stats.html
    doc = read_stats(path)                                     # arrays decoded to numpy

``attnviz stats DATA --model MODEL --out DIR`` on the command line; the same under
``torchrun --nproc_per_node N -m attnviz stats ...``. See the README, "Dataset statistics".
"""
from __future__ import annotations

from typing import Any

__all__ = ["SCHEMA", "dataset_stats", "main", "read_stats", "render", "write_html"]


def __getattr__(name: str) -> Any:
    """Import the parts on first use (``attnviz stats --help`` stays quick)."""
    if name == "dataset_stats":
        from .run import dataset_stats

        return dataset_stats
    if name in ("read_stats", "SCHEMA"):
        from . import document

        return getattr(document, name)
    if name in ("render", "write_html"):
        from . import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """``attnviz stats ...``."""
    from .cli import main as stats_main

    return stats_main(argv)

"""What attention costs: parameters added to the same backbone (built on the meta device, so
no memory is used and nothing is initialised)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..models import create_model

RESNET50_FAMILY = ("resnet50", "se_resnet50", "eca_resnet50", "cbam_resnet50", "resnest50")


def parameter_count(name: str, **kwargs: object) -> int:
    """Parameters of attnviz architecture ``name``."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def cost_table(names: Sequence[str] = RESNET50_FAMILY, base: str | None = None) -> str:
    """Parameters of each architecture and what it adds to ``base`` (default: the first)."""
    counts = {n: parameter_count(n) for n in names}
    ref = counts[base or names[0]]
    lines = [f"{'model':16s} {'parameters':>12s} {'added':>11s} {'added %':>8s}"]
    for n, c in counts.items():
        lines.append(f"{n:16s} {c:12,d} {c - ref:+11,d} {100 * (c - ref) / ref:+7.1f}%")
    return "\n".join(lines)

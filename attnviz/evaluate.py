"""Evaluate attention against ground truth on the shapes data, beside a random-init baseline.

python -m attnviz.evaluate --model demo-cbam --n 2000
"""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import metrics
from .checks import MAX_INPUT_SIZE, MAX_ITEMS
from .cli import CommandParser, _int_at_least, run_command
from .datasets import Shapes, make_shapes
from .models.preprocess import model_device, prepare
from .record import record

TEST_SEED = 1  # held-out stream; training uses seed 0


@dataclass
class LayerScore:
    """Scores of one attention module over an evaluation set."""

    name: str
    kind: str
    pointing: float | None = None
    energy_raw: float | None = None
    energy_minus_min: float | None = None
    mask_min: float | None = None
    mask_mean: float | None = None
    mask_max: float | None = None
    class_specificity: float | None = None
    radix_a0_std: float | None = None
    radix_a0_mean: float | None = None
    object_attention_ratio: float | None = None
    object_attention_mass: float | None = None
    object_area_share: float | None = None


@dataclass
class Evaluation:
    accuracy: float
    n: int
    layers: list[LayerScore] = field(default_factory=list)

    def best_spatial(self) -> LayerScore | None:
        """The spatial layer with the highest raw energy among those pointing ≥ 0.9 (else best
        pointing)."""
        spatial = [s for s in self.layers if s.kind == "spatial"]
        good = [s for s in spatial if (s.pointing or 0) >= 0.9]
        if good:
            return max(good, key=lambda s: s.energy_raw or 0)
        return max(spatial, key=lambda s: s.pointing or 0, default=None)

    def to_dict(self) -> dict:
        return asdict(self)


def _scores(kind: str, v: torch.Tensor, data: Shapes, grid=None) -> dict[str, float]:
    """Scores of one recorded layer: localisation for masks and attention maps, specificity
    for gates."""
    if kind == "attention":
        ratio, mass, share = metrics.attention_on_object(v, data.masks, grid)
        return dict(object_attention_ratio=ratio, object_attention_mass=mass,
                    object_area_share=share)
    if kind == "spatial":
        return dict(
            pointing=metrics.pointing_game(v, data.masks),
            energy_raw=metrics.energy_in_box(v, data.masks).mean().item(),
            energy_minus_min=metrics.energy_in_box(v, data.masks, subtract_min=True).mean().item(),
            mask_min=v.min().item(),
            mask_mean=v.mean().item(),
            mask_max=v.max().item(),
        )
    if kind == "channel":
        return dict(class_specificity=metrics.class_specificity(v, data.labels),
                    mask_mean=v.mean().item())
    a0 = v[:, 0]  # radix: the weight of split 0 (the others are 1 - a0 for R = 2)
    return dict(class_specificity=metrics.class_specificity(a0, data.labels),
                radix_a0_std=a0.std().item(), radix_a0_mean=a0.mean().item())


@torch.no_grad()
def evaluate(model: nn.Module, data: Shapes, batch_size: int = 250) -> Evaluation:
    """Accuracy and per-layer attention scores of ``model`` on ``data``."""
    device = model_device(model)
    logits = []
    with record(model, heads="mean") as rec:
        for i in range(0, len(data.labels), batch_size):
            x = prepare(model, data.images[i : i + batch_size]).to(device)
            logits.append(model(x).cpu())
        rec.cpu()
    result = Evaluation(metrics.accuracy(torch.cat(logits), data.labels), len(data.labels))
    grids = {r.key: r.meta.get("k_grid") for r in rec.records if r.kind == "attention"}
    for kind in ("spatial", "channel", "radix", "attention"):
        for name, value in rec.by_kind(kind).items():
            if kind == "attention" and grids.get(name) is None:
                continue  # keys are not the pixels of a grid: no object to compare with
            scores = _scores(kind, value, data, grids.get(name))
            result.layers.append(LayerScore(name, kind, **scores))
    return result


def random_baseline(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with fresh random weights (BatchNorm in eval statistics)."""
    torch.manual_seed(seed)
    base = copy.deepcopy(model)
    for m in base.modules():
        if hasattr(m, "reset_parameters") and m is not base:
            m.reset_parameters()
    return base.eval()


def format_table(trained: Evaluation, baseline: Evaluation | None = None) -> str:
    """A plain-text table: one line per recorded layer, trained vs random init."""

    def f(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    lines = [
        f"accuracy: trained {trained.accuracy:.4f}"
        + (f" | random init {baseline.accuracy:.4f}" if baseline else "")
        + f"  (n={trained.n})"
    ]
    head = (
        f"{'layer':28s} {'kind':8s} {'point':>6s} {'E_raw':>6s} {'E-min':>6s} {'min':>6s} "
        f"{'mean':>6s} {'max':>6s} {'spec':>6s} {'a0 sd':>6s} {'obj/A':>6s}"
    )
    base = {(s.name, s.kind): s for s in baseline.layers} if baseline else {}
    lines.append(head)
    for s in trained.layers:
        row = [
            s.pointing,
            s.energy_raw,
            s.energy_minus_min,
            s.mask_min,
            s.mask_mean,
            s.mask_max,
            s.class_specificity,
            s.radix_a0_std,
            s.object_attention_ratio,
        ]
        lines.append(f"{s.name[:28]:28s} {s.kind:8s} " + " ".join(f(v) for v in row))
        b = base.get((s.name, s.kind))
        if b is not None:
            brow = [
                b.pointing,
                b.energy_raw,
                b.energy_minus_min,
                b.mask_min,
                b.mask_mean,
                b.mask_max,
                b.class_specificity,
                b.radix_a0_std,
                b.object_attention_ratio,
            ]
            lines.append(f"{'  (random init)':28s} {'':8s} " + " ".join(f(v) for v in brow))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .models import load_model
    from .models.user import add_model_arguments, model_options

    p = CommandParser(prog="attnviz evaluate", description=__doc__.splitlines()[0])
    add_model_arguments(p)
    p.add_argument("--n", type=_int_at_least(1, MAX_ITEMS), default=2000,
                   help="held-out shapes images (default: %(default)s)")
    p.add_argument("--size", type=_int_at_least(16, MAX_INPUT_SIZE), default=64,
                   help="their side in px (default: %(default)s)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    model = load_model(args.model, device=args.device, **model_options(args))
    data = make_shapes(args.n, seed=TEST_SEED, size=args.size)
    print(format_table(evaluate(model, data), evaluate(random_baseline(model), data)))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

"""Evaluate attention against ground truth on the shapes data, beside a random-init baseline.

python -m attnviz.evaluate --model demo-cbam --n 2000
"""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from . import metrics
from .checks import MAX_INPUT_SIZE, MAX_ITEMS
from .commands import CommandParser, int_at_least, run_command
from .datasets import Shapes, make_shapes
from .engine import forward
from .models.preprocess import model_device, prepare
from .outputs import CLASSIFIER, NO_PREDICTION
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
    accuracy: float | None  # None: the model makes no class prediction (see attnviz.outputs)
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
def evaluate(model: nn.Module, data: Shapes, batch_size: int = 250,
             output: Any = None) -> Evaluation:
    """Accuracy (None without class prediction) and per-layer attention scores of ``model`` on
    ``data``; ``output`` picks the logits (see :func:`attnviz.outputs.interpret`)."""
    device = model_device(model)
    scores: list[torch.Tensor] = []
    classifier = True
    with record(model, heads="mean") as rec:
        for i in range(0, len(data.labels), batch_size):
            x = prepare(model, data.images[i : i + batch_size]).to(device)
            out = forward(model, x, output)
            classifier = classifier and out.kind == CLASSIFIER
            if out.logits is not None and out.kind == CLASSIFIER:
                scores.append(out.logits.cpu())
        rec = rec.cpu()
    accuracy = metrics.accuracy(torch.cat(scores), data.labels) if classifier else None
    result = Evaluation(accuracy, len(data.labels))
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

    def acc(e: Evaluation) -> str:
        return NO_PREDICTION if e.accuracy is None else f"{e.accuracy:.4f}"

    lines = [
        f"accuracy: trained {acc(trained)}"
        + (f" | random init {acc(baseline)}" if baseline else "")
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
    from .engine import load_for_run, probe, random_weights_note
    from .models.user import add_model_arguments, model_options
    from .threads import add_threads_argument
    from .threads import apply as apply_threads

    p = CommandParser(prog="attnviz evaluate", description=__doc__.splitlines()[0])
    add_model_arguments(p)
    add_threads_argument(p)
    p.add_argument("--n", type=int_at_least(1, MAX_ITEMS), default=2000,
                   help="held-out shapes images (default: %(default)s)")
    p.add_argument("--size", type=int_at_least(16, MAX_INPUT_SIZE), default=64,
                   help="their side in px (default: %(default)s)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    apply_threads(args.threads)
    model, _ = load_for_run(args.model, args.device, random_weights=args.random_weights,
                            **model_options(args))
    data = make_shapes(args.n, seed=TEST_SEED, size=args.size)
    probe(model, output=args.output)  # no attention / an --output that does not fit: one line
    if random_weights_note(model):
        print(f"note: {random_weights_note(model)}")
    print(format_table(evaluate(model, data, output=args.output),
                       evaluate(random_baseline(model), data, output=args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

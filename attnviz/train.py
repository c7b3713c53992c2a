"""Train an attnviz model on the shapes data or an ImageFolder directory.

    python -m attnviz.train --model demo_cbam_resnet --steps 3000 --out runs/ --name my-cbam
    python -m attnviz.train --demo all --out data/checkpoints  # the demo models

Writes ``NAME.safetensors`` (fp16 with ``--half``) and a JSON model card ``NAME.json``
(architecture, data, objective, accuracy, attention metrics, training time, versions).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .callbacks import AttentionLogger, probe_batch
from .checks import check_out_dir, check_path_text
from .commands import CommandParser, UsageError, int_at_least, run_command
from .datasets import make_shapes
from .errors import ParameterError
from .evaluate import TEST_SEED, evaluate, format_table, random_baseline
from .models import create_model, save_weights, set_preprocess
from .record import record


@dataclass
class TrainConfig:
    """Everything that defines a training run (written into the model card)."""

    model: str = "demo_cbam_resnet"
    data: str = "shapes"  # "shapes" or an ImageFolder directory
    size: int = 64
    n_train: int = 30000
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    mask_penalty: float = 0.0  # λ · Σ_blocks mean(A) added to the loss
    threads: int = 1
    device: str = "auto"
    builder_kwargs: dict = field(default_factory=dict)


DEMOS: dict[str, TrainConfig] = {
    "demo-cbam": TrainConfig(model="demo_cbam_resnet", steps=2200, mask_penalty=1e-2),
    # the same without the mask penalty: what the penalty does (notebook 04)
    "demo-cbam-plain": TrainConfig(model="demo_cbam_resnet", steps=2200),
    "demo-se": TrainConfig(model="demo_se_resnet", steps=1400),
    "demo-resnest": TrainConfig(model="demo_resnest", steps=1400),
    "demo-botnet": TrainConfig(model="demo_botnet", steps=1400),
}


def _training_data(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    if cfg.data == "shapes":
        data = make_shapes(cfg.n_train, seed=cfg.seed, size=cfg.size)
        return data.images, data.labels, data.classes
    from torchvision import datasets, transforms

    root = Path(check_path_text("training data", cfg.data))
    if not root.is_dir():
        raise ParameterError(f"training data {cfg.data!r} is neither 'shapes' nor a folder")
    tf = transforms.Compose([transforms.Resize((cfg.size, cfg.size)), transforms.ToTensor()])
    folder = datasets.ImageFolder(str(root), transform=tf)
    xs, ys = zip(*(folder[i] for i in range(len(folder))), strict=True)
    return torch.stack(xs), torch.tensor(ys), tuple(folder.classes)


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    mask_penalty: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
    classes: Sequence[str] | None = None,
    logger: AttentionLogger | None = None,
) -> nn.Module:
    """Train any classifier ``model`` (on its device) with AdamW, warm-up + cosine schedule and
    random flips; ``mask_penalty`` adds λ · Σ mean(A) over its spatial masks (recorded with
    :func:`attnviz.record`, so a hand-written CBAM works too). Returns ``model`` in eval mode.

    The preprocessing it trained with travels with the model: its input side is the images'
    side, with no normalisation (the images are fed as they are), and ``classes`` become its
    class names; explorers and reports use them, and :func:`attnviz.models.save_weights` stores
    them in the checkpoint, from which :func:`attnviz.load_model` restores them.

    ``logger``: an :class:`attnviz.callbacks.AttentionLogger`, stepped before every training
    step and logged once more at the end (masks forming, saturation, class specificity)."""
    set_preprocess(model, int(images.shape[-1]), normalize=False)
    if classes is not None:
        model.class_names = [str(c) for c in classes]  # type: ignore[attr-defined]
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
        return min(1.0, (step + 1) / warmup) * cosine

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    ema_loss, ema_acc = None, None
    for step in bar:
        if logger is not None:
            logger.step(step)
        idx = torch.randint(len(labels), (batch_size,), generator=gen)
        x, y = images[idx].to(device), labels[idx].to(device)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
        if mask_penalty > 0:
            with record(model, kinds=("spatial",), keep_graph=True) as rec:
                logits = model(x)
            penalty = torch.stack([r.value.mean() for r in rec.records]).sum()
        else:
            logits = model(x)
            penalty = torch.zeros((), device=device)
        ce = F.cross_entropy(logits, y)
        loss = ce + mask_penalty * penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc = (logits.argmax(1) == y).float().mean().item()
        ema_loss = ce.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * ce.item()
        ema_acc = acc if ema_acc is None else 0.98 * ema_acc + 0.02 * acc
        bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}")
    if logger is not None:
        logger.log(steps)  # the trained state
        logger.close()
    return model.eval()


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    name: str | None = None,
    half: bool = True,
    data: tuple[torch.Tensor, torch.Tensor, tuple[str, ...]] | None = None,
    eval_n: int = 2000,
    progress: bool = True,
    log_dir: str | None = None,
    log_every: int = 100,
) -> tuple[nn.Module, dict]:
    """Train ``cfg.model``; return the model and its model card (written to ``out`` if given).

    ``log_dir``: also log the attention of 8 held-out shapes every ``log_every`` steps to
    TensorBoard there (:class:`attnviz.callbacks.AttentionLogger`)."""
    from .models import resolve_device

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    images, labels, classes = data if data is not None else _training_data(cfg)
    model = create_model(cfg.model, num_classes=len(classes), **cfg.builder_kwargs).to(device)
    t0 = time.time()
    logger = None
    if log_dir is not None:
        probe, probe_labels, objects = probe_batch(8, cfg.size)
        logger = AttentionLogger(model, probe, probe_labels, objects if cfg.data == "shapes"
                                 else None, every=log_every, log_dir=log_dir)
    fit(model, images, labels, cfg.steps, cfg.batch_size, cfg.lr, cfg.weight_decay,
        cfg.mask_penalty, cfg.seed, progress, f"train {cfg.model}", classes=classes,
        logger=logger)
    train_seconds = time.time() - t0
    model.eval()
    card: dict = {
        "name": name or cfg.model,
        "architecture": cfg.model,
        "builder_kwargs": cfg.builder_kwargs,
        "classes": list(classes),
        "input": f"RGB float in [0, 1], {cfg.size}x{cfg.size}; normalisation is inside the model",
        "data": {
            "source": cfg.data,
            "train_seed": cfg.seed,
            "n_train": len(labels),
            "size": cfg.size,
            "augmentation": "random horizontal flip",
        },
        "objective": "cross-entropy"
        + (
            f" + {cfg.mask_penalty:g} * sum over spatial gates of mean(A)"
            if cfg.mask_penalty
            else ""
        ),
        "config": {k: v for k, v in vars(cfg).items()},
        "train_seconds": round(train_seconds, 1),
        "attnviz_version": __version__,
        "torch_version": torch.__version__,
    }
    if cfg.data == "shapes" and eval_n:
        test = make_shapes(eval_n, seed=TEST_SEED, size=cfg.size)
        trained = evaluate(model, test)
        base = evaluate(random_baseline(model), test)
        card["test"] = {
            "seed": TEST_SEED,
            "n": eval_n,
            "accuracy": trained.accuracy,
            "layers": trained.to_dict()["layers"],
            "random_init": base.to_dict(),
        }
        best = trained.best_spatial()
        if best is not None:
            card["test"]["best_spatial_layer"] = best.name
        if progress:
            print(format_table(trained, base))
    if out is not None:
        out = Path(out)
        stem = name or cfg.model
        card["weights"] = f"{stem}.safetensors"
        save_weights(
            model,
            out / card["weights"],
            {"architecture": cfg.model, "classes": list(classes)},
            half=half,
        )
        (out / f"{stem}.json").write_text(json.dumps(card, indent=2) + "\n")
    return model, card


def _float_in(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite float in [low, high] (or (low, high] with ``low_open``)."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            side = f"({low}" if low_open else f"[{low}"
            raise argparse.ArgumentTypeError(f"must be in {side}, {high}], got {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    p = CommandParser(prog="attnviz train", description=__doc__.splitlines()[0])
    p.add_argument("--demo", choices=[*DEMOS, "all"], help="reproduce a bundled demo model")
    p.add_argument("--model", default="demo_cbam_resnet", help="attnviz architecture name")
    p.add_argument("--data", default="shapes", help="'shapes' or an ImageFolder directory")
    p.add_argument("--steps", type=int_at_least(1, 10**7), default=None)
    p.add_argument("--batch-size", type=int_at_least(1, 4096), default=64)
    p.add_argument("--lr", type=_float_in(0.0, 10.0, low_open=True), default=2e-3)
    p.add_argument("--mask-penalty", type=_float_in(0.0, 1e3), default=0.0)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--size", type=int_at_least(16, 1024), default=64)
    p.add_argument("--n-train", type=int_at_least(1, 10**7), default=30000)
    p.add_argument("--threads", type=int_at_least(1, 1024), default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--eval-n", type=int_at_least(0, 10**6), default=2000)
    p.add_argument("--out", default="runs")
    p.add_argument("--name", default=None)
    p.add_argument("--fp32", action="store_true", help="save fp32 weights (default fp16)")
    p.add_argument("--log-dir", default=None, metavar="DIR",
                   help="log attention on 8 held-out shapes to TensorBoard here (needs the "
                        "tensorboard package: pip install 'attnviz[train]')")
    p.add_argument("--log-every", type=int_at_least(1, 10**7), default=100, metavar="N",
                   help="steps between attention logs (default: %(default)s)")
    args = p.parse_args(argv)
    if args.data != "shapes" and not Path(check_path_text("--data", args.data)).is_dir():
        raise UsageError(f"--data {args.data!r} is neither 'shapes' nor a folder of class "
                         "folders (ImageFolder layout)")
    check_out_dir(args.out, "--out")
    if args.demo:
        names = list(DEMOS) if args.demo == "all" else [args.demo]
        first = DEMOS[names[0]]
        shared = make_shapes(first.n_train, seed=first.seed, size=first.size)
        data = (shared.images, shared.labels, shared.classes)
        for n in names:
            cfg = DEMOS[n]
            if args.steps:
                cfg.steps = args.steps
            cfg.threads, cfg.device = args.threads, args.device
            train(cfg, args.out, n, half=not args.fp32, data=data, eval_n=args.eval_n,
                  log_dir=None if args.log_dir is None else str(Path(args.log_dir) / n),
                  log_every=args.log_every)
        return 0
    cfg = TrainConfig(
        model=args.model,
        data=args.data,
        size=args.size,
        n_train=args.n_train,
        seed=args.seed,
        steps=args.steps or 3000,
        batch_size=args.batch_size,
        lr=args.lr,
        mask_penalty=args.mask_penalty,
        threads=args.threads,
        device=args.device,
    )
    train(cfg, args.out, args.name, half=not args.fp32, eval_n=args.eval_n,
          log_dir=args.log_dir, log_every=args.log_every)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

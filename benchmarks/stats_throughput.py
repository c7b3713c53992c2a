"""Images/s of ``attnviz stats`` against plain inference over the same DataLoader.

    python benchmarks/stats_throughput.py --model demo-se --n 512
    python benchmarks/stats_throughput.py --model seresnet50 --n 64 --batch-size 16   # 224 px

Both loops read the same ImageFolder of PNG files (generated shapes at the model's input size)
through the DataLoader ``attnviz stats`` builds, move batches to the device and normalise them
the same way. ``plain`` then runs ``model(x)`` under ``torch.no_grad()``; ``stats`` is the
whole of :func:`attnviz.stats.dataset_stats` (recording every attention weight, per-class and
per-layer streaming aggregates), timed by its own loop clock (``run.seconds`` in stats.json:
from the first batch to the last, without loading the model or writing the results).
timm names are built with random weights (offline). The two alternate ``--repeats`` times after
a warm-up, in alternating order; images/s are the best of each, the ratio is the median of
the per-repeat ratios. Target: stats / plain >= 0.9.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import attnviz
from attnviz.datasets import CLASSES, make_shapes
from attnviz.engine.sources import open_source
from attnviz.models.preprocess import input_spec
from attnviz.stats import dataset_stats, read_stats
from attnviz.stats.checkpoint import Progress
from attnviz.stats.distributed import Dist
from attnviz.stats.loop import Inputs
from attnviz.stats.run import make_loader


def build(name: str, device: str) -> torch.nn.Module:
    """A demo / attnviz model by name, or a timm model with random weights."""
    try:
        return attnviz.load_model(name, device=device)
    except attnviz.ModelError:
        import timm

        return timm.create_model(name, pretrained=False).eval().to(device)


def write_tree(root: Path, n: int, size: int) -> None:
    """``n`` shapes images as PNG files in one sub-folder per class."""
    from PIL import Image

    data = make_shapes(n, seed=123, size=size)
    arr = (data.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, (a, label) in enumerate(zip(arr, data.labels.tolist(), strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(exist_ok=True)
        Image.fromarray(a).save(folder / f"img_{i:05d}.png")


def plain(model: torch.nn.Module, root: Path, batch_size: int, workers: int) -> float:
    """Seconds for plain inference over the stats DataLoader."""
    dev = next(model.parameters()).device
    spec = input_spec(model)
    source = open_source([str(root)], spec.size)
    loader, _ = make_loader(source, Dist(), Progress(), spec.size, 1000, batch_size, workers,
                            dev.type == "cuda")
    inputs = Inputs(spec, dev)
    t = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            model(inputs(batch["image"])).float().cpu()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t


def stats(model: torch.nn.Module, root: Path, out: Path, batch_size: int, workers: int) -> float:
    """Seconds of the stats loop (its own clock), over the same images."""
    path = dataset_stats(str(root), model, out, batch_size=batch_size, workers=workers,
                         progress=False)
    return float(read_stats(path)["run"]["seconds"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-se")
    p.add_argument("--n", type=int, default=512, help="generated images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build(args.model, args.device)
    size = input_spec(model).size
    with tempfile.TemporaryDirectory(prefix="attnviz-stats-bench-") as tmp:
        root, out = Path(tmp) / "data", Path(tmp) / "out"
        root.mkdir()
        write_tree(root, args.n, size)
        stats(model, root, out, args.batch_size, args.workers)  # warm-up: finds the sites
        plain(model, root, args.batch_size, args.workers)
        t_plain, t_stats = [], []
        for i in range(args.repeats):  # the order alternates: a drift of the machine hits both
            runs = [lambda: t_plain.append(plain(model, root, args.batch_size, args.workers)),
                    lambda: t_stats.append(stats(model, root, out, args.batch_size, args.workers))]
            for run in runs[::1 if i % 2 == 0 else -1]:
                run()
    ips_plain, ips_stats = args.n / min(t_plain), args.n / min(t_stats)
    ratio = statistics.median(p / s for p, s in zip(t_plain, t_stats, strict=True))
    print(f"model {args.model} on {args.device}, {args.n} PNG images {size}x{size}, batch "
          f"{args.batch_size}, workers {args.workers}, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats}")
    print(f"plain inference (same DataLoader): {ips_plain:8.1f} images/s")
    print(f"attnviz stats:                     {ips_stats:8.1f} images/s")
    print(f"ratio stats/plain (median of pairs): {ratio:6.2f}  (target >= 0.9: "
          f"{'met' if ratio >= 0.9 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

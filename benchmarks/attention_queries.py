"""Cost of recording self-attention against a plain forward, with every query row and with
``queries="cls"`` (one row, computed alone by fused attention), by token count.

Plain, all-rows and cls-only forwards are interleaved (the order rotates every repetition);
each ratio is the median of the per-repetition ratios of process CPU time (less moved by other
work than wall time). ``rec MiB``: what the records of one forward hold.

    python benchmarks/attention_queries.py                     # vit_small, 224 and 448 px
    python benchmarks/attention_queries.py --reps 3 --batch 2  # quick check
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import attnviz


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--sizes", default="224,448")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    import timm

    print(f"{args.model}, batch {args.batch}, 1 thread, {args.reps} reps (CPU-time ratios)")
    print(f"{'size':>5s} {'tokens':>6s} {'plain s':>8s} {'all rows':>9s} {'cls only':>9s} "
          f"{'all MiB':>8s} {'cls MiB':>8s}")
    for size in (int(s) for s in args.sizes.split(",")):
        model = timm.create_model(args.model, pretrained=False, img_size=size).eval()
        batch = args.batch if size <= 224 else max(1, args.batch // 4)
        plain_s, ratio, held = _measure(model, torch.rand(batch, 3, size, size), args.reps)
        tokens = (size // 16) ** 2 + 1
        print(f"{size:5d} {tokens:6d} {plain_s:8.3f} {ratio['all']:9.2f} {ratio['cls']:9.2f} "
              f"{held['all']:8.1f} {held['cls']:8.2f}")


def _measure(model: torch.nn.Module, x: torch.Tensor, reps: int,
             ) -> tuple[float, dict[str, float], dict[str, float]]:
    """Median plain CPU seconds, recorded/plain ratios and MiB held, all rows vs cls only."""
    held: dict[str, float] = {}

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def recorded(queries: str | None = None, key: str = "all") -> None:
        with torch.no_grad(), attnviz.record(model, queries=queries) as rec:
            model(x)
        held[key] = sum(r.value.numel() * 4 for r in rec.records) / 2**20

    runs = {"plain": plain, "all": recorded, "cls": lambda: recorded("cls", "cls")}
    for fn in runs.values():
        fn()  # warm-up (the first recording watches the whole model)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(reps):
        for k in list(runs)[rep % 3:] + list(runs)[:rep % 3]:
            times[k].append(_cpu(runs[k]))
    ratio = {k: statistics.median(t / p for t, p in zip(times[k], times["plain"], strict=True))
             for k in ("all", "cls")}
    return statistics.median(times["plain"]), ratio, held

if __name__ == "__main__":
    main()

"""Memory of ``attnviz stats`` over many generated images: it should stay flat.

    python benchmarks/stats_memory.py --n 20000 --model demo-cbam --per-image

Runs :func:`attnviz.stats.dataset_stats` on ``shapes:N`` in this process (DataLoader without
workers, so everything is in one address space) and samples the resident set size every
``--every`` images. Reports the RSS after the first sample, at the end, the largest, and the
least-squares slope in MB per 10,000 images over the second half of the run (start-up
allocations excluded).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import psutil
import torch

from attnviz.stats import dataset_stats, read_stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-cbam")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--every", type=int, default=1000, help="images between samples")
    p.add_argument("--per-image", action="store_true", help="also write the Parquet rows")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    proc = psutil.Process()
    samples: list[tuple[int, float]] = []

    def sample(done: int) -> None:
        if not samples or done - samples[-1][0] >= args.every:
            samples.append((done, proc.memory_info().rss / 2**20))

    with tempfile.TemporaryDirectory(prefix="attnviz-mem-bench-") as tmp:
        path = dataset_stats(f"shapes:{args.n}", args.model, tmp, batch_size=args.batch_size,
                             per_image=args.per_image, progress=False, on_batch=sample)
        doc = read_stats(path)
    done, rss = np.array(samples, dtype=float).T
    half = done >= done[-1] / 2
    slope = np.polyfit(done[half], rss[half], 1)[0] * 10_000 if half.sum() > 1 else float("nan")
    print(f"model {args.model}, shapes:{args.n}, batch {args.batch_size}, per-image "
          f"{'on' if args.per_image else 'off'}, {doc['run']['images_per_s']:.0f} images/s")
    print(f"RSS after {int(done[0])} images: {rss[0]:7.1f} MB")
    print(f"RSS at the end ({int(done[-1])}): {rss[-1]:7.1f} MB   largest {rss.max():7.1f} MB")
    print(f"slope over the second half: {slope:+.2f} MB per 10,000 images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

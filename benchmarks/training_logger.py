"""Cost of watching attention while training: ``attnviz.train.fit`` with an
:class:`~attnviz.callbacks.AttentionLogger` at its default interval (every 100 steps, plus the
final state) against the same training without it.

Runs alternate (the order flips every repetition); the ratio is the median of the per-repetition
ratios of process CPU time. Same model, data, seed and steps in both.

    python benchmarks/training_logger.py                    # demo_cbam_resnet, 64 px, 300 steps
    python benchmarks/training_logger.py --steps 100 --reps 1   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import attnviz
from attnviz.callbacks import AttentionLogger, probe_batch
from attnviz.train import fit


def _run(model_name: str, data, steps: int, logger_dir: str | None, every: int) -> float:
    torch.manual_seed(0)
    model = attnviz.create_model(model_name, num_classes=5)
    logger = None
    if logger_dir is not None:
        probe, labels, objects = probe_batch(8, data.images.shape[-1])
        logger = AttentionLogger(model, probe, labels, objects, every=every, log_dir=logger_dir)
    t = time.process_time()
    fit(model, data.images, data.labels, steps, batch_size=64, progress=False, logger=logger)
    return time.process_time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo_cbam_resnet")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = attnviz.datasets.make_shapes(2000, seed=0, size=64)
    ratios, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = (None, tmp) if rep % 2 == 0 else (tmp, None)
            t = {d: _run(args.model, data, args.steps, d, args.every) for d in order}
            ratios.append(t[tmp] / t[None])
            plain.append(t[None])
    print(f"{args.model}, {args.steps} steps of batch 64 at 64 px, logger every {args.every} "
          f"steps (TensorBoard), 1 thread, {args.reps} reps")
    print(f"plain {statistics.median(plain):.1f} s CPU; with the logger: "
          f"{statistics.median(ratios):.3f}x (runs {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()

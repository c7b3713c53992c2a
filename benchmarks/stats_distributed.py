"""``attnviz stats`` on N processes (torchrun) against 1 process, same data, same result.

    python benchmarks/stats_distributed.py --model demo-se --n 1024 --procs 2
    python benchmarks/stats_distributed.py --device cuda --procs 8     # one process per GPU

Each run is ``torchrun --standalone --nproc_per_node P -m attnviz stats DATA ...`` with
OMP_NUM_THREADS (``--threads``, default 1) per process, on an ImageFolder of generated PNGs;
gloo on the CPU, NCCL on CUDA. Throughput is stats.json's ``run.images_per_s`` (the slowest
process's loop clock, without start-up); ``wall`` is the whole command, start-up included.
1-process and P-process runs alternate; the best of each counts. The aggregates of the two
are compared (largest difference printed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from attnviz.stats import read_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats_throughput import write_tree  # noqa: E402


def run(procs: int, data: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(images/s from stats.json, wall seconds) of one torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(procs), "-m", "attnviz", "stats", str(data), "--model", args.model, "--out",
           str(out), "--batch-size", str(args.batch_size), "--device", args.device,
           "--no-progress"]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    return float(read_stats(out)["run"]["images_per_s"]), wall


def largest_difference(a: object, b: object) -> float:
    if isinstance(a, np.ndarray):
        return float(np.nanmax(np.abs(a.astype(float) - b.astype(float)), initial=0.0))
    if isinstance(a, dict):
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        return max((largest_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-se")
    p.add_argument("--size", type=int, default=64, help="image side (the model's input size)")
    p.add_argument("--n", type=int, default=1024, help="generated images")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="attnviz-dist-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        write_tree(data, args.n, args.size)
        best: dict[int, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for procs in (1, args.procs):
                ips, wall = run(procs, data, Path(tmp) / f"out{procs}", args)
                old = best.get(procs, (0.0, float("inf")))
                best[procs] = (max(old[0], ips), min(old[1], wall))
        diff = largest_difference(read_stats(Path(tmp) / "out1")["layers"],
                                  read_stats(Path(tmp) / f"out{args.procs}")["layers"])
    one, many = best[1], best[args.procs]
    print(f"model {args.model}, {args.n} PNG images {args.size}px, batch {args.batch_size}, "
          f"{args.device}, {args.threads} thread(s) per process, best of {args.repeats}")
    print(f"1 process:   {one[0]:8.1f} images/s   wall {one[1]:6.1f} s")
    print(f"{args.procs} processes: {many[0]:8.1f} images/s   wall {many[1]:6.1f} s")
    print(f"speed-up:    {many[0] / one[0]:8.2f}x (loop)   {one[1] / many[1]:.2f}x (wall)")
    print(f"largest difference of the aggregates: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

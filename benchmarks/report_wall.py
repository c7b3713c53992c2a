"""Wall time and size of whole `attnviz report` runs: 10 and 100 generated shapes images.

    python benchmarks/report_wall.py [--model demo-cbam] [--repeats 3] [--cpus 2] [--threads N]

Each run is the real command in a fresh process (``python -m attnviz.cli report DIR --model M
--out OUT``, default options: figures for all 100 images), pinned to ``--cpus`` CPUs
(``--threads N`` sets OMP_NUM_THREADS for it; default: torch's own choice); 10- and 100-image
runs alternate, the median of each counts. The CPU time (user + system) of each run is printed
too: on a machine other work shares, it moves much less than the wall time. Targets (issue
"Reports, second version"): 100 images <= 12 s wall on 2 CPU cores, 100-image / 10-image wall
<= 1.6, report.html <= 8 MB.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report_throughput import write_images  # same generated images as the throughput benchmark

TARGETS = {"wall_100_s": 12.0, "ratio": 1.6, "html_mb": 8.0}


def run_once(images: Path, out: Path, model: str, cpus: list[int],
             threads: int | None) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one report command."""
    cmd = [sys.executable, "-m", "attnviz.cli", "report", str(images), "--model", model,
           "--out", str(out)]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                   preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-cbam")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpus", type=int, default=2, help="CPUs the report runs on")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs")
    args = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))[: args.cpus]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="attnviz-wall-") as tmp:
        root = Path(tmp)
        for n in (10, 100):
            (root / f"i{n}").mkdir()
            write_images(n, root / f"i{n}", 64)
        times: dict[int, list[float]] = {10: [], 100: []}
        cpu: dict[int, list[float]] = {10: [], 100: []}
        run_once(root / "i10", root / "warm", args.model, cpus, args.threads)  # caches, .pyc
        for _ in range(args.repeats):
            for n in (10, 100):
                wall, used = run_once(root / f"i{n}", root / f"o{n}", args.model, cpus,
                                      args.threads)
                times[n].append(wall)
                cpu[n].append(used)
        html_mb = (root / "o100" / "report.html").stat().st_size / 1e6
    wall10, wall100 = (statistics.median(times[n]) for n in (10, 100))
    ratio = wall100 / wall10
    print(f"model {args.model}, 64-px shapes images, {len(cpus)} CPU(s), OMP_NUM_THREADS "
          f"{args.threads or 'unset'}, median of {args.repeats}; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    for n in (10, 100):
        print(f"{n:3d} images: CPU time {statistics.median(cpu[n]):6.2f} s (runs: "
              f"{', '.join(f'{t:.2f}' for t in cpu[n])})")
    print(f"10 images:  {wall10:6.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[10])})")
    print(f"100 images: {wall100:6.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[100])})"
          f"   target <= {TARGETS['wall_100_s']:g} s: "
          f"{'met' if wall100 <= TARGETS['wall_100_s'] else 'NOT met'}")
    print(f"ratio 100/10: {ratio:5.2f}   target <= {TARGETS['ratio']:g}: "
          f"{'met' if ratio <= TARGETS['ratio'] else 'NOT met'}")
    print(f"report.html for 100 images: {html_mb:.2f} MB   target <= {TARGETS['html_mb']:g} MB: "
          f"{'met' if html_mb <= TARGETS['html_mb'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

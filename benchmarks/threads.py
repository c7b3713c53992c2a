"""The thread rule of :mod:`attnviz.threads` against fixed 1 and 2 threads, on a machine with
background load that this benchmark starts itself (``--load N`` busy processes, each spinning
one core, stopped at the end or after ``--max-seconds``).

Each setting runs ``attnviz.report.analyse`` on the same generated images (the report's batch
path: decode, resize, forward inside ``record()``, summaries); settings are interleaved over
``--reps`` rounds (the order rotates) and the median wall time per setting is printed with its
ratio to the best.

    python benchmarks/threads.py                    # demo-cbam, 400 images, 1 busy process
    python benchmarks/threads.py --model seresnet50 --n 32 --size 224 --load 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-cbam")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--load", type=int, default=1, help="busy background processes")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=600)
    args = p.parse_args()

    import attnviz
    from attnviz import threads
    from attnviz.report import analyse

    with tempfile.TemporaryDirectory() as tmp:
        data = attnviz.datasets.make_shapes(args.n, seed=5, size=args.size)
        from PIL import Image

        for i, im in enumerate((data.images * 255).round().byte().permute(0, 2, 3, 1).numpy()):
            Image.fromarray(im).save(Path(tmp) / f"{i:05d}.png")
        net = attnviz.load_model(args.model, device="cpu",
                                 **({} if args.model.startswith("demo-") else
                                    {"pretrained": False}))
        busy = [subprocess.Popen([sys.executable, "-c", SPIN.format(s=args.max_seconds)])
                for _ in range(args.load)]
        try:
            time.sleep(2)
            settings = {"default (rule)": None, "1 thread": 1, "2 threads": 2}
            times: dict[str, list[float]] = {k: [] for k in settings}
            for rep in range(args.reps):
                order = list(settings)[rep % 3:] + list(settings)[:rep % 3]
                for name in order:
                    t0 = time.perf_counter()
                    analyse([tmp], net=net, model=args.model, threads=settings[name],
                            progress=False, keep=0)
                    times[name].append(time.perf_counter() - t0)
        finally:
            for b in busy:
                b.kill()
        rule = threads.free_cores()
    best = min(statistics.median(v) for v in times.values())
    print(f"{args.model}, {args.n} images at {args.size} px, {args.load} busy process(es), "
          f"{threads.cpu_count()} cores, the rule chose {rule} thread(s) at the end")
    for name, v in times.items():
        m = statistics.median(v)
        runs = ", ".join(f"{t:.1f}" for t in v)
        print(f"{name:16s} {m:8.2f} s  {m / best:5.2f}x best   ({runs})")


if __name__ == "__main__":
    main()

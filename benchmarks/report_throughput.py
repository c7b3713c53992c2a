"""Images/s of the report's batch path against plain inference, side by side in one run.

    python benchmarks/report_throughput.py [--model demo-cbam] [--n 256] [--batch-size 16]
                                          [--workers 0] [--device auto] [--repeats 3]

* report: ``attnviz.report.analyse`` on a folder of PNG files, with the model built and checked
  once beforehand (``load_report_model``, as ``attnviz report`` does once per run): DataLoader
  reading and resizing the files (a reader thread when torch leaves a CPU free), batched forward
  passes inside ``attnviz.record`` (every attention weight copied to the CPU), per-image and
  per-layer summary statistics, the first 100 images and their weights kept for figures.
  No figures, no page.
* report, in memory: the same batch path over the same images already decoded (a data set
  handing out the tensors the files hold): the report's own work, without reading files.
* plain: the same model and batch size on images already in memory, ``model(prepare(batch))``
  under ``torch.no_grad()``, nothing recorded.

The three are run in turn ``--repeats`` times after a warm-up; the best time of each counts, and
each round's ratio (the two ran under the same load) is printed as a median and range.
Targets: report / plain >= 0.9 (demo-cbam), >= 0.95 (seresnet50 at 224 px).
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
from attnviz import report
from attnviz.datasets.shapes import make_shapes
from attnviz.engine.sources import Source, item
from attnviz.models import DEMO_MODELS
from attnviz.models.preprocess import prepare

TARGETS = {"seresnet50": 0.95}  # others: 0.9


def pick_model(name: str, device: str) -> tuple[torch.nn.Module, str]:
    """``name``, or the random-init architecture of a demo model whose checkpoint is missing."""
    try:
        return attnviz.load_model(name, device=device), name
    except attnviz.ModelError as e:
        if name not in DEMO_MODELS:
            raise
        arch = {"demo-cbam": "demo_cbam_resnet", "demo-se": "demo_se_resnet",
                "demo-resnest": "demo_resnest"}[name]
        print(f"note: {e}; using {arch} (random init, same architecture)")
        return attnviz.load_model(arch, device=device), arch


def write_images(n: int, folder: Path, size: int) -> torch.Tensor:
    from PIL import Image

    data = make_shapes(n, seed=123, size=size)
    arr = (data.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(arr):
        Image.fromarray(a).save(folder / f"img_{i:05d}.png")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255)  # what the files hold


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of plain inference over ``images``."""
    device = next(model.parameters()).device
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(prepare(model, images[i:i + batch_size])).float().cpu()
    sync(device)
    return time.perf_counter() - t, time.process_time() - c


class InMemory(torch.utils.data.Dataset):
    """The images as the report's data set hands them out, already decoded."""

    def __init__(self, images: torch.Tensor, names: list[str]) -> None:
        self.images, self.names = images, names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        pos, i = key
        return {**item(self.names[i], i, self.images[i]), "pos": pos}


def reported(params: report.ReportParameters, net: torch.nn.Module,
             source: Source | None = None) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of the report's batch path (cpu: all threads of the process)."""
    device = next(net.parameters()).device
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    run = report.analyse(params, net=net, keep=report.MAX_FIGURES, progress=False,
                         source=source)
    sync(device)
    elapsed = time.perf_counter() - t, time.process_time() - c
    assert not run.bad and run.summaries
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-cbam")
    p.add_argument("--n", type=int, default=256, help="generated shapes images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, name = pick_model(args.model, args.device)
    device = next(model.parameters()).device
    size = attnviz.models.preprocess.input_spec(model).size
    with tempfile.TemporaryDirectory(prefix="attnviz-bench-") as tmp:
        folder = Path(tmp)
        images = write_images(args.n, folder, size)
        # the report at the benchmark's thread count (its default follows the machine's load
        # average: benchmarks/threads.py measures that rule)
        params = report.validate(images=[str(folder)], model=model, batch_size=args.batch_size,
                                 num_workers=args.workers, threads=args.threads, out=False)
        net, _ = report.load_report_model(params)  # once per report, as `attnviz report` does
        files = sorted(str(p) for p in folder.iterdir())
        memory = Source("files", [str(folder)], None, InMemory(images, files))
        reported(params, net)  # warm-up (imports, caches)
        reported(params, net, memory)
        plain(model, images, args.batch_size)
        t_plain, t_report, t_memory = [], [], []
        for _ in range(args.repeats):
            t_plain.append(plain(model, images, args.batch_size))
            t_report.append(reported(params, net))
            t_memory.append(reported(params, net, memory))
    ips_plain = args.n / min(w for w, _ in t_plain)
    ips_report = args.n / min(w for w, _ in t_report)
    ips_memory = args.n / min(w for w, _ in t_memory)
    ratio = ips_report / ips_plain
    cpu_ratio = min(c for _, c in t_plain) / min(c for _, c in t_report)
    # each round's own ratio: plain and report ran side by side, under the same load
    rounds = sorted(p[0] / r[0] for p, r in zip(t_plain, t_report, strict=True))
    rounds_memory = sorted(p[0] / m[0] for p, m in zip(t_plain, t_memory, strict=True))
    print(f"model {name} on {device}, {args.n} images {size}x{size}, batch {args.batch_size}, "
          f"workers {args.workers}, torch threads {torch.get_num_threads()}, best of "
          f"{args.repeats}")
    print(f"plain inference (preloaded): {ips_plain:8.1f} images/s")
    print(f"report batch path (analyse): {ips_report:8.1f} images/s")
    print(f"  images in memory (no files): {ips_memory:6.1f} images/s, ratio "
          f"{ips_memory / ips_plain:.2f} (the report's own work; the rest is reading)")
    target = TARGETS.get(name, 0.9)
    print(f"ratio report/plain:          {ratio:8.2f}  (target >= {target:g}: "
          f"{'met' if ratio >= target else 'NOT met'})")
    print(f"  per round: median {statistics.median(rounds):.2f}, {rounds[0]:.2f}-{rounds[-1]:.2f}"
          f"; in memory: median {statistics.median(rounds_memory):.2f}")
    print(f"CPU time plain/report:       {cpu_ratio:8.2f}  (all threads; moves less with the "
          f"load of other work, load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Median time from a control change to a rendered figure (no model re-run), in the kernel.

    python benchmarks/widget_latency.py [--model demo-cbam] [--reps 20] [--load 2]

``--load N`` runs N busy processes during the measurement (a shared, busy machine).
Target: ≤ 50 ms for layer, channel, opacity and colour-map changes, also under load. The
browser adds transport and decoding: tests/e2e measures change → new image in Chromium.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable

import torch

import attnviz
from attnviz.widgets import CMAPS, AttentionExplorer


def _model(name: str) -> torch.nn.Module:
    try:
        return attnviz.load_model(name, device="cpu")
    except attnviz.AttnvizError:
        arch = {"demo-cbam": "demo_cbam_resnet", "demo-se": "demo_se_resnet"}.get(name, name)
        return attnviz.create_model(arch).eval()


def _busy(stop: float) -> None:
    x = 0
    while time.time() < stop:
        x += 1


def _timed(setter: Callable[[int], None], reps: int) -> list[float]:
    out = []
    for i in range(reps):
        t0 = time.perf_counter()
        setter(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(ex: AttentionExplorer, reps: int) -> dict[str, list[float]]:
    """Latency (ms) of each control, cycling through its values."""
    kinds = [r.kind for r in ex.analysis().records]
    spatial = kinds.index("spatial") if "spatial" in kinds else 0
    channel = kinds.index("channel") if "channel" in kinds else 0
    n_layers = len(kinds)
    results = {"layer": _timed(
        lambda i: setattr(ex.layer_slider, "value", (spatial + 1 + i) % n_layers), reps)}
    ex.layer_slider.value = channel
    n_ch = ex.channel_slider.max + 1
    results["channel"] = _timed(lambda i: setattr(ex.channel_slider, "value", (i + 1) % n_ch),
                                reps)
    ex.layer_slider.value = spatial
    results["opacity"] = _timed(lambda i: setattr(ex.opacity, "value", 0.3 + 0.05 * (i % 10)),
                                reps)
    results["colour map"] = _timed(
        lambda i: setattr(ex.cmap, "value", CMAPS[(i + 1) % len(CMAPS)]), reps)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-cbam")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--load", type=int, default=0, help="busy processes running meanwhile")
    args = p.parse_args()
    torch.set_num_threads(1)
    ex = AttentionExplorer(_model(args.model), attnviz.sample_images("shapes"), static=False)
    runs = ex.forward_count
    procs = [mp.Process(target=_busy, args=(time.time() + 120,), daemon=True)
             for _ in range(args.load)]
    for proc in procs:
        proc.start()
    try:
        results = measure(ex, args.reps)
    finally:
        for proc in procs:
            proc.terminate()
    assert ex.forward_count == runs, "a control change re-ran the model"
    print(f"{'control':10s} {'median ms':>10s} {'p90 ms':>8s}  (target <= 50 ms, model runs: 0, "
          f"busy processes: {args.load})")
    for k, v in results.items():
        p90 = sorted(v)[int(0.9 * (len(v) - 1))]
        print(f"{k:10s} {statistics.median(v):10.1f} {p90:8.1f}")


if __name__ == "__main__":
    main()

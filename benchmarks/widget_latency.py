"""Median time from a control change to a rendered figure (no model re-run), in the kernel.

    python benchmarks/widget_latency.py [--model demo-cbam] [--attention demo-botnet]
                                        [--reps 20] [--load 2]

The same explorer on a model with masks and channel gates (``--model``) and on a model with
self-attention (``--attention``: new query, head, opacity, query picked by a click), side by
side. ``--load N`` runs N busy processes during the measurement (a shared, busy machine).
Targets: ≤ 50 ms for layer, channel, opacity and colour-map changes, also under load; ≤ 15 ms
for a change on a self-attention layer. The browser adds transport and decoding: tests/e2e
measures change → new image in Chromium.
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


def measure_attention(ex: AttentionExplorer, reps: int) -> dict[str, list[float]]:
    """Latency (ms) of the controls of an attention layer: query (slider and click), head,
    opacity."""
    rows, heads = ex.row.max + 1, len(ex.head_select.options)
    grid = (rows, ex.col.max + 1)
    box, height = ex.weights_axes.get_window_extent(), ex.figure.bbox.height

    def click(i: int) -> None:
        r, c = (i * 3) % grid[0], (i * 5 + 1) % grid[1]
        ex._on_click({"dataX": box.x0 + (c + 0.5) * box.width / grid[1],
                      "dataY": height - box.y1 + (r + 0.5) * box.height / grid[0]})

    return {
        "query row": _timed(lambda i: setattr(ex.row, "value", (ex.row.value + 1) % rows), reps),
        "query click": _timed(click, reps),
        "head": _timed(lambda i: setattr(ex.head_select, "value",
                                         ex.head_select.options[(i + 1) % heads][1]), reps),
        "opacity": _timed(lambda i: setattr(ex.opacity, "value", 0.3 + 0.05 * (i % 10)), reps),
    }


def _print(title: str, results: dict[str, list[float]], target: int) -> None:
    print(f"{title}: {'control':12s} {'median ms':>10s} {'p90 ms':>8s}  (target <= {target} ms)")
    for k, v in results.items():
        p90 = sorted(v)[int(0.9 * (len(v) - 1))]
        print(f"{' ' * len(title)}  {k:12s} {statistics.median(v):10.1f} {p90:8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-cbam")
    p.add_argument("--attention", default="demo-botnet", help="a model with self-attention")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--load", type=int, default=0, help="busy processes running meanwhile")
    args = p.parse_args()
    torch.set_num_threads(1)
    ex = AttentionExplorer(_model(args.model), attnviz.sample_images("shapes"), static=False)
    att = AttentionExplorer(_model(args.attention), attnviz.sample_images("shapes"),
                            kinds=("attention",), static=False)
    runs, att_runs = ex.forward_count, att.forward_count
    procs = [mp.Process(target=_busy, args=(time.time() + 120,), daemon=True)
             for _ in range(args.load)]
    for proc in procs:
        proc.start()
    try:
        results = measure(ex, args.reps)
        attention = measure_attention(att, args.reps)
    finally:
        for proc in procs:
            proc.terminate()
    assert ex.forward_count == runs and att.forward_count == att_runs, \
        "a control change re-ran the model"
    print(f"model runs on control changes: 0; busy processes: {args.load}")
    _print(f"{args.model} (masks, channels)", results, 50)
    _print(f"{args.attention} (self-attention)", attention, 15)


if __name__ == "__main__":
    main()

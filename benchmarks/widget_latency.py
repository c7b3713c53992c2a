"""Median time from a control change to a rendered figure (no model re-run).

    python benchmarks/widget_latency.py [--model demo-cbam] [--reps 20]
Target: ≤ 50 ms for layer, channel and opacity changes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import attnviz
from attnviz.widgets import AttentionExplorer


def _model(name: str) -> torch.nn.Module:
    try:
        return attnviz.load_model(name, device="cpu")
    except attnviz.AttnvizError:
        arch = {"demo-cbam": "demo_cbam_resnet", "demo-se": "demo_se_resnet"}.get(name, name)
        return attnviz.create_model(arch).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-cbam")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    ex = AttentionExplorer(_model(args.model), attnviz.sample_images("shapes"), static=False)
    kinds = [r.kind for r in ex.analysis().records]
    spatial = kinds.index("spatial") if "spatial" in kinds else 0
    channel = kinds.index("channel") if "channel" in kinds else 0
    runs = ex.forward_count

    def timed(setter) -> list[float]:
        out = []
        for i in range(args.reps):
            t0 = time.perf_counter()
            setter(i)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    n_layers = len(kinds)
    results = {
        "layer": timed(lambda i: setattr(ex.layer_slider, "value", (spatial + 1 + i) % n_layers)),
    }
    ex.layer_slider.value = channel
    n_ch = ex.channel_slider.max + 1
    results["channel"] = timed(lambda i: setattr(ex.channel_slider, "value", (i + 1) % n_ch))
    ex.layer_slider.value = spatial
    results["opacity"] = timed(lambda i: setattr(ex.opacity, "value", 0.3 + 0.05 * (i % 10)))
    assert ex.forward_count == runs, "a control change re-ran the model"
    print(f"{'control':10s} {'median ms':>10s} {'p90 ms':>8s}  (target <= 50 ms, model runs: 0)")
    for k, v in results.items():
        p90 = sorted(v)[int(0.9 * (len(v) - 1))]
        print(f"{k:10s} {statistics.median(v):10.1f} {p90:8.1f}")


if __name__ == "__main__":
    main()

"""Grad-CAM with ``target=None`` (attnviz: one forward pass picks the class and feeds the
backward) against Captum's ``LayerGradCam`` given the target, on real attention ResNets.

Both run on the same frozen copy of the model; the two are interleaved (the order alternates
every repetition, so a slow drift of the machine hits both alike); the ratio is the median of
the per-repetition ratios (CPU time of this process, which the load of other work moves less
than wall time; wall-time ratio printed too). One intra-op thread unless ``--threads``.

    python benchmarks/attribution_overhead.py                 # batch 4, 224 px, 7 reps, CPU
    python benchmarks/attribution_overhead.py --reps 3 --batch 2 --size 160   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

MODELS = {"seresnet50": "layer4", "cbam_resnet50": "layer4"}


def _build(name: str) -> torch.nn.Module:
    import attnviz

    if name == "cbam_resnet50":
        return attnviz.create_model("cbam_resnet50").eval()
    import timm

    return timm.create_model(name, pretrained=False).eval()


def _time(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.size} px, {args.reps} reps, {args.threads} thread(s)")
    print(f"{'model':16s} {'captum+target s':>16s} {'attnviz None s':>15s} {'cpu ratio':>10s} "
          f"{'wall ratio':>10s}")
    for name, layer in MODELS.items():
        cpu, wall, base = _compare(_build(name), layer, args)
        print(f"{name:16s} {statistics.median(base):16.3f} "
              f"{statistics.median(base) * statistics.median(wall):15.3f} "
              f"{statistics.median(cpu):10.2f} {statistics.median(wall):10.2f}")


def _compare(model: torch.nn.Module, layer: str, args: argparse.Namespace,
             ) -> tuple[list[float], list[float], list[float]]:
    """Per repetition: CPU and wall ratios attnviz(None) / Captum(target), Captum's wall s."""
    from captum.attr import LayerGradCam

    from attnviz import attribution

    x = torch.rand(args.batch, 3, args.size, args.size)
    twin = attribution.attribution_model(model)
    with torch.no_grad():
        target = twin(x).argmax(1)
    cam = LayerGradCam(twin, twin.get_submodule(layer))

    def captum_with_target() -> None:
        cam.attribute(x, target=target)

    def attnviz_none() -> None:
        attribution.gradcam(model, x, layer)

    attnviz_none(), captum_with_target()  # warm-up
    cpu, wall, base = [], [], []
    for rep in range(args.reps):
        pair = (captum_with_target, attnviz_none) if rep % 2 else (attnviz_none,
                                                                 captum_with_target)
        times = {f: _time(f) for f in pair}
        a, c = times[attnviz_none], times[captum_with_target]
        cpu.append(a[1] / c[1])
        wall.append(a[0] / c[0])
        base.append(c[0])
    return cpu, wall, base

if __name__ == "__main__":
    main()

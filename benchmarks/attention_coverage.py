"""How many attention units of timm / torchvision models ``attnviz.record`` records.

Every module whose class is a known attention unit (SE, ECA, split/selective-kernel attention,
global context, coordinate attention, self-attention blocks of BoTNet / HaloNet / ViT / MaxViT /
CoAtNet / GCViT / MobileViT, ...) must have at least one record at or below its name after one
forward pass of the randomly initialised model.

    python benchmarks/attention_coverage.py            # the whole list (a few minutes on a CPU)
    python benchmarks/attention_coverage.py --quick    # a handful of models
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

UNITS = {
    "SEModule", "EffectiveSEModule", "SqueezeExcite", "SqueezeExciteCl", "SqueezeExcitation",
    "EcaModule", "CecaModule", "SplitAttn", "SelectiveKernelAttn", "GlobalContext", "CoordAttn",
    "BottleneckAttn", "HaloAttn", "LambdaLayer", "NonLocalAttn", "EseModule", "Attention",
    "Attention2d", "AttentionCl", "WindowAttention", "WindowAttentionGlobal",
    "RelativePositionalMultiHeadAttention", "GhostModuleV2", "ChannelAttn", "SpatialAttn",
    "LightChannelAttn", "LightSpatialAttn", "GatherExcite", "MultiheadAttention",
    "ShiftedWindowAttention", "ShiftedWindowAttentionV2", "ClassAttn", "TalkingHeadAttn",
}
TIMM = {  # model: input size
    "seresnet18": 64, "seresnext26d_32x4d": 64, "legacy_seresnet18": 64, "resnetrs50": 64,
    "ecaresnet26t": 64, "ecaresnet50d": 64, "resnest14d": 64, "resnest50d_4s2x40d": 64,
    "resnest50d_1s4x24d": 64, "skresnet18": 64, "gcresnet50t": 64, "gcresnext26ts": 64,
    "botnet26t_256": 256, "sebotnet33ts_256": 256, "eca_botnext26ts_256": 256,
    "halonet26t": 256, "lambda_resnet26t": 256, "efficientnet_b0": 64, "mobilenetv3_small_100": 64,
    "regnety_002": 64, "ghostnetv2_100": 64, "hgnet_tiny": 64, "ese_vovnet19b_dw": 64,
    "rexnet_100": 64, "vit_tiny_patch16_224": 224, "deit_tiny_patch16_224": 224,
    "maxvit_nano_rw_256": 256, "coatnet_nano_rw_224": 224, "gcvit_xxtiny": 224,
    "mobilevit_xxs": 256, "cait_xxs24_224": 224,
}
TORCHVISION = {"efficientnet_b0": 64, "mobilenet_v3_small": 64, "regnet_y_400mf": 64,
               "maxvit_t": 224, "vit_b_16": 224, "swin_t": 224}
QUICK = ("seresnet18", "botnet26t_256", "vit_tiny_patch16_224", "maxvit_t")


def coverage(model: torch.nn.Module, size: int) -> tuple[int, int, list[str], float]:
    import attnviz

    units = [n for n, m in model.named_modules() if type(m).__name__ in UNITS]
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings(), attnviz.record(model) as rec:
        warnings.simplefilter("ignore")
        model(torch.randn(1, 3, size, size))
    seconds = time.perf_counter() - t0
    names = {r.name for r in rec.records}
    missed = [u for u in units if not any(n == u or n.startswith(u + ".") for n in names)]
    # a unit nested in another unit (a gate inside a block) counts once, with its parent
    missed = [u for u in missed if not any(u.startswith(o + ".") for o in units if o != u)]
    return len(units), len(missed), missed, seconds


def main() -> None:
    import timm
    import torchvision

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, size in TIMM.items():
        if args.quick and name not in QUICK:
            continue
        rows.append((f"timm {name}", timm.create_model(name, pretrained=False).eval(), size))
    for name, size in TORCHVISION.items():
        if args.quick and name not in QUICK:
            continue
        rows.append((f"torchvision {name}",
                     getattr(torchvision.models, name)(weights=None).eval(), size))
    total = missed_total = 0
    print(f"{'model':40s}{'units':>7s}{'missed':>8s}{'record s':>10s}  missed units")
    for label, model, size in rows:
        n, missed, names, seconds = coverage(model, size)
        total, missed_total = total + n, missed_total + missed
        print(f"{label:40s}{n:>7d}{missed:>8d}{seconds:>10.2f}  {', '.join(names[:3])}",
              flush=True)
    print(f"{len(rows)} models: {total - missed_total} of {total} attention units recorded "
          f"({missed_total} missed)")


if __name__ == "__main__":
    main()

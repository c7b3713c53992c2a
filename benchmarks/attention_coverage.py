"""How many attention units of timm / torchvision models ``attnviz.record`` records.

Every module whose class is a known attention unit (SE, ECA, split/selective-kernel attention,
global context, coordinate attention, self-attention blocks of BoTNet / HaloNet / ViT / MaxViT /
CoAtNet / GCViT / MobileViT, ...) must have at least one record at or below its name after one
forward pass of the randomly initialised model.

    python benchmarks/attention_coverage.py            # the whole list (a few minutes on a CPU)
    python benchmarks/attention_coverage.py --quick    # a handful of models
    python benchmarks/attention_coverage.py --hostile  # the models of issue 21 only

Per model: ``units`` expected (modules of a known attention class), ``recorded`` (a record at or
below the unit), ``named`` (not recorded but listed as a candidate: never silent), ``silent``
(neither), and ``extra``: records outside every unit (an activation taken for a gate, ...).
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
    "LocallyGroupedAttn", "GlobalSubSampleAttn", "ChannelAttention", "ChannelAttentionV2",
    "Attention2dDownsample", "GPSA", "MHSA", "LinearSelfAttention", "FactorAttnConvRelPosEnc",
}
HOSTILE = {  # issue 21: windowed, talking heads, mixed softmaxes, QuickGELU, separable, factorised
    "swin_tiny_patch4_window7_224": 224, "twins_svt_small": 224, "davit_tiny": 224,
    "cait_xxs24_224": 224, "efficientformerv2_s0": 224, "convit_tiny": 224,
    "vit_base_patch32_clip_224": 224, "mobilevitv2_050": 256, "coat_lite_tiny": 224,
    "lambda_resnet26t": 256,
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
    "mobilevit_xxs": 256, **HOSTILE,
}
TORCHVISION = {"efficientnet_b0": 64, "mobilenet_v3_small": 64, "regnet_y_400mf": 64,
               "maxvit_t": 224, "vit_b_16": 224, "swin_t": 224}
QUICK = ("seresnet18", "botnet26t_256", "vit_tiny_patch16_224", "maxvit_t")


def _under(name: str, unit: str) -> bool:
    return name == unit or name.startswith(unit + ".")


def coverage(model: torch.nn.Module, size: int) -> dict:
    """Expected attention units of ``model`` vs what one recorded pass found and named."""
    import attnviz
    from attnviz.record.sites import model_info

    units = [n for n, m in model.named_modules() if type(m).__name__ in UNITS]
    # a unit nested in another unit (a gate inside a block) counts once, with its parent
    units = [u for u in units if not any(u.startswith(o + ".") for o in units if o != u)]
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings(), attnviz.record(model) as rec:
        warnings.simplefilter("ignore")
        model(torch.randn(1, 3, size, size))
    seconds = time.perf_counter() - t0
    names = {r.name for r in rec.records}
    looks = model_info(model).candidates
    recorded = [u for u in units if any(_under(n, u) for n in names)]
    named = [u for u in units if u not in recorded
             and any(_under(c, u) or _under(u, c) for c in looks)]
    silent = [u for u in units if u not in recorded and u not in named]
    extra = sorted(n for n in names if not any(_under(n, u) for u in units))
    kinds = sorted({r.kind for r in rec.records})
    windowed = sum(1 for r in rec.records if "windows" in r.meta)
    mixed = sum(1 for r in rec.records if "mixed" in r.meta)
    return dict(units=len(units), recorded=len(recorded), named=len(named), silent=silent,
                extra=extra, seconds=seconds, kinds=kinds, windowed=windowed, mixed=mixed)


def main() -> None:
    import timm
    import torchvision

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--hostile", action="store_true", help="only the models of issue 21")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, size in TIMM.items():
        if (args.quick and name not in QUICK) or (args.hostile and name not in HOSTILE):
            continue
        rows.append((f"timm {name}", timm.create_model(name, pretrained=False).eval(), size))
    for name, size in TORCHVISION.items():
        if (args.quick and name not in QUICK) or (args.hostile and name != "swin_t"):
            continue
        rows.append((f"torchvision {name}",
                     getattr(torchvision.models, name)(weights=None).eval(), size))
    sums = dict(units=0, recorded=0, named=0, silent=0, extra=0)
    print(f"{'model':44s}{'units':>6s}{'rec':>5s}{'named':>6s}{'silent':>7s}{'extra':>6s}"
          f"{'win':>5s}{'mixed':>6s}{'s':>7s}  kinds; silent / extra units")
    for label, model, size in rows:
        c = coverage(model, size)
        for k in sums:
            sums[k] += c[k] if isinstance(c[k], int) else len(c[k])
        print(f"{label:44s}{c['units']:>6d}{c['recorded']:>5d}{c['named']:>6d}"
              f"{len(c['silent']):>7d}{len(c['extra']):>6d}{c['windowed']:>5d}{c['mixed']:>6d}"
              f"{c['seconds']:>7.2f}  {','.join(c['kinds'])}; "
              f"{', '.join(c['silent'][:2] + c['extra'][:2])}", flush=True)
    print(f"{len(rows)} models: {sums['recorded']} of {sums['units']} attention units recorded, "
          f"{sums['named']} named as candidates, {sums['silent']} silent; {sums['extra']} "
          "records outside every unit")


if __name__ == "__main__":
    main()

"""Forward time with ``attnviz.record`` vs without, on real attention ResNets.

Plain and recorded forwards are interleaved (the order rotates every repetition, so a slow
drift of the machine hits all alike); the reported ratio is the median of the per-repetition
ratios recorded/plain. The recorded time includes installing and removing the hooks.

Rows: named adapters (timm resnest50d / seresnet50, attnviz cbam_resnet50), the observed path
(``tutorial-cbam_resnet50``: hand-written CBAM modules attnviz has no adapter for; and
``botnet26t_256``: self-attention maps), and the 64-px demo model at batch 1. ``first`` is the
very first recording of the model (which watches the whole forward pass to find the sites,
unless named adapters explain every weight, as in attnviz's own ResNets) against the median
plain forward; ``rec MiB`` is the memory the records hold. ``hooks+clone``
is the floor of a hand-written script on the same modules (forward hooks that clone the output,
installed and removed around each call), where every site is a named adapter.

    python benchmarks/recorder_overhead.py                      # batch 8, 224 px, 7 reps, CPU
    python benchmarks/recorder_overhead.py --reps 3 --batch 2   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

MODELS: dict[str, Callable[[], nn.Module]] = {}
#: (batch, size) fixed by the model instead of --batch / --size
FIXED: dict[str, tuple[int, int]] = {"demo-cbam@1": (1, 64), "botnet26t_256": (8, 256)}


def _model(name: str) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        import attnviz

        if name.startswith("attnviz:"):
            return attnviz.create_model(name.split(":", 1)[1])
        if name == "tutorial-cbam_resnet50":
            from attnviz.examples import tutorial_cbam_resnet50

            return tutorial_cbam_resnet50()
        if name == "demo-cbam@1":
            return attnviz.load_model("demo-cbam")
        import timm

        return timm.create_model(name, pretrained=False)

    return factory


for _name in ("resnest50d", "seresnet50", "attnviz:cbam_resnet50", "tutorial-cbam_resnet50",
              "botnet26t_256", "demo-cbam@1"):
    MODELS[_name] = _model(_name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain(model: nn.Module, x: torch.Tensor) -> None:
    model(x)


def _recorded(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    import attnviz

    with attnviz.record(model) as rec:
        model(x)
    return len(rec.records), sum(r.value.numel() * 4 for r in rec.records)


def _hand_written(targets: list[nn.Module]) -> Callable[[nn.Module, torch.Tensor], None]:
    """The floor a user's own script reaches: a forward hook that clones the output of every
    module attnviz's named adapters hook, installed and removed around each call (None when
    the model has sites that are not named adapters)."""
    def run(model: nn.Module, x: torch.Tensor) -> None:
        kept: list[torch.Tensor] = []
        handles = [t.register_forward_hook(lambda _m, _i, o: kept.append(o.detach().clone()))
                   for t in targets]
        model(x)
        for h in handles:
            h.remove()

    return run


def _adapter_targets(model: nn.Module) -> list[nn.Module] | None:
    from attnviz.record.sites import model_info

    info = model_info(model)
    if not info.adapters_only():
        return None
    return list(info.hook_targets().values())


def bench(
    name: str, device: torch.device, batch: int, size: int, reps: int, warmup: int
) -> dict[str, float]:
    batch, size = FIXED.get(name, (batch, size))
    model = MODELS[name]().eval().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    times: dict[str, list[float]] = {"plain": [], "recorded": [], "hand": []}
    with torch.no_grad():
        _plain(model, x)
        _sync(device)
        t0 = time.perf_counter()
        n_records, n_bytes = _recorded(model, x)  # the first recording watches everything
        _sync(device)
        first_s = time.perf_counter() - t0
        targets = _adapter_targets(model)
        runs = {"plain": _plain, "recorded": _recorded}
        if targets is not None:
            runs["hand"] = _hand_written(targets)
        for _ in range(warmup):
            for run in runs.values():
                run(model, x)
        _sync(device)
        for i in range(reps):
            keys = list(runs)  # each run takes each position in turn
            order = keys[i % len(keys):] + keys[:i % len(keys)]
            for key in order:
                _sync(device)
                t0 = time.perf_counter()
                runs[key](model, x)
                _sync(device)
                times[key].append(time.perf_counter() - t0)
    plain_s, rec_s = times["plain"], times["recorded"]
    ratios = [r / p for r, p in zip(rec_s, plain_s, strict=True)]
    hand = [h / p for h, p in zip(times["hand"], plain_s, strict=False)]
    return {
        "plain_ms": statistics.median(plain_s) * 1e3,
        "recorded_ms": statistics.median(rec_s) * 1e3,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "hand": statistics.median(hand) if hand else float("nan"),
        "records": n_records,
        "first": first_s / statistics.median(plain_s),
        "mib": n_bytes / 2**20,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=7, help="timed plain/recorded pairs")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--devices",
        nargs="+",
        default=["cpu", "cuda"],
        choices=["cpu", "cuda"],
        help="cuda is skipped when no GPU is present",
    )
    args = parser.parse_args(argv)
    if min(args.batch, args.size, args.reps, args.threads) < 1 or args.warmup < 0:
        parser.error("--batch, --size, --reps and --threads must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)

    devices = [torch.device(d) for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    print(
        f"recorder overhead: batch {args.batch}, {args.size} px, {args.reps} reps, "
        f"{args.threads} CPU thread(s), torch {torch.__version__}, no_grad, eval"
    )
    header = (
        f"{'model':<24}{'device':<8}{'plain ms':>10}{'recorded ms':>13}{'ratio':>8}"
        f"{'ratio range':>16}{'hooks+clone':>12}{'records':>9}{'first':>7}{'rec MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for name in args.models:
            r = bench(name, device, args.batch, args.size, args.reps, args.warmup)
            name = f"{name} (b{FIXED[name][0]})" if name in FIXED else name
            print(
                f"{name:<24}{device.type:<8}{r['plain_ms']:>10.1f}{r['recorded_ms']:>13.1f}"
                f"{r['ratio']:>8.3f}{r['ratio_min']:>8.3f}–{r['ratio_max']:<7.3f}"
                f"{r['hand']:>12.3f}"
                f"{r['records']:>9d}{r['first']:>7.2f}{r['mib']:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""``attnviz stats`` and ``attnviz stats-html``: the command lines of :mod:`attnviz.stats`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checks import MAX_BATCH_SIZE
from ..commands import CommandParser, UsageError, run_command
from ..errors import AttnvizError
from ..terminal import one_line, shown
from ..threads import add_threads_argument
from .distributed import env_rank

STATS_HELP = """Attention statistics of MODEL over a whole dataset: per class and layer the mean
and variance of s(c), per spatial layer the mean mask, where masks peak and their entropy, per
radix layer the mean weights per class, per attention-map layer entropy and attention distance
per head, accuracy, and with ground truth (shapes:N) pointing game and energy in box.
Writes OUT/stats.json and OUT/stats.html (and OUT/per_image/*.parquet with --per-image).

The same command under torchrun splits the data over the processes and gives the same result:
  torchrun --standalone --nproc_per_node 2 -m attnviz stats DATA --model MODEL --out OUT"""

DATA_HELP = """an ImageFolder tree (class sub-folders), image files / folders / glob patterns,
shapes:N (generated, with ground truth) or WebDataset tar shards (data-{000..099}.tar)"""

EXIT_CODES = """exit codes:
  0  written (also when some images could not be read: they are counted and listed)
  2  invalid parameters: one line "attnviz: error: ..."
  130  interrupted: nothing written but the checkpoints saved so far (--resume continues)
"""


def build_parser() -> argparse.ArgumentParser:
    from ..models.user import add_model_arguments

    fmt = argparse.RawDescriptionHelpFormatter
    p = CommandParser(prog="attnviz stats", description=STATS_HELP, epilog=EXIT_CODES,
                      formatter_class=fmt)
    p.add_argument("data", nargs="+", metavar="DATA", help=DATA_HELP)
    add_model_arguments(p)
    add_threads_argument(p)
    p.add_argument("--out", default="stats", metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("--layers", default=None, metavar="PAT",
                   help="only attention modules whose name matches ('layer4*', 're:...')")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help=f"images per forward pass, at most {MAX_BATCH_SIZE} (default: 64)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="DataLoader worker processes per process (default: 0)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu or cuda; under torchrun each process "
                        "takes its local GPU (default: auto)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--per-image", action="store_true",
                   help="also write one Parquet row per image and layer, one file per process")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run into the same --out from its checkpoints")
    p.add_argument("--save-every", type=float, default=300.0, metavar="SECONDS",
                   help="seconds between checkpoints (default: 300; 0: every batch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _stats(argv: list[str]) -> int:
    from ..checks import cpu_count
    from ..models.user import model_options
    from .document import read_stats
    from .run import dataset_stats

    args = build_parser().parse_args(argv)
    if args.workers > cpu_count() and env_rank() == 0:
        print(f"attnviz: note: --workers {args.workers} is more than the {cpu_count()} CPU(s) "
              f"here; using {cpu_count()}", file=sys.stderr)

    path = dataset_stats(
        args.data, args.model, args.out, model_options=model_options(args), output=args.output,
        random_weights=args.random_weights, layers=args.layers, threads=args.threads,
        batch_size=args.batch_size, workers=args.workers, device=args.device, amp=args.amp,
        per_image=args.per_image, resume=args.resume, save_every=args.save_every,
        progress=not args.no_progress)
    if env_rank() != 0:
        return 0
    doc = read_stats(path)
    d, r = doc["data"], doc["run"]
    if d["n_bad"]:
        listed = "; ".join(f"{shown(b['image'])} ({one_line(b['reason'])})" for b in d["bad"][:3])
        more = f"; and {d['n_bad'] - 3} more" if d["n_bad"] > 3 else ""
        print(f"attnviz: warning: {d['n_bad']} image(s) could not be read and are listed in "
              f"stats.json: {listed}{more}", file=sys.stderr)
    print(f"attnviz: wrote {shown(path)} and stats.html ({d['n_images']} images, "
          f"{r['images_per_s']:.1f} images/s on {r['world_size']} process(es))")
    return 0


def _only_rank0_reports(fn):
    def run(argv: list[str]) -> int:
        try:
            return fn(argv)
        except (UsageError, AttnvizError):
            if env_rank() > 0:
                return 2  # rank 0 prints the same error once
            raise

    return run


def main(argv: list[str] | None = None) -> int:
    """``attnviz stats``; returns the exit code."""
    return run_command(_only_rank0_reports(_stats), argv)


def html_main(argv: list[str] | None = None) -> int:
    """``attnviz stats-html STATS_JSON [--out HTML]``: rebuild the page without the model."""
    from .html import write_html

    def run(args_list: list[str]) -> int:
        p = CommandParser(prog="attnviz stats-html",
                          description="Rebuild stats.html from a stats.json alone.")
        p.add_argument("stats", metavar="STATS_JSON", help="stats.json, or the folder with it")
        p.add_argument("--out", default=None, metavar="HTML",
                       help="where to write (default: stats.html beside stats.json)")
        args = p.parse_args(args_list)
        if not Path(args.stats).exists():
            raise UsageError(f"{args.stats!r} does not exist")
        print(f"attnviz: wrote {shown(write_html(args.stats, args.out))}")
        return 0

    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())

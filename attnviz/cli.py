"""The ``attnviz`` command: ``report``, ``train``, ``evaluate``, ``lab``, ``notebooks``."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .checks import MAX_BATCH_SIZE, cpu_count
from .terminal import one_line, shown

EXIT_CODES = """exit codes:
  0  report written (also when some images could not be read: they are listed in the
     report's "could not read" section and a warning line is printed)
  1  the report notebook failed (the failing cell's exception is printed; the partly
     executed notebook is kept in the output folder)
  2  invalid parameters (unknown model, no images matched, a layer pattern matching no
     attention module, a bad device, --top-k < 1, ...): one line "attnviz: error: ..."
"""

REPORT_HELP = """Record the attention weights of MODEL on IMAGES and write a self-contained HTML
report (figures embedded, nothing loaded from the network) to OUT/report.html, next to
OUT/report.ipynb (the executed notebook), OUT/summary.csv (one row per image and attention
layer) and OUT/summary.json."""


class UsageError(Exception):
    """A command-line mistake argparse found."""


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors raise :class:`UsageError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            digits = str(value)
            got = digits if len(digits) <= 12 else f"{digits[:6]}... ({len(digits)} digits)"
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {got}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = CommandParser(
        prog="attnviz", formatter_class=fmt, epilog=EXIT_CODES,
        description="See the attention weights of attention ResNets: reports, training, "
                    "evaluation, notebooks.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"attnviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rep = sub.add_parser("report", help="write an HTML attention report for a set of images",
                         description=REPORT_HELP, epilog=EXIT_CODES, formatter_class=fmt)
    rep.add_argument("images", nargs="+", metavar="IMAGES",
                     help="image files, folders (their image files) or glob patterns")
    rep.add_argument("--model", default="demo-cbam",
                     help="demo model (demo-cbam, demo-se, demo-resnest, offline), a timm "
                          "name (its pretrained ImageNet weights: needs the network unless "
                          "--checkpoint is given) or an attnviz architecture with --checkpoint "
                          "(default: %(default)s)")
    rep.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="local weights file for the architecture --model names")
    rep.add_argument("--layers", default=None, metavar="PAT",
                     help="only attention modules whose name matches this glob "
                          "(e.g. 'layer3*'; 're:...' for a regex)")
    rep.add_argument("--device", default="auto",
                     help="auto (CUDA when present), cpu, cuda, cuda:1, ... (default: auto)")
    rep.add_argument("--out", default="reports", metavar="DIR",
                     help="output folder (default: %(default)s)")
    rep.add_argument("--top-k", type=_int_at_least(1), default=10, metavar="K",
                     help="channels shown per block (default: %(default)s)")
    rep.add_argument("--attribution", action="store_true",
                     help="also compare a spatial mask with Grad-CAM / integrated gradients / "
                          "saliency (Captum; slower)")
    rep.add_argument("--amp", action="store_true",
                     help="mixed precision (fp16 on CUDA, bf16 on CPU); weights recorded as "
                          "float32")
    rep.add_argument("--batch-size", type=_int_at_least(1, MAX_BATCH_SIZE), default=16,
                     metavar="N", help="images per forward pass, at most "
                                       f"{MAX_BATCH_SIZE} (default: %(default)s)")
    rep.add_argument("--workers", type=_int_at_least(0), default=0, metavar="N",
                     help="DataLoader worker processes reading images, at most the CPU count "
                          "(default: %(default)s)")
    sub.add_parser("train", add_help=False,
                   help="train a model on the shapes data (`attnviz train --help`)")
    sub.add_parser("evaluate", add_help=False,
                   help="score a model's attention on held-out shapes (`attnviz evaluate --help`)")
    sub.add_parser("lab", add_help=False,
                   help="open the notebooks in JupyterLab: `attnviz lab [DIR]`")
    sub.add_parser("notebooks", add_help=False,
                   help="copy the notebooks into a folder: `attnviz notebooks DIR`")
    return parser


def _delegate(module: str) -> Callable[[list[str]], int | None]:
    def run(argv: list[str]) -> int | None:
        if importlib.util.find_spec(f"attnviz.{module}") is None:
            raise UsageError(f"`attnviz {module}` is not available in this installation")
        return importlib.import_module(f"attnviz.{module}").main(argv)

    return run


DELEGATES = {"train": _delegate("train"), "evaluate": _delegate("evaluate"),
             "lab": _delegate("lab"), "notebooks": _delegate("resources")}


def _err(message: object) -> None:
    print(f"attnviz: error: {one_line(message)}", file=sys.stderr)


def run_command(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main(argv)``: usage mistakes and AttnvizErrors become one line
    ``attnviz: error: ...`` and exit code 2, Ctrl-C exit code 130, ``--help`` 0."""
    from .errors import AttnvizError

    try:
        return int(main(list(sys.argv[1:] if argv is None else argv)) or 0)
    except SystemExit as e:  # argparse's --help / --version, or a command's own exit
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (UsageError, AttnvizError) as e:
        _err(e)
        return 2
    except KeyboardInterrupt:
        print("attnviz: interrupted", file=sys.stderr)
        return 130


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def report(args: argparse.Namespace) -> int:
    from . import report as rep

    t0 = time.perf_counter()
    workers = min(args.workers, cpu_count())
    if workers < args.workers:
        print(f"attnviz: note: --workers {args.workers} is more than the {cpu_count()} CPU(s) "
              f"here; using {workers}", file=sys.stderr)
    try:
        html_path = rep.write_report(
            args.images, model=args.model, out_dir=args.out, checkpoint=args.checkpoint,
            layers=args.layers,
            device=args.device, top_k=args.top_k, attribution=args.attribution,
            batch_size=args.batch_size, num_workers=workers, amp=args.amp,
            log=lambda line: print(f"attnviz: {line}", file=sys.stderr, flush=True),
        )
    except rep.ReportExecutionError as e:
        print(f"attnviz: report failed in notebook cell {e.cell_index}: {e.ename}: "
              f"{one_line(e.evalue)}", file=sys.stderr)
        print(f"attnviz: the partly executed notebook is {shown(e.notebook)}", file=sys.stderr)
        return 1
    summary = rep.read_summary(html_path.parent)
    bad = summary.get("could_not_read", [])
    if bad:
        listed = "; ".join(f"{shown(b['image'])} ({one_line(b['reason'])})" for b in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        print(f"attnviz: warning: {len(bad)} input(s) could not be read and are listed in the "
              f"report: {listed}{more}", file=sys.stderr)
    where = html_path if Path(args.out).is_absolute() else Path(os.path.relpath(html_path))
    print(f"attnviz: wrote {shown(where)} ({_size(html_path.stat().st_size)}, "
          f"{summary.get('n_images', '?')} image(s) analysed) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def _main(argv: list[str]) -> int:
    if argv and argv[0] in DELEGATES:
        return int(DELEGATES[argv[0]](argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return report(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``attnviz`` command; returns the exit code (see ``attnviz --help``)."""
    return run_command(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

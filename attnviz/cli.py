"""The ``attnviz`` command: ``report``, ``train``, ``evaluate``, ``lab``, ``notebooks``,
``stats``, ``stats-html``."""
from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .checks import cpu_count, number_text
from .terminal import one_line, shown

EXIT_CODES = """exit codes:
  0  report written (also when some images could not be read: they are listed in the
     report's "could not read" section and a warning line is printed)
  1  the report failed: the report files in OUT are left as they were (with --notebook, the
     failing cell's exception is printed and the notebook kept as OUT/report.failed.ipynb)
  2  invalid parameters (unknown model, no images matched, a layer pattern matching no
     attention module, a bad device, --top-k < 1, an output folder in use by another
     report or holding the report template, ...): one line "attnviz: error: ..."
  3  report written, but the model produced NaN or infinite logits or attention weights:
     the report says so at the top and a warning line is printed
"""

REPORT_HELP = """Record the attention weights of MODEL on IMAGES and write a self-contained HTML
report (figures embedded, nothing loaded from the network) to OUT/report.html, next to
OUT/summary.csv (one row per image and attention layer) and OUT/summary.json (and, with
--notebook, OUT/report.ipynb). The files are written aside and published together; a second
report into the same OUT while one runs is refused."""


#: errors of writing output that the user fixes outside attnviz: one line, exit code 1
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


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
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {number_text(value)}")
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
    from .models.user import add_model_arguments
    from .report.params import add_report_arguments

    add_model_arguments(rep)  # --model (a name or your own file.py:factory), --checkpoint, ...

    add_report_arguments(rep, _int_at_least)  # --layers, --out, --max-figures, ... defined once
    sub.add_parser("train", add_help=False,
                   help="train a model on the shapes data (`attnviz train --help`)")
    sub.add_parser("evaluate", add_help=False,
                   help="score a model's attention on held-out shapes (`attnviz evaluate --help`)")
    sub.add_parser("lab", add_help=False,
                   help="open the notebooks in JupyterLab: `attnviz lab [DIR]`")
    sub.add_parser("notebooks", add_help=False,
                   help="copy the notebooks into a folder: `attnviz notebooks DIR`")
    sub.add_parser("stats", add_help=False,
                   help="attention statistics over a whole dataset, also under torchrun "
                        "(`attnviz stats --help`)")
    sub.add_parser("stats-html", add_help=False,
                   help="rebuild stats.html from stats.json: `attnviz stats-html STATS_JSON`")
    return parser


def _delegate(module: str, func: str = "main") -> Callable[[list[str]], int | None]:
    def run(argv: list[str]) -> int | None:
        if importlib.util.find_spec(f"attnviz.{module}") is None:
            raise UsageError(f"`attnviz {module}` is not available in this installation")
        return getattr(importlib.import_module(f"attnviz.{module}"), func)(argv)

    return run


DELEGATES = {"train": _delegate("train"), "evaluate": _delegate("evaluate"),
             "lab": _delegate("lab"), "notebooks": _delegate("resources"),
             "stats": _delegate("stats"), "stats-html": _delegate("stats.cli", "html_main")}


def _err(message: object) -> None:
    print(f"attnviz: error: {one_line(message)}", file=sys.stderr)


def run_command(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main(argv)``: usage mistakes and AttnvizErrors become one line
    ``attnviz: error: ...`` and exit code 2, a full disk (or quota, size limit, read-only
    file system) one such line and exit code 1, Ctrl-C exit code 130, ``--help`` 0."""
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
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        where = f" {shown(e.filename)}" if e.filename else ""
        _err(f"cannot write{where}: {e.strerror or e} (a full disk, a size limit or a quota); "
             "the output folder keeps its earlier results: free some space and run again")
        return 1


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def report(args: argparse.Namespace) -> int:
    from . import report as rep

    t0 = time.perf_counter()
    workers = min(args.num_workers, cpu_count())
    if workers < args.num_workers:
        print(f"attnviz: note: --workers {args.num_workers} is more than the {cpu_count()} CPU(s) "
              f"here; using {workers}", file=sys.stderr)
    options = {**rep.cli_options(args), "num_workers": workers}
    try:
        html_path = rep.write_report(
            args.images, **options,
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
    where = html_path if Path(args.out_dir).is_absolute() else Path(os.path.relpath(html_path))
    print(f"attnviz: wrote {shown(where)} ({_size(html_path.stat().st_size)}, "
          f"{summary.get('n_images', '?')} image(s) analysed) in "
          f"{time.perf_counter() - t0:.1f} s")
    non_finite = summary.get("non_finite") or []
    if non_finite:
        where_bad = "; ".join(one_line(f"{f.get('layer') or f.get('where')}: {f.get('images')} "
                                       "image(s)") for f in non_finite[:5])
        print(f"attnviz: warning: NaN or infinite values ({where_bad}); see the warning at the "
              "top of the report (exit code 3)", file=sys.stderr)
        return 3
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

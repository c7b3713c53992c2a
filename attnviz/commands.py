"""Command-line plumbing shared by every command's ``main(argv)``: a parser whose usage
mistakes raise :class:`UsageError`, bounded integer options, and :func:`run_command`, which
turns usage mistakes and :class:`~attnviz.errors.AttnvizError` into one line and exit code 2.

The commands themselves (``attnviz.cli`` and each module's ``main``) sit above the library;
this module sits below them and imports nothing of attnviz but the terminal helpers."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence

from .checks import number_text
from .terminal import one_line, shown

#: errors of writing output that the user fixes outside attnviz: one line, exit code 1
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


class UsageError(Exception):
    """A command-line mistake argparse found."""


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors raise :class:`UsageError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
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


def error_line(message: object) -> None:
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
        error_line(e)
        return 2
    except KeyboardInterrupt:
        print("attnviz: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        where = f" {shown(e.filename)}" if e.filename else ""
        error_line(f"cannot write{where}: {e.strerror or e} (a full disk, a size limit or a "
                   "quota); the output folder keeps its earlier results: free some space and "
                   "run again")
        return 1


__all__ = ["CommandParser", "UsageError", "error_line", "int_at_least", "run_command"]

"""Outputs you can trust: one report at a time per folder, written aside, published together.

* :func:`refuse_protected`: never write into attnviz's own package folder or into a folder that
  holds a ``report.ipynb`` that ``attnviz report`` did not write (the shipped template, a copy
  of it).
* :class:`Publication`: takes ``OUT/.attnviz-report.lock`` (``flock``; a second run into the same
  folder is refused at once with one line), writes into a fresh private folder next to ``OUT``
  (``.OUT.attnviz-partial-*``; inside ``OUT`` when its parent is not writable or on another
  file system) and, at the end, moves every file into ``OUT`` by ``rename`` — which replaces a
  planted symlink instead of following it — with Ctrl-C and SIGTERM held back for those few
  renames. Report files of an earlier run that this run does not write are removed then, so
  ``OUT`` never mixes two runs.
  A failure, Ctrl-C or kill before that leaves ``OUT`` as it was; a later run removes the
  partial folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from ..checks import check_out_dir
from ..errors import ParameterError
from ..resources import REPORT_NOTEBOOK
from ..terminal import one_line

#: every file a report may write into ``OUT``
REPORT_FILES = ("report.html", "summary.csv", "summary.json", REPORT_NOTEBOOK)
LOCK_NAME = ".attnviz-report.lock"
PARTIAL = "attnviz-partial-"
#: the key in an executed report notebook's metadata that marks it as ours
NOTEBOOK_MARK = "attnviz_report"


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def written_by_report(notebook: Path) -> bool:
    """Is ``notebook`` an executed report that ``attnviz report`` wrote (not the template)?"""
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get(NOTEBOOK_MARK), dict)


def refuse_protected(out: Path) -> None:
    """ParameterError when ``out`` is inside the installed attnviz package or holds a
    ``report.ipynb`` that no report run wrote (the shipped template or a copy)."""
    real = Path(os.path.realpath(out))
    package = _package_dir()
    if real == package or package in real.parents:
        raise ParameterError(f"output folder {str(out)!r} is inside the attnviz package "
                             f"({package}), which holds the report template; choose another "
                             "--out")
    nb = out / REPORT_NOTEBOOK
    if (nb.exists() or nb.is_symlink()) and not written_by_report(nb):
        raise ParameterError(f"output folder {str(out)!r} holds {REPORT_NOTEBOOK}, which "
                             "attnviz report did not write (the report template or a copy of "
                             "it); choose another --out")


def _open_nofollow(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as e:
        raise ParameterError(f"cannot create the lock file {str(path)!r}: "
                             f"{one_line(e.strerror or e)}") from None


@contextlib.contextmanager
def _signals_held():
    """Hold back SIGINT / SIGTERM / SIGHUP for the duration (main thread, POSIX only)."""
    held = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}
    main = threading.current_thread() is threading.main_thread()
    can = main and hasattr(signal, "pthread_sigmask")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held) if can else None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fault(step: str) -> None:
    """Test hook: ``ATTNVIZ_FAULT_PUBLISH=STEP:SIGNAL[:main]`` (e.g. ``rename-1:SIGKILL``)
    sends SIGNAL to this process (``:main``: to its main thread) at STEP of
    :meth:`Publication.publish` (``staged``: everything is written aside; ``rename-N``: after
    the N-th rename), so tests can kill inside the window."""
    spec = os.environ.get("ATTNVIZ_FAULT_PUBLISH", "").split(":")
    if len(spec) >= 2 and spec[0] == step:
        sig = getattr(signal, spec[1])
        if spec[2:] == ["main"]:
            signal.pthread_kill(threading.main_thread().ident or 0, sig)
        else:
            os.kill(os.getpid(), sig)


class Publication:
    """``with Publication(out) as pub:`` write files into ``pub.stage``, then
    ``pub.publish()``; leaving the block without publishing discards them."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.stage = Path()
        self._fd: int | None = None

    def __enter__(self) -> Publication:
        check_out_dir(self.out)
        self._lock()
        try:
            self._remove_stale()
            with _signals_held():  # a Ctrl-C / SIGTERM now still finds self.stage set
                self.stage = self._make_stage()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close()

    def _close(self) -> None:
        """Remove the staging folder (whatever is left in it) and release the lock."""
        try:
            if self.stage.name:
                shutil.rmtree(self.stage, ignore_errors=True)
        finally:
            self._unlock()

    def _make_stage(self) -> Path:
        """A private folder next to ``out`` (its real location, on the same file system, so
        that publishing is a rename), else inside ``out``."""
        real = Path(os.path.realpath(self.out))
        with contextlib.suppress(OSError):
            if os.stat(real.parent).st_dev == os.stat(real).st_dev:
                return Path(tempfile.mkdtemp(prefix=f".{real.name}.{PARTIAL}", dir=real.parent))
        return Path(tempfile.mkdtemp(prefix=f".{PARTIAL}", dir=self.out))

    def _lock(self) -> None:
        import fcntl

        path = self.out / LOCK_NAME
        fd = _open_nofollow(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ParameterError(f"cannot lock {str(path)!r}: {one_line(e)}") from None
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise ParameterError(f"output folder {str(self.out)!r} is in use by another attnviz "
                                 f"report{who}; wait for it to finish or choose another "
                                 "--out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def _remove_stale(self) -> None:
        """Partial folders of earlier runs that were killed (the lock says none is running)."""
        real = Path(os.path.realpath(self.out))
        for folder, prefix in ((real.parent, f".{real.name}.{PARTIAL}"),
                               (self.out, f".{PARTIAL}")):
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)

    def publish(self) -> list[Path]:
        """Move the staged files into ``out`` (rename; symlinks there are replaced, never
        followed) and remove report files of an earlier run that this run did not write."""
        _fault("staged")
        names = sorted(p.name for p in self.stage.iterdir())
        unknown = set(names) - set(REPORT_FILES)
        if unknown:
            raise RuntimeError(f"unexpected files staged: {sorted(unknown)}")
        for name in names:
            target = self.out / name
            if target.is_dir() and not target.is_symlink():
                raise ParameterError(f"{str(target)!r} is a folder; the report cannot be "
                                     "published there")
        with _signals_held():
            for name in set(REPORT_FILES) - set(names):
                old = self.out / name
                if old.is_symlink() or old.is_file():
                    old.unlink()
            for i, name in enumerate(sorted(names, key=lambda n: n == "report.html"), 1):
                os.replace(self.stage / name, self.out / name)  # the page last
                _fault(f"rename-{i}")
        return [self.out / n for n in names]


__all__ = ["LOCK_NAME", "NOTEBOOK_MARK", "REPORT_FILES", "Publication", "refuse_protected",
           "written_by_report"]

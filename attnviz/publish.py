"""Outputs you can trust, for every command that writes a folder (``attnviz report``,
``attnviz stats``): one run at a time per folder, written aside, published together.

:class:`Publisher` takes ``OUT/.attnviz.lock`` (``flock``; a second run into the same folder —
a report or a stats run — is refused at once with one line naming the holder), writes into a
staging folder (a fresh private one next to ``OUT``, inside ``OUT`` when its parent is on
another file system; or a fixed one that survives an interruption, for ``--resume``) and, at
the end, moves every file and folder into ``OUT`` by ``rename`` — which replaces a planted
symlink instead of following it — with Ctrl-C and SIGTERM held back for those few renames.
Outputs of an earlier run that this run does not write are removed then, so ``OUT`` never mixes
two runs. A failure, Ctrl-C or kill before that leaves ``OUT`` as it was; a later run removes a
left-over private staging folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .checks import check_out_dir
from .errors import ParameterError
from .terminal import one_line

LOCK_NAME = ".attnviz.lock"
PARTIAL = "attnviz-partial-"


def _open_nofollow(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as e:
        raise ParameterError(f"cannot create the lock file {str(path)!r}: "
                             f"{one_line(e.strerror or e)}") from None


@contextlib.contextmanager
def _signals_held():
    """Hold back SIGINT / SIGTERM / SIGHUP for the duration (POSIX; from the main thread).

    Blocking a signal in this thread is not enough: a signal sent to the process may be
    delivered to any of its threads (torch's, tqdm's). So the Python handlers are replaced too
    — CPython runs them in the main thread whichever thread received the signal — by ones that
    only note it; after the block the old handlers are back and a noted signal is sent again."""
    held = [signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    old_handlers = {sig: signal.signal(sig, lambda n, _f: noted.append(n)) for sig in held}
    old_mask = (signal.pthread_sigmask(signal.SIG_BLOCK, set(held))
                if hasattr(signal, "pthread_sigmask") else None)
    try:
        yield
    finally:
        if old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(noted):
            os.kill(os.getpid(), sig)


def _fault(step: str) -> None:
    """Test hook: ``ATTNVIZ_FAULT_PUBLISH=STEP:SIGNAL[:main]`` (e.g. ``rename-1:SIGKILL``)
    sends SIGNAL to this process (``:main``: to its main thread) at STEP of
    :meth:`Publisher.publish` (``staged``: everything is written aside; ``rename-N``: after
    the N-th rename), so tests can kill inside the window."""
    spec = os.environ.get("ATTNVIZ_FAULT_PUBLISH", "").split(":")
    if len(spec) >= 2 and spec[0] == step:
        sig = getattr(signal, spec[1])
        if spec[2:] == ["main"]:
            signal.pthread_kill(threading.main_thread().ident or 0, sig)
        else:
            os.kill(os.getpid(), sig)


class Publisher:
    """``with Publisher(out, files) as pub:`` write into ``pub.stage``, then ``pub.publish()``;
    leaving the block without publishing discards them.

    Args:
        out: the output folder (created when missing).
        files: every name (file or folder) this kind of run may publish into ``out``.
        what: what the run is called in messages (``"report"``, ``"stats run"``).
        stage: a fixed staging folder inside ``out`` that is kept when the block is left
            without publishing (the checkpoints of ``attnviz stats --resume``); None: a fresh
            private folder, removed on leaving.
        resume: with a fixed ``stage``, keep what it holds (else it starts empty).
    """

    def __init__(self, out: str | os.PathLike, files: Sequence[str], what: str = "run",
                 stage: str | None = None, resume: bool = False) -> None:
        self.out = Path(out)
        self.files, self.what = tuple(files), what
        self._fixed, self._resume = stage, resume
        self.resumed = False
        self.stage = Path()
        self._fd: int | None = None

    def __enter__(self) -> Publisher:
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
        """Remove a private staging folder (whatever is left in it) and release the lock."""
        try:
            if self.stage.name and self._fixed is None:
                shutil.rmtree(self.stage, ignore_errors=True)
        finally:
            self._unlock()

    def _make_stage(self) -> Path:
        """The fixed staging folder (emptied unless resuming), or a private folder next to
        ``out`` (its real location, on the same file system, so that publishing is a rename),
        else inside ``out``."""
        if self._fixed is not None:
            work = self.out / self._fixed
            had = work.is_dir() and not work.is_symlink()
            if (had and not self._resume) or work.is_symlink():
                shutil.rmtree(work) if not work.is_symlink() else work.unlink()
            work.mkdir(exist_ok=True)
            self.resumed = had and self._resume
            return work
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
            pid, _, what = holder.partition(" ")
            who = f" (pid {pid})" if pid.isdigit() else ""
            raise ParameterError(f"output folder {str(self.out)!r} is in use by another attnviz "
                                 f"{what or 'run'}{who}; wait for it to finish or choose another "
                                 "--out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}".encode()[:32], 0)
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
        """Move the staged outputs into ``out`` (rename; symlinks there are replaced, never
        followed; a folder of an earlier run is moved aside first) and remove outputs of an
        earlier run that this run did not write. Anything else left in the stage (checkpoints)
        is removed with it."""
        names = sorted(n for n in os.listdir(self.stage) if n in self.files)
        if self._fixed is None:
            unknown = set(os.listdir(self.stage)) - set(self.files)
            if unknown:
                raise RuntimeError(f"unexpected files staged: {sorted(unknown)}")
        for name in names:
            target = self.out / name
            if target.is_dir() and not target.is_symlink() and not (self.stage / name).is_dir():
                raise ParameterError(f"{str(target)!r} is a folder; the {self.what} cannot be "
                                     "published there")
        aside = self.stage / ".replaced"
        _fault("staged")
        with _signals_held():
            for name in self.files:
                old = self.out / name
                if old.is_dir() and not old.is_symlink():
                    aside.mkdir(exist_ok=True)
                    os.replace(old, aside / name)
                elif name not in names and (old.is_symlink() or old.is_file()):
                    old.unlink()
            for n, name in enumerate(sorted(names, key=self.files.index), 1):
                os.replace(self.stage / name, self.out / name)
                _fault(f"rename-{n}")
        if self._fixed is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
        else:
            shutil.rmtree(aside, ignore_errors=True)
        return [self.out / n for n in names]


__all__ = ["LOCK_NAME", "Publisher"]

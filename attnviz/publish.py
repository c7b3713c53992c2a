"""Outputs you can trust, for every command that writes a folder (``attnviz report``,
``attnviz stats``): one run at a time per folder, written aside, published in one step.

:class:`Publisher` takes ``OUT/.attnviz.lock`` (``flock``; a second run into the same folder —
a report or a stats run — is refused at once with one line naming the holder) and writes into a
staging folder (a fresh private one next to ``OUT``, inside ``OUT`` when its parent is on
another file system; or a fixed one that survives an interruption, for ``--resume``).

Publishing is one ``rename``. The staged folder becomes ``OUT/.attnviz/KIND/runs/<run>/``
(KIND: ``report``, ``stats``); every output name in ``OUT`` is a link
``NAME -> .attnviz/KIND/current/NAME``, and ``OUT/.attnviz/KIND/current`` is a link to the
published run, replaced by ``rename`` (atomic): all names switch from the old run to the new
one at once, so a SIGKILL at any moment leaves either the old or the new result, never a mix
(tested with a fault hook between the steps). Names the new run does not write then dangle and
are removed; earlier run folders are removed. Outputs of an attnviz that wrote plain files are
first adopted into a run folder of their own (hard links) and replaced by links showing the
same content. ``rename`` replaces a planted symlink instead of following it; Ctrl-C and SIGTERM
are held back for the publishing steps. A failure, Ctrl-C or kill before the switch leaves
``OUT`` as it was; a later run removes a left-over private staging folder.
To copy a published folder with plain files, dereference the links (``cp -rL``).
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
#: ``OUT/.attnviz/KIND/`` (``report``, ``stats``): ``current`` (a link to the published run of
#: that kind) and ``runs/``
HOME = ".attnviz"


def link_text(kind: str, name: str) -> str:
    """What ``OUT/name`` points to once a run of ``kind`` published ``name``."""
    return f"{HOME}/{kind}/current/{name}"


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
    """Test hook: ``ATTNVIZ_FAULT_PUBLISH=STEP:SIGNAL[:main]`` (e.g. ``link-1:SIGKILL``)
    sends SIGNAL to this process (``:main``: to its main thread) at STEP of
    :meth:`Publisher.publish` (``staged``: everything is written aside; ``adopted`` /
    ``adopt-N``: plain outputs of an earlier run adopted / the N-th replaced by its link;
    ``link-N``: the N-th output's link is in place; ``switched``: ``current`` points to the new
    run), so tests can kill inside the window."""
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
        self.kind = what.split()[0]  # "report", "stats": each kind switches its own outputs
        self._fixed, self._resume = stage, resume
        self.resumed = False
        self.stage = Path()
        self._fd: int | None = None

    def __enter__(self) -> Publisher:
        check_out_dir(self.out)
        self._lock()
        try:
            self._remove_stale()
            self._check_links()
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

    def _check_links(self) -> None:
        """Refuse, before any work, an ``OUT`` whose file system has no symbolic links (FAT,
        some network shares): outputs are published through links."""
        probe = self.out / f".attnviz-probe.{os.getpid()}.link"
        try:
            _link(probe, LOCK_NAME)
        except OSError as e:
            raise ParameterError(f"output folder {str(self.out)!r} cannot hold symbolic links "
                                 f"({one_line(e.strerror or e)}); attnviz publishes its outputs "
                                 "through links so that a kill never leaves a mix of two runs; "
                                 "choose --out on another file system") from None
        probe.unlink()

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
        for folder in (self.out, self.out / HOME / self.kind):  # of a publish killed mid-way
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if entry.name.endswith(".link") and entry.is_symlink():
                        os.unlink(entry.path)

    def publish(self) -> list[Path]:
        """Publish the staged outputs in one step (see the module docstring); anything else
        left in the stage (checkpoints) is removed with it.

        Returns:
            ``OUT/name`` of every published output.
        """
        names = sorted((n for n in os.listdir(self.stage) if n in self.files),
                       key=self.files.index)
        if self._fixed is None:
            unknown = set(os.listdir(self.stage)) - set(self.files)
            if unknown:
                raise RuntimeError(f"unexpected files staged: {sorted(unknown)}")
        for name in names:
            target = self.out / name
            if target.is_dir() and not target.is_symlink() and not (self.stage / name).is_dir():
                raise ParameterError(f"{str(target)!r} is a folder; the {self.what} cannot be "
                                     "published there")
        _fault("staged")
        with _signals_held():
            runs = self._runs_folder()
            self._adopt_plain_outputs(runs)
            run = self._run_folder(runs, names)
            for n, name in enumerate(names, 1):
                _link(self.out / name, link_text(self.kind, name))
                _fault(f"link-{n}")
            _link(runs.parent / "current", f"runs/{run.name}")
            _fault("switched")
            for name in self.files:
                if name not in names and self._is_ours(name):
                    (self.out / name).unlink()
            for entry in os.scandir(runs):
                if entry.name != run.name:
                    _remove(Path(entry.path))
        if self._fixed is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
        return [self.out / n for n in names]

    def _runs_folder(self) -> Path:
        """``OUT/.attnviz/KIND/runs`` (a planted symlink or file on the way is removed, never
        followed)."""
        runs = self.out / HOME / self.kind / "runs"
        for folder in (runs.parents[1], runs.parent, runs):
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                folder.unlink()
            folder.mkdir(exist_ok=True)
        return runs

    def _is_ours(self, name: str) -> bool:
        """Is ``OUT/name`` a link this kind of run made (``NAME -> .attnviz/KIND/current/NAME``)?"""
        try:
            return os.readlink(self.out / name) == link_text(self.kind, name)
        except OSError:
            return False

    def _run_folder(self, runs: Path, names: list[str]) -> Path:
        """The staged outputs as a folder in ``runs``: the private stage itself, moved by one
        rename; from a fixed stage (kept for ``--resume``), the outputs moved into a new one."""
        run = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
        if self._fixed is None:
            os.replace(self.stage, run)  # the empty new folder is replaced by the stage
        else:
            for name in names:
                os.replace(self.stage / name, run / name)
        os.chmod(run, os.stat(runs).st_mode & 0o777)  # readable like OUT, not private
        return run

    def _adopt_plain_outputs(self, runs: Path) -> None:
        """Outputs in ``OUT`` that are not links (written by an attnviz that published plain
        files, or copied there): a run folder of their own holding them (hard links) and every
        linked output of the current run, ``current`` pointing to it, then each plain output
        replaced by its link — every step shows the same content. A folder output is moved
        aside before its link takes its place (one rename wide)."""
        plain = [n for n in self.files if (self.out / n).exists() and not
                 (self.out / n).is_symlink()]
        if not plain:
            return
        run = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
        os.chmod(run, os.stat(runs).st_mode & 0o777)
        for name in self.files:
            src = self.out / name if name in plain else runs.parent / "current" / name
            if name in plain or (self._is_ours(name) and src.exists()):
                if src.is_dir():
                    shutil.copytree(src, run / name, symlinks=True, copy_function=_link_or_copy)
                else:
                    _link_or_copy(src, run / name)
        _link(runs.parent / "current", f"runs/{run.name}")
        _fault("adopted")
        for n, name in enumerate(plain, 1):
            if (self.out / name).is_dir():
                os.replace(self.out / name, run.with_name(f"{run.name}.replaced-{name}"))
            _link(self.out / name, link_text(self.kind, name))
            _fault(f"adopt-{n}")


def _link(path: Path, text: str) -> None:
    """``path`` becomes a symlink holding ``text``, by one rename (whatever was there)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(text, tmp)
    os.replace(tmp, path)


def _link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


__all__ = ["HOME", "LOCK_NAME", "Publisher", "link_text"]

"""Open the notebooks in JupyterLab: local only, with a token, no outbound calls.

    python -m attnviz.lab [DIR] [--port N] [--browser]

The server listens on 127.0.0.1 only, with a fresh random token, on a free port (or ``--port``).
The token reaches the server through its environment (``JUPYTER_TOKEN``, see :func:`lab_env`),
never its command line, which every local user can read. JupyterLab's news feed, update check
and extension manager are switched off, so it makes no requests to the internet.
``lab_command`` builds the exact command line (the browser test starts its server with it too)
and ``write_overrides`` writes the app settings that turn off the "get notified about news?"
pop-up.

The server runs in this process's group and gets SIGTERM when this process dies, even by
SIGKILL (Linux parent-death signal); its kernels stop when the server does. Its runtime files
(the server's JSON holding the token, kernel connection files) live in a private temporary
folder removed on every exit but SIGKILL of this process. Exit codes: the
server's own when it stops by itself, 0 when stopped with SIGTERM or SIGHUP, 130 on Ctrl-C,
2 for bad arguments (one line ``attnviz: error: ...``).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import require
from .processes import die_with_parent

HOST = "127.0.0.1"
_PR_SET_CHILD_SUBREAPER = 36
#: seconds to wait for kernels that outlive their server before the runtime folder goes
REAP_S = 15.0

#: App-settings overrides: never fetch news, never check for updates (no pop-up asking either).
OVERRIDES: dict[str, dict[str, object]] = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def new_token() -> str:
    """A fresh random server token."""
    return secrets.token_urlsafe(32)


def default_settings_dir() -> Path:
    """Per-user folder for the app settings (``$XDG_CACHE_HOME/attnviz/lab-settings``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "attnviz" / "lab-settings"


def write_overrides(app_settings_dir: str | os.PathLike) -> Path:
    """Write ``overrides.json`` (news and update notifications off) into ``app_settings_dir``."""
    folder = Path(app_settings_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "overrides.json"
    path.write_text(json.dumps(OVERRIDES, indent=2) + "\n", encoding="utf-8")
    return path


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lab_env(token: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (default: this process's) plus ``JUPYTER_TOKEN``.
    A process's environment is readable only by its owner, unlike its command line."""
    env = dict(os.environ if base is None else base)
    env.pop("JUPYTER_TOKEN_FILE", None)  # it would win over JUPYTER_TOKEN
    env["JUPYTER_TOKEN"] = token
    return env


def lab_command(
    notebook_dir: str | os.PathLike,
    port: int,
    settings_dir: str | os.PathLike,
    *,
    open_browser: bool = False,
    workspaces_dir: str | os.PathLike | None = None,
    user_settings_dir: str | os.PathLike | None = None,
    expose_app: bool = False,
    allow_root: bool | None = None,
    python: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The JupyterLab command line: 127.0.0.1, ``port``, no outbound requests. It holds no
    token: run it with ``env=lab_env(token)``.

    Args:
        notebook_dir: the server's root folder.
        port: the port (the server fails rather than trying another one).
        settings_dir: the app settings folder (``--LabApp.app_settings_dir``); call
            ``write_overrides(settings_dir)`` first.
        open_browser: let JupyterLab open a browser.
        workspaces_dir, user_settings_dir: optional throwaway folders (tests).
        expose_app: ``window.jupyterapp`` in the page (tests wait on the kernel through it).
        allow_root: add ``--allow-root``; None: when running as root.
        python: the interpreter (default: this one).
        extra: more options, appended last.
    """
    if allow_root is None:
        allow_root = running_as_root()
    cmd = [
        python or sys.executable, "-m", "jupyterlab",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={int(port)}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={os.fspath(notebook_dir)}",
        f"--ServerApp.open_browser={open_browser}",
        # no requests to the internet: news feed, update check, extension manager (PyPI)
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        f"--LabApp.app_settings_dir={os.fspath(settings_dir)}",
    ]
    if workspaces_dir is not None:
        cmd.append(f"--LabApp.workspaces_dir={os.fspath(workspaces_dir)}")
    if user_settings_dir is not None:
        cmd.append(f"--LabApp.user_settings_dir={os.fspath(user_settings_dir)}")
    if expose_app:
        cmd.append("--LabApp.expose_app_in_browser=True")
    if allow_root:
        cmd.append("--allow-root")
    cmd.extend(extra)
    return cmd


def lab_url(port: int, token: str, path: str = "lab") -> str:
    """``http://127.0.0.1:PORT/PATH?token=TOKEN``."""
    return f"http://{HOST}:{int(port)}/{path.lstrip('/')}?token={token}"


def _server_setup(parent: int) -> None:
    """In the server process before exec: SIGTERM when ``parent`` dies (Linux), and no
    default death on hang-up (``parent`` turns SIGHUP into a clean SIGTERM shutdown)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    die_with_parent(parent)


def _adopt_orphans() -> bool:
    """Make this process the Linux child subreaper, so that kernels whose server stopped
    become its children (and can be waited for); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0


def _reap(deadline: float) -> None:
    """Wait until this process has no children left (or ``deadline``, ``time.monotonic``)."""
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)


def _exit_code(returncode: int) -> int:
    """A shell-style exit code: 128 + N for a server killed by signal N (not 256 - N)."""
    return 128 - returncode if returncode < 0 else returncode


def serve(cmd: Sequence[str], env: Mapping[str, str], stop_timeout: float = 15.0) -> int:
    """Run the server ``cmd`` until it stops; returns the exit code (see the module doc)."""
    parent = os.getpid()
    proc = subprocess.Popen(list(cmd), env=dict(env), preexec_fn=lambda: _server_setup(parent))
    requested: list[int] = []

    def stop(signum: int, _frame: object) -> None:  # `kill` or a hang-up: a clean shutdown
        requested.append(signum)
        proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = proc.wait()
        return 0 if requested else _exit_code(code)
    except KeyboardInterrupt:  # Ctrl-C: the server got SIGINT too; make sure it goes down
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``attnviz lab [DIR] [--port N] [--browser]``; returns the exit code."""
    from .commands import CommandParser, UsageError

    parser = CommandParser(
        prog="attnviz lab",
        description="Open the attnviz notebooks in JupyterLab (127.0.0.1 only, with a token, "
                    "no requests to the internet).",
    )
    parser.add_argument("dir", nargs="?", default=None,
                        help="notebook folder (default: the current folder; "
                             "`attnviz notebooks DIR` copies attnviz's notebooks there)")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--browser", action="store_true", help="open a web browser")
    parser.add_argument("--settings-dir", default=None,
                        help=f"app settings folder (default: {default_settings_dir()})")
    args = parser.parse_args(argv)
    require("jupyterlab", extra="lab", feature="attnviz lab")

    notebook_dir = Path(args.dir or ".").resolve()
    if not notebook_dir.is_dir():
        raise UsageError(f"notebook folder {str(notebook_dir)!r} is not a folder")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"bad port {args.port}: use 1..65535")
    port = args.port or free_port()
    token = new_token()
    settings_dir = Path(args.settings_dir) if args.settings_dir else default_settings_dir()
    try:
        write_overrides(settings_dir)
    except OSError as e:
        raise UsageError(f"cannot write the settings folder {str(settings_dir)!r}: "
                         f"{e.strerror or e}") from None
    cmd = lab_command(notebook_dir, port, settings_dir, open_browser=args.browser)
    print(f"JupyterLab on {notebook_dir}\n    {lab_url(port, token)}\n(Ctrl-C to stop)",
          flush=True)
    # the server's runtime files (jpserver-*.json holding the token, kernel connection files)
    # go to a private folder that is removed on every exit: stop, Ctrl-C, SIGTERM, hang-up
    runtime = tempfile.mkdtemp(prefix="attnviz-lab-runtime-")
    adopting = _adopt_orphans()
    try:
        return serve(cmd, {**lab_env(token), "JUPYTER_RUNTIME_DIR": runtime})
    finally:
        if adopting:  # a kernel outliving its server is ours now: it may still write there
            _reap(time.monotonic() + REAP_S)
        shutil.rmtree(runtime, ignore_errors=True)


if __name__ == "__main__":
    from .commands import run_command

    raise SystemExit(run_command(main))

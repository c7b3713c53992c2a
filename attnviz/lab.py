"""Open the notebooks in JupyterLab: local only, with a token, no outbound calls.

    python -m attnviz.lab [DIR] [--port N] [--browser]

The server listens on 127.0.0.1 only, with a fresh random token, on a free port (or ``--port``).
JupyterLab's news feed, update check and extension manager are switched off, so it makes no
requests to the internet. ``lab_command`` builds the exact command line (the browser test starts
its server with it too) and ``write_overrides`` writes the app settings that turn off the
"get notified about news?" pop-up.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import require

HOST = "127.0.0.1"

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


def lab_command(
    notebook_dir: str | os.PathLike,
    port: int,
    token: str,
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
    """The JupyterLab command line: 127.0.0.1, ``port``, ``token``, no outbound requests.

    Args:
        notebook_dir: the server's root folder.
        port: the port (the server fails rather than trying another one).
        token: the token a browser must present.
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
        f"--IdentityProvider.token={token}",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attnviz.lab",
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
        print(f"error: {notebook_dir} is not a folder", file=sys.stderr)
        return 2
    if args.port is not None and not 0 < args.port < 65536:
        print(f"error: bad port {args.port}", file=sys.stderr)
        return 2
    port = args.port or free_port()
    token = new_token()
    settings_dir = Path(args.settings_dir) if args.settings_dir else default_settings_dir()
    write_overrides(settings_dir)
    cmd = lab_command(notebook_dir, port, token, settings_dir, open_browser=args.browser)

    print(f"JupyterLab on {notebook_dir}\n    {lab_url(port, token)}\n(Ctrl-C to stop)",
          flush=True)
    proc = subprocess.Popen(cmd)

    def forward(signum: int, _frame: object) -> None:  # `kill`/hang-up: stop the server too
        proc.send_signal(signum)

    stop_signals = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {s: signal.signal(s, forward) for s in stop_signals}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C: the terminal sent SIGINT to the server too; make sure it goes down now
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    raise SystemExit(main())

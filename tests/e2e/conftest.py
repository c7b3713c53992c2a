"""Real-browser fixtures: a throwaway JupyterLab server and Debian's headless Chromium.

The server is started with ``attnviz.lab.lab_command`` (the options ``make lab`` uses) plus
throwaway config / runtime / workspace / settings folders; it is stopped by process group.
Chromium is ``/usr/bin/chromium`` (``make browser``; never ``playwright install``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from attnviz.lab import HOST, free_port, lab_command, lab_env, new_token, write_overrides
from attnviz.resources import notebooks_dir

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
SERVER_READY_S = 45.0

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # no DNS lookups at all (Chromium's own Google hosts included), except the local server
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}",
]


@dataclass
class LabServer:
    port: int
    token: str
    notebook_dir: Path
    log: Path
    proc: subprocess.Popen
    started_s: float = 0.0  # seconds until /api/status answered 200

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str, query: str = "") -> str:
        sep = "&" if query else ""
        return f"{self.base}/{path.lstrip('/')}?token={self.token}{sep}{query}"

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-n:])


def missing(reason: str) -> None:
    """Skip the browser test, except under CI (``CI=true``), where a missing browser fails."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set: the real-browser test must run, not skip)")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`, "
                "i.e. `apt-get install chromium`) to run the real-browser test")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright Python package is missing (pip install -e '.[dev]')")
    return CHROMIUM


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _stop(proc: subprocess.Popen, server: LabServer) -> None:
    """Shut the kernels down through the API, then stop the server's process group."""
    if proc.poll() is None:
        try:  # kernels run in their own sessions: ask the server to stop them first
            with urllib.request.urlopen(server.url("api/kernels"), timeout=3) as r:
                kernels = json.load(r)
            for k in kernels:
                req = urllib.request.Request(server.url(f"api/kernels/{k['id']}"),
                                             method="DELETE")
                urllib.request.urlopen(req, timeout=10).close()
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def lab_notebooks() -> tuple[Path, ...]:
    """The notebooks the server gets copies of (override this fixture in a test module)."""
    return (notebooks_dir() / "explorer.ipynb",)


@pytest.fixture
def lab_server(tmp_path: Path, lab_notebooks: tuple[Path, ...]) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 (random token, free port) serving copies of ``lab_notebooks``,
    run from the repository root with the package's own data files."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for src in lab_notebooks:  # copies: JupyterLab may autosave
        shutil.copy(src, nb_dir / Path(src).name)
    dirs = {k: tmp_path / k for k in ("config", "runtime", "workspaces", "user-settings",
                                      "app-settings")}
    for d in dirs.values():
        d.mkdir()
    write_overrides(dirs["app-settings"])
    env = dict(os.environ)
    env.pop("ATTNVIZ_STATIC", None)  # the kernel must see a live front end
    env.pop("ATTNVIZ_DATA", None)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        PYTHONUNBUFFERED="1",
    )
    port, token = free_port(), new_token()
    cmd = lab_command(
        nb_dir, port, dirs["app-settings"],
        workspaces_dir=dirs["workspaces"], user_settings_dir=dirs["user-settings"],
        expose_app=True, python=sys.executable,
    )
    log = tmp_path / "jupyterlab.log"
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=lab_env(token, env), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = LabServer(port, token, nb_dir, log, proc)
    try:
        deadline = t0 + SERVER_READY_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
            if _status(server.url("api/status")) == 200:
                break
            if time.perf_counter() > deadline:
                pytest.fail(f"JupyterLab not ready after {SERVER_READY_S:.0f} s:\n"
                            f"{server.log_tail()}")
            time.sleep(0.25)
        server.started_s = time.perf_counter() - t0
        yield server
    finally:
        _stop(proc, server)

"""``attnviz lab``: the token is in no command line; the server and its kernel go down with
the wrapper (Ctrl-C, hang-up, even SIGKILL), with exit codes 130 / 0."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from helpers import descendants_running

from attnviz.lab import HOST, free_port, lab_command, lab_env

pytest.importorskip("jupyterlab")
pytestmark = pytest.mark.slow
READY_S = 60.0


@dataclass
class Lab:
    wrapper: subprocess.Popen
    port: int
    token: str
    log: Path
    spawned: list[psutil.Process] = field(default_factory=list)

    def api(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(f"http://{HOST}:{self.port}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def server(self) -> psutil.Process:
        (child,) = psutil.Process(self.wrapper.pid).children()
        self.spawned.append(child)
        return child

    def start_kernel(self) -> psutil.Process:
        """Start a kernel through the API; its process (a child of the server)."""
        self.api("kernels", "POST")
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            kernels = descendants_running(self.server(), "ipykernel")
            if kernels:
                self.spawned.append(kernels[0])
                return kernels[0]
            time.sleep(0.2)
        raise AssertionError("no kernel process appeared")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} after {seconds} s"
        time.sleep(0.2)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """``python -m attnviz.lab`` in its own session (as a terminal would run it), throwaway
    Jupyter folders; the token is read from the URL it prints."""
    (tmp_path / "nb").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    for name in ("CONFIG", "RUNTIME", "DATA"):
        env[f"JUPYTER_{name}_DIR"] = str(tmp_path / name.lower())
    env.pop("JUPYTER_TOKEN", None)
    port, log = free_port(), tmp_path / "lab.log"
    with log.open("wb") as err:
        wrapper = subprocess.Popen(
            [sys.executable, "-m", "attnviz.lab", str(tmp_path / "nb"), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, text=True)
    assert wrapper.stdout is not None
    url = [wrapper.stdout.readline() for _ in range(2)][1].strip()
    lab = Lab(wrapper, port, url.split("token=", 1)[1], log)
    try:
        deadline = time.monotonic() + READY_S
        while True:
            try:
                lab.api("status")
                break
            except (urllib.error.URLError, OSError):
                assert wrapper.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.25)
        yield lab
    finally:  # whatever a failed test left running
        for proc in [*psutil.Process().children(recursive=True), *lab.spawned]:
            if not _gone(proc):
                proc.kill()
        wrapper.wait(timeout=30)


def test_lab_command_holds_no_token() -> None:
    cmd = lab_command("nb", 8888, "settings")
    assert not any("token" in part.lower() for part in cmd)
    assert lab_env("secret", {"JUPYTER_TOKEN_FILE": "/x"}) == {"JUPYTER_TOKEN": "secret"}


def test_token_in_no_command_line_and_hang_up_exits_0(lab: Lab) -> None:
    kernel = lab.start_kernel()
    server = lab.server()
    seen = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        assert lab.token not in cmdline, f"token on the command line of {p.pid}: {cmdline}"
        seen.append(p.pid)
    assert {lab.wrapper.pid, server.pid, kernel.pid} <= set(seen)
    os.killpg(lab.wrapper.pid, signal.SIGHUP)  # the terminal closed: the whole group
    assert lab.wrapper.wait(timeout=60) == 0, lab.log.read_text()
    _wait(lambda: _gone(server) and _gone(kernel), 30, "server or kernel still running")
    assert not _port_open(lab.port)


def test_ctrl_c_exits_130_and_removes_the_runtime_files(lab: Lab, tmp_path: Path) -> None:
    kernel = lab.start_kernel()
    server = lab.server()
    runtime = Path(server.environ()["JUPYTER_RUNTIME_DIR"])
    names = sorted(p.name for p in runtime.iterdir())
    assert any(n.startswith("jpserver-") for n in names), names  # holds the token
    assert any(n.startswith("kernel-") for n in names), names
    os.killpg(lab.wrapper.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the foreground group
    assert lab.wrapper.wait(timeout=60) == 130, lab.log.read_text()
    _wait(lambda: _gone(server) and _gone(kernel), 30, "server or kernel still running")
    assert not _port_open(lab.port)
    assert not runtime.exists()
    user_runtime = tmp_path / "runtime"
    assert not user_runtime.exists() or not list(user_runtime.iterdir())


def test_sigkill_of_the_wrapper_stops_server_and_kernel(lab: Lab) -> None:
    kernel = lab.start_kernel()
    server = lab.server()
    runtime = Path(server.environ()["JUPYTER_RUNTIME_DIR"])
    lab.wrapper.kill()
    lab.wrapper.wait(timeout=10)
    _wait(lambda: _gone(server), 30, "server still running after its wrapper was killed")
    _wait(lambda: _gone(kernel), 30, "kernel still running after its server stopped")
    _wait(lambda: not _port_open(lab.port), 10, "port still open")
    # nothing can clean up after SIGKILL but the server's own shutdown (its token file goes)
    assert not list(runtime.glob("jpserver-*.json"))
    shutil.rmtree(runtime, ignore_errors=True)

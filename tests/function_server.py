"""One UDB function as a real server process, started the way the stack and the images start it
(`functions-framework --source functions/<f>/main.py --target http`, gunicorn gthread with
THREADS threads), on a free loopback port, for tests that attack it over sockets."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

VENV_BIN = Path(sys.executable).parent
JWT_SECRET = "server-secret-" + "s" * 40
BROKER_TOKEN = "broker-" + "t" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    function: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pid(self) -> int:
        """The gunicorn worker serving requests (the master's only child)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def rss_bytes(self, peak: bool = False) -> int:
        """The worker's resident set now, or its high-water mark (VmHWM) with `peak`."""
        field = "VmHWM:" if peak else "VmRSS:"
        for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field}")

    def get(self, path: str, timeout: float = 5, headers: dict | None = None) -> tuple[int, bytes, dict]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)


def server_env(home: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("UDB_", "K_SINK"))}
    env.update({
        "PYTHONPATH": str(REPO),
        "UDB_MODE": "stack", "UDB_STORE": "local", "UDB_HOME": str(home),
        "UDB_AUTH": "on", "UDB_JWT_SECRET": JWT_SECRET, "UDB_BROKER_TOKEN": BROKER_TOKEN,
        "UDB_LOG_LEVEL": "WARNING", "UDB_NET_ALLOWLIST": "127.0.0.0/8",
        "THREADS": "8",  # as devstack/stack.py gives every function but the writer
    })
    env.update({key: str(value) for key, value in extra.items()})
    return env


@contextlib.contextmanager
def serve(function: str, home: Path, timeout: float = 60, **env):
    """A running function process; stopped (its whole process group) on exit."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"{function}-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "functions-framework"), "--source", str(REPO / "functions" / function / "main.py"),
             "--target", "http", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env(home, **env), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(function, port, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                if server.get("/healthz", timeout=2)[0] == 200:
                    break
            assert time.monotonic() < deadline, f"{function} did not start: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

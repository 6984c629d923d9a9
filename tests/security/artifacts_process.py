"""The artifacts function as deployed — functions-framework in its own process on a free
127.0.0.1 port — for tests that attack the real server over a socket."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def artifacts_process(home: Path, log: Path, **env: str):
    """Yield the base URL of an artifacts function serving the local store under `home`
    (embedded mode, authentication off unless `env` says otherwise); stopped on exit."""
    port = free_port()
    full_env = {**os.environ, "UDB_HOME": str(home), "UDB_MODE": "embedded", "UDB_AUTH": "off",
                "UDB_LOG_LEVEL": "WARNING", "UDB_EVENTING_DIR": str(REPO / "eventing"), "PYTHONPATH": str(REPO),
                **env}
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "functions-framework"), "--source",
                                 str(REPO / "functions" / "artifacts" / "main.py"), "--target", "http",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

"""Running a service as a plain process: pid files and logs under .cache/, spawning in its own
session (so it outlives the caller), one-shot install steps, readiness waits and stopping the
whole process group. Also used by devstack/stack.py for the functions and the broker."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .config import CACHE, HOST, LOG_DIR, RUN_DIR, ServiceError


def require(service: str, tool: str, what: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise ServiceError(f"{service} needs {tool!r} ({what}) on PATH: not found")
    return path


def pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def log_file(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of the latest run in a log that is appended to across runs."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    runs = re.split(r"^(?==== \d{4}-)", text, flags=re.MULTILINE)
    return "\n".join(runs[-1].splitlines()[-lines:])


def alive(pid: int) -> bool:
    # Our own children linger as zombies until reaped; reap them so they read as dead.
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


MARKERS = {"kafka": "kafka.Kafka", "minio": "minio", "postgres": "postgres", "webdav": "wsgidav"}


def running_pid(name: str, marker: str | None = None) -> int | None:
    """The pid recorded for `name` if that process still runs (and is still ours: its command
    line holds `marker`, by default the service's own)."""
    try:
        pid = int(pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    # A recycled pid would belong to some unrelated program.
    if alive(pid) and (marker or MARKERS[name]) in cmdline(pid):
        return pid
    return None


def as_user(user: str | None) -> dict:
    """Popen arguments that drop root to `user` with that user's groups, not root's."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def spawn(name: str, argv: list[str], *, env: dict | None = None, cwd: Path | None = None,
           user: str | None = None) -> int:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = log_file(name)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            **as_user(user),
        )
    pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def run_step(name: str, step: str, argv: list[str], *, timeout: float, env: dict | None = None,
              cwd: Path | None = None, user: str | None = None) -> float:
    """Run an install/setup command to completion, logging to .cache/logs/<name>-<step>.log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}-{step}.log"
    started = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout, **as_user(user))
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{name}: {step} timed out after {timeout:.0f}s; log {log_path}:\n"
                               f"{log_tail(log_path)}") from None
    elapsed = time.monotonic() - started
    with open(log_path, "a") as log:
        log.write(f"=== exit {result.returncode} after {elapsed:.1f}s\n")
    if result.returncode != 0:
        raise ServiceError(f"{name}: {step} failed (exit {result.returncode}); log {log_path}:\n"
                           f"{log_tail(log_path)}")
    return elapsed


def port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def service_lock(name: str):
    """Serialise install/start of one service across processes (e.g. pytest-xdist workers)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_ready(name: str, pid: int, check, timeout: float, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if not alive(pid):
            pid_file(name).unlink(missing_ok=True)
            raise ServiceError(f"{name} exited during startup; log {log_file(name)}:\n"
                               f"{log_tail(log_file(name))}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} not ready after {timeout:.0f}s (pid {pid} still running); "
                               f"log {log_file(name)}:\n{log_tail(log_file(name))}")
        time.sleep(poll)


def start(name: str, ports: tuple[int, ...], install, launch, check, timeout: float) -> None:
    """Shared start logic: idempotent, installs on demand, waits for readiness."""
    with service_lock(name):
        pid = running_pid(name)
        if pid is not None:
            wait_ready(name, pid, check, timeout)
            return
        busy = [port for port in ports if port_busy(port)]
        if busy:
            raise ServiceError(f"{name}: port {busy[0]} on {HOST} is already in use by a process "
                               f"not started from {CACHE} (no live pid in {pid_file(name)})")
        install()
        pid = launch()
        try:
            wait_ready(name, pid, check, timeout)
        except ServiceError:
            stop(name)
            raise


def stop(name: str, sig: int = signal.SIGTERM, timeout: float = 30, marker: str | None = None) -> bool:
    """Stop the process group recorded for `name`; True if something was running."""
    pid = running_pid(name, marker)
    if pid is None:
        pid_file(name).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Whatever is left in the session (the leader if it ignored us, or orphaned children).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.1)
    pid_file(name).unlink(missing_ok=True)
    return True


def run_async(coro_factory):
    """Run a coroutine to completion even when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_factory()).result()


def http_status(url: str, method: str = "GET", headers: dict | None = None, timeout: float = 2) -> int | None:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None

"""The whole stack on one machine: services, each function as its own functions-framework
process on its own port, and the local broker in front of them — the shape UDB has on Knative.

CLI: python -m devstack.stack up|down|status   (`just stack up|down|status`)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import psutil

from devstack import services
from devstack.services import CACHE, HOST, ROOT, ServiceError, process

FUNCTION_PORTS = {"discover": 18081, "sync": 18082, "writer": 18083, "analyze": 18084, "artifacts": 18085,
                  "reports": 18086}
BROKER_PORT = 18090
NAMESPACE, BROKER = "udb", "udb"
BUCKET = "udb"
STACK_SERVICES = ["kafka", "minio"]
VENV_BIN = Path(sys.executable).parent


def function_url(name: str) -> str:
    return f"http://{HOST}:{FUNCTION_PORTS[name]}"


def broker_url() -> str:
    return f"http://{HOST}:{BROKER_PORT}/{NAMESPACE}/{BROKER}"


def _stack_secret(name: str, nbytes: int) -> str:
    """A random secret made once and kept 0600 under .cache/stack-home/NAME."""
    path = CACHE / "stack-home" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(nbytes))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # whole or not at all; the first process to make one wins
        tmp.unlink()
    return path.read_text().strip()


def broker_token() -> str:
    """The stack's UDB_BROKER_TOKEN (functions <-> broker)."""
    return _stack_secret("broker.token", 32)


def jwt_secret() -> str:
    """The stack's UDB_JWT_SECRET (signs JWTs and report links)."""
    return _stack_secret("jwt.secret", 48)


def function_env(name: str) -> dict[str, str]:
    """The settings a function process gets: what a ConfigMap gives it on Knative."""
    user, password = services.minio_credentials()
    env = {
        "UDB_MODE": "stack",
        "UDB_FUNCTION": name,
        "UDB_STORE": "s3",
        "UDB_BUCKET": BUCKET,
        "UDB_S3_ENDPOINT": services.endpoints()["s3"],
        "UDB_S3_ACCESS_KEY": user,
        "UDB_S3_SECRET_KEY": password,
        "UDB_KAFKA_BOOTSTRAP": services.endpoints()["kafka"],
        "UDB_HOME": str(CACHE / "stack-home"),
        "K_SINK": broker_url(),
        "UDB_NET_ALLOWLIST": "127.0.0.0/8,::1",  # the test peers and local services are on loopback
        "UDB_LOG_LEVEL": os.environ.get("UDB_LOG_LEVEL", "INFO"),
        # The writer serves one request at a time, as containerConcurrency: 1 does on Knative.
        "THREADS": "1" if name == "writer" else "8",
        # PNG charts start a headless Chromium per analysis; with many analyses at once on one
        # host (the load and fault tests) a kaleido session was seen to hang, so the stack
        # renders HTML charts only unless asked. PNGs are tested in embedded mode.
        "UDB_CHART_PNG": os.environ.get("UDB_CHART_PNG", "0"),
        "UDB_BROKER_TOKEN": broker_token(),
        # GET /status/{jobId} gives a signed report link only with a signing secret (shared/security/links.py).
        "UDB_JWT_SECRET": jwt_secret(),
        # One JSON-lines span file per function process (docs/observability.md); UDB_OTEL_EXPORTER=otlp
        # with UDB_OTEL_ENDPOINT in the caller's environment sends them to a collector instead.
        "UDB_OTEL_EXPORTER": os.environ.get("UDB_OTEL_EXPORTER", "file"),
        "UDB_OTEL_FILE": str(CACHE / "traces" / f"{name}.jsonl"),
        # OpenLineage run events likewise, one JSON-lines file per function (UDB_LINEAGE=http and
        # UDB_LINEAGE_URL in the caller's environment send them to Marquez or another consumer).
        "UDB_LINEAGE": os.environ.get("UDB_LINEAGE", "file"),
        "UDB_LINEAGE_FILE": str(CACHE / "lineage" / f"{name}.jsonl"),
    }
    for key in ("UDB_STRICT_STARTUP", "UDB_REPORT_SAMPLE_ROWS", "UDB_LEASE_SECONDS", "UDB_AUTH", "UDB_JWT_SECRET",
                "UDB_REDRIVE_MAX", "UDB_REDRIVE_MAX_AGE_SECONDS",
                "UDB_RATE_LIMIT", "UDB_RATE_BURST", "UDB_MAX_CONCURRENT_JOBS",
                "UDB_OTEL_ENDPOINT", "UDB_LINEAGE_URL"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _marker(name: str) -> str:
    return "devstack.broker" if name == "broker" else f"functions/{name}/main.py"


def _running(name: str) -> int | None:
    """The live master (the process recorded at spawn: functions-framework's gunicorn master,
    or the broker) of `name`."""
    return process.running_pid(f"fn-{name}", _marker(name))


def _recorded(name: str) -> int | None:
    try:
        return int(process.pid_file(f"fn-{name}").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _ours(pid: int, name: str) -> bool:
    """A process of this checkout's `name`: same user, and its command line names this
    checkout's function (or broker) — not a stack another checkout left running."""
    try:
        proc = psutil.Process(pid)
        if proc.uids().real != os.getuid():
            return False
        cmdline = " ".join(proc.cmdline())
        cwd = proc.cwd()
    except (psutil.Error, OSError):
        return False
    if name == "broker":
        return _marker(name) in cmdline and (str(ROOT / "eventing") in cmdline or cwd == str(ROOT))
    return str(ROOT / "functions" / name / "main.py") in cmdline


def group(name: str) -> list[int]:
    """Every live process of `name`'s process group: the master and its workers. Each start
    is its own session (process.spawn), so the group id is the recorded master pid, and the
    workers stay in it when the master dies: that is how an orphan is found."""
    pgid = _recorded(name)
    if pgid is None:
        return []
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and process.alive(proc.pid) and _marker(name) in _cmdline(proc.pid):
                found.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return sorted(found)


def listeners(port: int) -> list[int]:
    """Pids listening on HOST:port (what a "port in use" error is about)."""
    pids = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            pids.add(conn.pid)
    return sorted(pids)


def _cmdline(pid: int) -> str:
    return process.cmdline(pid)


def _port(name: str) -> int:
    return BROKER_PORT if name == "broker" else FUNCTION_PORTS[name]


def _healthy(url: str) -> bool:
    return process.http_status(url) == 200


def _clear_leftovers(name: str) -> None:
    """Before a start: whatever is left of an earlier run of `name` whose master is gone (an
    orphaned worker still holding the port) is stopped, so `up` works after any single kill."""
    if _running(name) is None and (group(name) or process.port_busy(_port(name))):
        stop(name)
    if process.port_busy(_port(name)):
        raise ServiceError(f"{name}: port {_port(name)} is in use by a process not started here "
                           f"(pids {listeners(_port(name)) or '?'})")


def start_function(name: str, timeout: float = 60, extra_env: dict | None = None) -> None:
    pid = _running(name)
    if pid is None:
        _clear_leftovers(name)
        argv = [str(VENV_BIN / "functions-framework"), "--source", str(ROOT / "functions" / name / "main.py"),
                "--target", "http", "--host", HOST, "--port", str(FUNCTION_PORTS[name])]
        pid = process.spawn(f"fn-{name}", argv, env={**function_env(name), **(extra_env or {})}, cwd=ROOT)
    _wait(f"fn-{name}", pid, lambda: _healthy(function_url(name) + "/healthz"), timeout)


def start_broker(timeout: float = 60) -> None:
    pid = _running("broker")
    if pid is None:
        _clear_leftovers("broker")
        # --instance: static group membership, so a restarted broker rejoins its consumer
        # groups at once (docs/reliability.md).
        argv = [sys.executable, "-m", "devstack.broker", "--port", str(BROKER_PORT),
                "--kafka", services.endpoints()["kafka"], "--eventing", str(ROOT / "eventing"),
                "--instance", "udb-devstack-broker"]
        for name in FUNCTION_PORTS:
            argv += ["--subscriber", f"udb-{name}={function_url(name)}/"]
        # The broker checks ingress credentials (API keys live in the store) and sends the token.
        pid = process.spawn("fn-broker", argv, env=function_env("broker"), cwd=ROOT)
    _wait("fn-broker", pid, lambda: _healthy(f"http://{HOST}:{BROKER_PORT}/healthz"), timeout)


def _wait(name: str, pid: int, check, timeout: float) -> None:
    process.wait_ready(name, pid, check, timeout, poll=0.2)


def stop(name: str) -> None:
    """Stop `name` whatever state a kill left it in: the master (SIGTERM, then SIGKILL to the
    whole process group), then any of its group still alive without a master (orphaned
    workers), then, as a last resort, a listener on its port that is this checkout's."""
    process.stop(f"fn-{name}", timeout=15, marker=_marker(name))
    pgid = _recorded(name)
    leftovers = group(name) if pgid is not None else []
    if leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _wait_gone(leftovers)
    process.pid_file(f"fn-{name}").unlink(missing_ok=True)
    strays = [pid for pid in listeners(_port(name)) if _ours(pid, name)]
    for pid in strays:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(strays)


def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(process.alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def up(with_services: bool = True) -> dict[str, str]:
    if with_services:
        services.up(STACK_SERVICES)
    for name in FUNCTION_PORTS:
        start_function(name)
    start_broker()
    return {**{name: function_url(name) for name in FUNCTION_PORTS}, "broker": broker_url()}


def down(with_services: bool = True) -> None:
    stop("broker")
    for name in FUNCTION_PORTS:
        stop(name)
    if with_services:
        services.down(STACK_SERVICES)


def _state(name: str, pid: int | None, members: list[int], probe: str) -> str:
    if pid is None:
        # Master gone: an orphaned worker may still answer on the port; `down` or `up` clear it.
        return "orphaned" if members else "down"
    return "up" if _healthy(probe) else "unhealthy"


def status() -> dict[str, dict]:
    """Each function and the broker: its state, the master's pid (the recorded process, the
    group id) and every live process of its group (master and workers)."""
    report = services.status()
    for name in [*FUNCTION_PORTS, "broker"]:
        pid, members = _running(name), group(name)
        probe = function_url(name) + "/readyz" if name != "broker" else f"http://{HOST}:{BROKER_PORT}/healthz"
        report[name] = {"state": _state(name, pid, members, probe),
                        "endpoint": function_url(name) if name != "broker" else broker_url(),
                        "pid": pid, "pgid": _recorded(name) if members else None, "group": members}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down()
        report = status()
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, info in report.items():
        pid = f"pid {info['pid']}" if info["pid"] else ""
        if info.get("group") and info["group"] != [info["pid"]]:  # master and workers, or orphans
            pid = f"{pid} group {info['pgid']}: {' '.join(map(str, info['group']))}".lstrip()
        print(f"{name:<10} {info['state']:<9} {info['endpoint']:<50} {pid}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real local services for UDB's stack mode and integration tests.

No Docker engine is available on the development and CI machines, so each service is
installed from a package registry and run as a plain process on 127.0.0.1:

- kafka:    Apache Kafka (KRaft, combined broker + controller), jars from Maven Central, Java 17
- minio:    MinIO built from source with `go install`
- postgres: PostgreSQL from Debian's packages, a private cluster
- webdav:   WsgiDAV from PyPI, run from the project's venv

Binaries, data, pid files and logs live under <repo>/.cache/. Services are started in
their own session so they outlive the calling process; `down` stops them by pid.

With UDB_SERVICES=containers, kafka, minio and postgres come from testcontainers instead
(only where `docker info` works); those containers live as long as the calling process.

CLI: python -m devstack.services up|down|status [names...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import glob
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
RUN_DIR = CACHE / "run"
LOG_DIR = CACHE / "logs"
BIN_DIR = CACHE / "bin"

HOST = "127.0.0.1"
KAFKA_PORT = 19092
KAFKA_CONTROLLER_PORT = 19093
MINIO_PORT = 19000
MINIO_CONSOLE_PORT = 19001
POSTGRES_PORT = 15432
WEBDAV_PORT = 18080

KAFKA_VERSION = "4.1.2"
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
WSGIDAV_VERSION = "4.4.0"
CHEROOT_VERSION = "11.1.2"

MINIO_ROOT_USER = os.environ.get("UDB_MINIO_ROOT_USER", "udbminio")
MINIO_ROOT_PASSWORD = os.environ.get("UDB_MINIO_ROOT_PASSWORD", "udbminio-secret")
POSTGRES_USER = "udb"
POSTGRES_PASSWORD = "udb"
POSTGRES_DB = "udb"

SERVICES = ("kafka", "minio", "postgres", "webdav")
CONTAINER_SERVICES = ("kafka", "minio", "postgres")

KAFKA_DIR = CACHE / "kafka"
KAFKA_LIBS = KAFKA_DIR / "libs"
KAFKA_DATA = KAFKA_DIR / "data"
KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_LOG4J = Path(__file__).resolve().parent / "kafka" / "log4j2.properties"
MINIO_BIN = BIN_DIR / "minio"
MINIO_DATA = CACHE / "minio-data"
WEBDAV_ROOT = CACHE / "webdav-root"


class ServiceError(RuntimeError):
    pass


# ---------------------------------------------------------------- endpoints

_containers: dict = {}


def endpoints() -> dict[str, str]:
    result = {
        "kafka": f"{HOST}:{KAFKA_PORT}",
        "s3": f"http://{HOST}:{MINIO_PORT}",
        "postgres": f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@{HOST}:{POSTGRES_PORT}/{POSTGRES_DB}",
        "webdav": f"http://{HOST}:{WEBDAV_PORT}",
    }
    result.update(_container_endpoints())
    return result


def minio_credentials() -> tuple[str, str]:
    return MINIO_ROOT_USER, MINIO_ROOT_PASSWORD


def _endpoint_of(name: str) -> str:
    return endpoints()["s3" if name == "minio" else name]


def use_containers() -> bool:
    mode = os.environ.get("UDB_SERVICES", "local").strip().lower() or "local"
    if mode not in ("local", "containers"):
        raise ServiceError(f"UDB_SERVICES={mode!r}: expected 'local' or 'containers'")
    return mode == "containers"


# ---------------------------------------------------------------- process helpers

def _require(service: str, tool: str, what: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise ServiceError(f"{service} needs {tool!r} ({what}) on PATH: not found")
    return path


def _pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def _log_file(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def _log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of the latest run in a log that is appended to across runs."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    runs = re.split(r"^(?==== \d{4}-)", text, flags=re.MULTILINE)
    return "\n".join(runs[-1].splitlines()[-lines:])


def _alive(pid: int) -> bool:
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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


_MARKERS = {"kafka": "kafka.Kafka", "minio": "minio", "postgres": "postgres", "webdav": "wsgidav"}


def _running_pid(name: str, marker: str | None = None) -> int | None:
    """The pid recorded for `name` if that process still runs (and is still ours: its command
    line holds `marker`, by default the service's own)."""
    try:
        pid = int(_pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    # A recycled pid would belong to some unrelated program.
    if _alive(pid) and (marker or _MARKERS[name]) in _cmdline(pid):
        return pid
    return None


def _as_user(user: str | None) -> dict:
    """Popen arguments that drop root to `user` with that user's groups, not root's."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _spawn(name: str, argv: list[str], *, env: dict | None = None, cwd: Path | None = None,
           user: str | None = None) -> int:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = _log_file(name)
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
            **_as_user(user),
        )
    _pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _run_step(name: str, step: str, argv: list[str], *, timeout: float, env: dict | None = None,
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
                                    cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout, **_as_user(user))
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{name}: {step} timed out after {timeout:.0f}s; log {log_path}:\n"
                               f"{_log_tail(log_path)}") from None
    elapsed = time.monotonic() - started
    with open(log_path, "a") as log:
        log.write(f"=== exit {result.returncode} after {elapsed:.1f}s\n")
    if result.returncode != 0:
        raise ServiceError(f"{name}: {step} failed (exit {result.returncode}); log {log_path}:\n"
                           f"{_log_tail(log_path)}")
    return elapsed


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def _lock(name: str):
    """Serialise install/start of one service across processes (e.g. pytest-xdist workers)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_ready(name: str, pid: int, check, timeout: float, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if not _alive(pid):
            _pid_file(name).unlink(missing_ok=True)
            raise ServiceError(f"{name} exited during startup; log {_log_file(name)}:\n"
                               f"{_log_tail(_log_file(name))}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} not ready after {timeout:.0f}s (pid {pid} still running); "
                               f"log {_log_file(name)}:\n{_log_tail(_log_file(name))}")
        time.sleep(poll)


def _start(name: str, ports: tuple[int, ...], install, launch, check, timeout: float) -> None:
    """Shared start logic: idempotent, installs on demand, waits for readiness."""
    with _lock(name):
        pid = _running_pid(name)
        if pid is not None:
            _wait_ready(name, pid, check, timeout)
            return
        busy = [port for port in ports if _port_busy(port)]
        if busy:
            raise ServiceError(f"{name}: port {busy[0]} on {HOST} is already in use by a process "
                               f"not started from {CACHE} (no live pid in {_pid_file(name)})")
        install()
        pid = launch()
        try:
            _wait_ready(name, pid, check, timeout)
        except ServiceError:
            _stop(name)
            raise


def _stop(name: str, sig: int = signal.SIGTERM, timeout: float = 30, marker: str | None = None) -> bool:
    """Stop the process group recorded for `name`; True if something was running."""
    pid = _running_pid(name, marker)
    if pid is None:
        _pid_file(name).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Whatever is left in the session (the leader if it ignored us, or orphaned children).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.1)
    _pid_file(name).unlink(missing_ok=True)
    return True


def _run_async(coro_factory):
    """Run a coroutine to completion even when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_factory()).result()


def _http_status(url: str, method: str = "GET", headers: dict | None = None, timeout: float = 2) -> int | None:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


# ---------------------------------------------------------------- kafka

def _kafka_stamp() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes() + KAFKA_VERSION.encode()).hexdigest()


def install_kafka() -> None:
    stamp = KAFKA_LIBS / ".installed"
    if stamp.exists() and stamp.read_text().strip() == _kafka_stamp():
        return
    _require("kafka", "java", "Java 17")
    mvn = _require("kafka", "mvn", "Maven 3")
    staging = KAFKA_DIR / "libs.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    _run_step("kafka", "install", [
        mvn, "-B", "-q", "-f", str(KAFKA_POM), f"-Dkafka.version={KAFKA_VERSION}",
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ], timeout=1200)
    (staging / ".installed").write_text(_kafka_stamp() + "\n")
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    staging.rename(KAFKA_LIBS)


def _kafka_config() -> Path:
    KAFKA_DATA.mkdir(parents=True, exist_ok=True)
    config = KAFKA_DIR / "server.properties"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{KAFKA_CONTROLLER_PORT}",
        "listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(KAFKA_DATA),
        "auto.create.topics.enable": "true",
        "num.partitions": "4",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return config


def _kafka_java(main: str, *args: str, heap: str = "-Xmx512m") -> list[str]:
    return [
        _require("kafka", "java", "Java 17"), heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        # Keep logging through the broker's own shutdown hook instead of going silent first.
        "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        "-cp", f"{KAFKA_LIBS}/*", main, *args,
    ]


def _launch_kafka() -> int:
    config = _kafka_config()
    if not (KAFKA_DATA / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        _run_step("kafka", "format", _kafka_java(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), heap="-Xmx256m",
        ), timeout=120)
    return _spawn("kafka", _kafka_java("kafka.Kafka", str(config)), cwd=KAFKA_DIR)


def _kafka_ready(timeout_ms: int = 3000) -> bool:
    # A cheap port probe first keeps aiokafka from logging connection errors while the JVM boots.
    if not _port_busy(KAFKA_PORT):
        return False
    try:
        from aiokafka.admin import AIOKafkaAdminClient
    except ImportError:
        raise ServiceError(f"kafka's readiness check needs 'aiokafka' in {sys.executable}: not installed") from None

    async def probe():
        admin = AIOKafkaAdminClient(bootstrap_servers=endpoints()["kafka"],
                                    request_timeout_ms=timeout_ms)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        finally:
            await admin.close()

    try:
        return _run_async(probe)
    except Exception:
        return False


def start_kafka(timeout: float = 120) -> None:
    if use_containers():
        return _start_container("kafka")
    _start("kafka", (KAFKA_PORT, KAFKA_CONTROLLER_PORT), install_kafka, _launch_kafka, _kafka_ready, timeout)


def stop_kafka() -> bool:
    if use_containers():
        return _stop_container("kafka")
    return _stop("kafka", timeout=60)


# ---------------------------------------------------------------- minio

def install_minio() -> None:
    stamp = BIN_DIR / "minio.version"
    if MINIO_BIN.exists() and stamp.exists() and stamp.read_text().strip() == MINIO_VERSION:
        return
    go = _require("minio", "go", "Go 1.24+")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    # MinIO is built statically upstream; CGO off also avoids needing a C toolchain.
    _run_step("minio", "install", [go, "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
              env={"GOBIN": str(BIN_DIR), "CGO_ENABLED": "0"}, cwd=CACHE, timeout=3600)
    stamp.write_text(MINIO_VERSION + "\n")


def _launch_minio() -> int:
    MINIO_DATA.mkdir(parents=True, exist_ok=True)
    return _spawn("minio", [
        str(MINIO_BIN), "server", str(MINIO_DATA),
        "--address", f"{HOST}:{MINIO_PORT}", "--console-address", f"{HOST}:{MINIO_CONSOLE_PORT}",
    ], env={
        "MINIO_ROOT_USER": MINIO_ROOT_USER,
        "MINIO_ROOT_PASSWORD": MINIO_ROOT_PASSWORD,
        "MINIO_UPDATE": "off",
        "MINIO_BROWSER": "on",
    }, cwd=CACHE)


def _minio_ready() -> bool:
    return _http_status(f"{endpoints()['s3']}/minio/health/ready") == 200


def start_minio(timeout: float = 60) -> None:
    if use_containers():
        return _start_container("minio")
    _start("minio", (MINIO_PORT, MINIO_CONSOLE_PORT), install_minio, _launch_minio, _minio_ready, timeout)


def stop_minio() -> bool:
    if use_containers():
        return _stop_container("minio")
    return _stop("minio")


# ---------------------------------------------------------------- postgres

def _pg_bin() -> Path | None:
    def major(path: str) -> int:
        try:
            return int(Path(path).parent.parent.name)
        except ValueError:
            return 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major)
    return Path(found[-1]).parent if found else None


def _pg_user() -> str | None:
    # initdb and postgres refuse to run as root.
    return "postgres" if os.geteuid() == 0 else None


def _traversable_by(user: str | None, path: Path) -> bool:
    if user is None:
        return True
    probe = subprocess.run(["test", "-x", str(path)], **_as_user(user),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def _pg_dirs() -> tuple[Path, Path]:
    """(data dir, unix socket dir)."""
    base = CACHE
    CACHE.mkdir(parents=True, exist_ok=True)
    # The postgres user must reach its data dir; a repo under a private home (e.g. /root)
    # is not traversable, and unix socket paths are limited to ~107 bytes.
    if not _traversable_by(_pg_user(), CACHE) or len(str(CACHE / "pg-socket" / ".s.PGSQL.00000")) > 100:
        tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
        base = Path(tempfile.gettempdir()) / f"udb-devstack-{tag}"
        base.mkdir(mode=0o755, exist_ok=True)
    return base / "pg-data", base / "pg-socket"


def install_postgres() -> None:
    if _pg_bin() is not None:
        return
    apt = _require("postgres", "apt-get", "Debian's package manager")
    if os.geteuid() != 0:
        raise ServiceError("postgres: PostgreSQL is not installed and installing it needs root: "
                           "run `apt-get install -y postgresql` as root")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    _run_step("postgres", "install", [apt, "update"], env=env, timeout=600)
    _run_step("postgres", "install", [apt, "install", "-y", "--no-install-recommends", "postgresql"],
              env=env, timeout=1200)
    if _pg_bin() is None:
        raise ServiceError("postgres: apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb")


def _own(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


def _initdb(data: Path) -> None:
    user = _pg_user()
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    _own(data, user)
    with tempfile.NamedTemporaryFile("w", dir=data.parent, prefix="pg-pw-", delete=False) as pwfile:
        pwfile.write(POSTGRES_PASSWORD + "\n")
    try:
        _own(Path(pwfile.name), user)
        _run_step("postgres", "initdb", [
            str(_pg_bin() / "initdb"), "-D", str(data), "-U", POSTGRES_USER, f"--pwfile={pwfile.name}",
            "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
        ], user=user, cwd=data, timeout=300)
    finally:
        os.unlink(pwfile.name)


def _launch_postgres() -> int:
    data, sockets = _pg_dirs()
    user = _pg_user()
    version_file = data / "PG_VERSION"
    # The cluster is disposable: re-create it when missing or made by another major version.
    if not version_file.exists() or version_file.read_text().strip() != _pg_bin().parent.name:
        shutil.rmtree(data, ignore_errors=True)
        _initdb(data)
    sockets.mkdir(parents=True, exist_ok=True)
    _own(sockets, user)
    return _spawn("postgres", [
        str(_pg_bin() / "postgres"), "-D", str(data), "-p", str(POSTGRES_PORT),
        "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={sockets}",
        # Disposable dev/test data: durability is not worth the fsync cost.
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
    ], user=user, cwd=data)


def _psql(sql: str, database: str = POSTGRES_DB, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_pg_bin() / "psql"), "-h", HOST, "-p", str(POSTGRES_PORT), "-U", POSTGRES_USER,
         "-d", database, "-tAc", sql],
        env={**os.environ, "PGPASSWORD": POSTGRES_PASSWORD, "PGCONNECT_TIMEOUT": "3"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def _postgres_ready() -> bool:
    if _pg_bin() is None:
        return False
    try:
        if _psql("SELECT 1").returncode == 0:
            return True
        # Up, but the database itself is created on first start.
        probe = _psql(f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DB}'", database="postgres")
        if probe.returncode != 0:
            return False
        if probe.stdout.strip() != "1":
            _psql(f'CREATE DATABASE "{POSTGRES_DB}"', database="postgres")
        return _psql("SELECT 1").returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_postgres(timeout: float = 60) -> None:
    if use_containers():
        return _start_container("postgres")
    _start("postgres", (POSTGRES_PORT,), install_postgres, _launch_postgres, _postgres_ready, timeout)


def stop_postgres() -> bool:
    if use_containers():
        return _stop_container("postgres")
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for clients to disconnect.
    return _stop("postgres", sig=signal.SIGINT)


# ---------------------------------------------------------------- webdav

def _venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def install_webdav() -> None:
    python = _venv_python()
    check = subprocess.run([python, "-c", "import wsgidav, cheroot"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if check.returncode == 0:
        return
    packages = [f"wsgidav=={WSGIDAV_VERSION}", f"cheroot=={CHEROOT_VERSION}"]
    has_pip = subprocess.run([python, "-m", "pip", "--version"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if has_pip:
        argv = [python, "-m", "pip", "install", "--quiet", *packages]
    elif shutil.which("uv"):
        argv = ["uv", "pip", "install", "--python", python, *packages]
    else:
        raise ServiceError(f"webdav needs 'pip' in {python} or 'uv' on PATH to install wsgidav: not found")
    _run_step("webdav", "install", argv, timeout=600)


def _launch_webdav() -> int:
    WEBDAV_ROOT.mkdir(parents=True, exist_ok=True)
    return _spawn("webdav", [
        _venv_python(), "-m", "wsgidav.server.server_cli",
        "--host", HOST, "--port", str(WEBDAV_PORT), "--root", str(WEBDAV_ROOT),
        "--auth", "anonymous", "--server", "cheroot", "--no-config", "-q",
    ], cwd=CACHE)


def _webdav_ready() -> bool:
    return _http_status(endpoints()["webdav"] + "/", method="PROPFIND", headers={"Depth": "0"}) == 207


def start_webdav(timeout: float = 30) -> None:
    _start("webdav", (WEBDAV_PORT,), install_webdav, _launch_webdav, _webdav_ready, timeout)


def stop_webdav() -> bool:
    return _stop("webdav")


# ---------------------------------------------------------------- containers (Docker hosts only)

def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _start_container(name: str) -> None:
    if name in _containers:
        return
    if not _docker_available():
        raise ServiceError(f"{name}: UDB_SERVICES=containers is not available: no Docker engine "
                           "(`docker info` failed); unset UDB_SERVICES to run local services")
    if name == "kafka":
        from testcontainers.community.kafka import KafkaContainer

        _containers[name] = KafkaContainer().with_kraft().start()
    elif name == "postgres":
        from testcontainers.community.postgres import PostgresContainer

        _containers[name] = PostgresContainer(username=POSTGRES_USER, password=POSTGRES_PASSWORD,
                                              dbname=POSTGRES_DB).start()
    else:
        # testcontainers' MinioContainer needs the `minio` client package; a plain container does not.
        from testcontainers.core.container import DockerContainer

        container = (DockerContainer("minio/minio:latest")
                     .with_env("MINIO_ROOT_USER", MINIO_ROOT_USER)
                     .with_env("MINIO_ROOT_PASSWORD", MINIO_ROOT_PASSWORD)
                     .with_command("server /data")
                     .with_exposed_ports(9000))
        _containers[name] = container.start()
        deadline = time.monotonic() + 60
        while not _minio_ready():
            if time.monotonic() > deadline:
                raise ServiceError("minio container not ready after 60s")
            time.sleep(0.5)


def _stop_container(name: str) -> bool:
    container = _containers.pop(name, None)
    if container is None:
        return False
    container.stop()
    return True


def _container_endpoints() -> dict[str, str]:
    result = {}
    if "kafka" in _containers:
        result["kafka"] = _containers["kafka"].get_bootstrap_server()
    if "minio" in _containers:
        container = _containers["minio"]
        result["s3"] = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(9000)}"
    if "postgres" in _containers:
        result["postgres"] = _containers["postgres"].get_connection_url(driver=None)
    return result


# ---------------------------------------------------------------- stack

_STARTERS = {"kafka": start_kafka, "minio": start_minio, "postgres": start_postgres, "webdav": start_webdav}
_STOPPERS = {"kafka": stop_kafka, "minio": stop_minio, "postgres": stop_postgres, "webdav": stop_webdav}
_CHECKS = {"kafka": _kafka_ready, "minio": _minio_ready, "postgres": _postgres_ready, "webdav": _webdav_ready}


def _names(names) -> list[str]:
    if not names:
        return list(SERVICES)
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    return list(dict.fromkeys(names))


def up(names=None) -> dict[str, str]:
    """Start the named services (all by default) in parallel; returns their endpoints."""
    selected = _names(names)
    errors = []
    with concurrent.futures.ThreadPoolExecutor(len(selected)) as pool:
        futures = {name: pool.submit(_STARTERS[name]) for name in selected}
        for name, future in futures.items():
            try:
                future.result()
            except ServiceError as error:
                errors.append(str(error))
    if errors:
        raise ServiceError("\n\n".join(errors))
    return {name: _endpoint_of(name) for name in selected}


def down(names=None) -> None:
    selected = _names(names)
    with concurrent.futures.ThreadPoolExecutor(len(selected)) as pool:
        list(pool.map(lambda name: _STOPPERS[name](), selected))


def status(names=None) -> dict[str, dict]:
    """name -> {"state": "up" | "down" | "unhealthy", "endpoint": ..., "pid": ...}."""
    result = {}
    for name in _names(names):
        if use_containers() and name in CONTAINER_SERVICES:
            state = "up" if name in _containers else "down"
            result[name] = {"state": state, "endpoint": _endpoint_of(name), "pid": None}
            continue
        pid = _running_pid(name)
        if pid is None:
            state = "down"
        else:
            state = "up" if _CHECKS[name]() else "unhealthy"
        result[name] = {"state": state, "endpoint": _endpoint_of(name), "pid": pid}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.services",
                                     description="Start, stop or inspect UDB's local services.")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("names", nargs="*", metavar="name", help=f"any of: {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.names)
        elif args.command == "down":
            down(args.names)
        report = status(args.names)
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, info in report.items():
        pid = f"pid {info['pid']}" if info["pid"] else ""
        print(f"{name:<9} {info['state']:<9} {info['endpoint']:<50} {pid}".rstrip())
    if args.command == "up" and any(info["state"] != "up" for info in report.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

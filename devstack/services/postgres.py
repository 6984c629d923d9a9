"""PostgreSQL from Debian's packages: a private, disposable cluster on a high port."""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from . import containers
from .config import (CACHE, HOST, POSTGRES_DB, POSTGRES_PASSWORD, POSTGRES_PORT, POSTGRES_USER, ROOT, ServiceError,
                     use_containers)
from .process import as_user, require, run_step, spawn, start, stop


def _pg_bin() -> Path | None:
    def major(path: str) -> int:
        try:
            return int(Path(path).parent.parent.name)
        except ValueError:
            return 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major)
    return Path(found[-1]).parent if found else None


def _pg_bin_required() -> Path:
    """The PostgreSQL binaries' folder; ServiceError when PostgreSQL is not installed."""
    found = _pg_bin()
    if found is None:
        raise ServiceError("postgres: no /usr/lib/postgresql/*/bin/initdb (run `python -m devstack.services up postgres`)")
    return found


def _pg_user() -> str | None:
    # initdb and postgres refuse to run as root.
    return "postgres" if os.geteuid() == 0 else None


def _traversable_by(user: str | None, path: Path) -> bool:
    if user is None:
        return True
    probe = subprocess.run(["test", "-x", str(path)], **as_user(user),
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
    apt = require("postgres", "apt-get", "Debian's package manager")
    if os.geteuid() != 0:
        raise ServiceError("postgres: PostgreSQL is not installed and installing it needs root: "
                           "run `apt-get install -y postgresql` as root")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run_step("postgres", "install", [apt, "update"], env=env, timeout=600)
    run_step("postgres", "install", [apt, "install", "-y", "--no-install-recommends", "postgresql"],
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
        run_step("postgres", "initdb", [
            str(_pg_bin_required() / "initdb"), "-D", str(data), "-U", POSTGRES_USER, f"--pwfile={pwfile.name}",
            "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
        ], user=user, cwd=data, timeout=300)
    finally:
        os.unlink(pwfile.name)


def _launch_postgres() -> int:
    data, sockets = _pg_dirs()
    user = _pg_user()
    version_file = data / "PG_VERSION"
    # The cluster is disposable: re-create it when missing or made by another major version.
    if not version_file.exists() or version_file.read_text().strip() != _pg_bin_required().parent.name:
        shutil.rmtree(data, ignore_errors=True)
        _initdb(data)
    sockets.mkdir(parents=True, exist_ok=True)
    _own(sockets, user)
    return spawn("postgres", [
        str(_pg_bin_required() / "postgres"), "-D", str(data), "-p", str(POSTGRES_PORT),
        "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={sockets}",
        # Disposable dev/test data: durability is not worth the fsync cost.
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
    ], user=user, cwd=data)


def _psql(sql: str, database: str = POSTGRES_DB, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_pg_bin_required() / "psql"), "-h", HOST, "-p", str(POSTGRES_PORT), "-U", POSTGRES_USER,
         "-d", database, "-tAc", sql],
        env={**os.environ, "PGPASSWORD": POSTGRES_PASSWORD, "PGCONNECT_TIMEOUT": "3"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def postgres_ready() -> bool:
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
        return containers.start_container("postgres")
    start("postgres", (POSTGRES_PORT,), install_postgres, _launch_postgres, postgres_ready, timeout)


def stop_postgres() -> bool:
    if use_containers():
        return containers.stop_container("postgres")
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for clients to disconnect.
    return stop("postgres", sig=signal.SIGINT)

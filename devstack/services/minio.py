"""MinIO built from source with `go install` (pinned module version), data under .cache/."""
from __future__ import annotations

from . import containers
from .config import (BIN_DIR, CACHE, HOST, MINIO_BIN, MINIO_CONSOLE_PORT, MINIO_DATA, MINIO_MODULE, MINIO_PORT,
                     MINIO_ROOT_PASSWORD, MINIO_ROOT_USER, MINIO_VERSION, use_containers)
from .endpoints import endpoints
from .process import http_status, require, run_step, spawn, start, stop


def install_minio() -> None:
    stamp = BIN_DIR / "minio.version"
    if MINIO_BIN.exists() and stamp.exists() and stamp.read_text().strip() == MINIO_VERSION:
        return
    go = require("minio", "go", "Go 1.24+")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    # MinIO is built statically upstream; CGO off also avoids needing a C toolchain.
    run_step("minio", "install", [go, "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
              env={"GOBIN": str(BIN_DIR), "CGO_ENABLED": "0"}, cwd=CACHE, timeout=3600)
    stamp.write_text(MINIO_VERSION + "\n")


def _launch_minio() -> int:
    MINIO_DATA.mkdir(parents=True, exist_ok=True)
    return spawn("minio", [
        str(MINIO_BIN), "server", str(MINIO_DATA),
        "--address", f"{HOST}:{MINIO_PORT}", "--console-address", f"{HOST}:{MINIO_CONSOLE_PORT}",
    ], env={
        "MINIO_ROOT_USER": MINIO_ROOT_USER,
        "MINIO_ROOT_PASSWORD": MINIO_ROOT_PASSWORD,
        "MINIO_UPDATE": "off",
        "MINIO_BROWSER": "on",
    }, cwd=CACHE)


def minio_ready() -> bool:
    return http_status(f"{endpoints()['s3']}/minio/health/ready") == 200


def start_minio(timeout: float = 60) -> None:
    if use_containers():
        return containers.start_container("minio", ready=minio_ready)
    start("minio", (MINIO_PORT, MINIO_CONSOLE_PORT), install_minio, _launch_minio, minio_ready, timeout)


def stop_minio() -> bool:
    if use_containers():
        return containers.stop_container("minio")
    return stop("minio")

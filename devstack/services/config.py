"""Where the local services live and listen: paths under <repo>/.cache/, fixed loopback ports,
pinned versions and the development credentials."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DEVSTACK = ROOT / "devstack"
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
KAFKA_POM = DEVSTACK / "kafka" / "pom.xml"
KAFKA_LOG4J = DEVSTACK / "kafka" / "log4j2.properties"
MINIO_BIN = BIN_DIR / "minio"
MINIO_DATA = CACHE / "minio-data"
WEBDAV_ROOT = CACHE / "webdav-root"


class ServiceError(RuntimeError):
    pass


def use_containers() -> bool:
    """UDB_SERVICES=containers: kafka, minio and postgres from testcontainers (Docker hosts only)."""
    mode = os.environ.get("UDB_SERVICES", "local").strip().lower() or "local"
    if mode not in ("local", "containers"):
        raise ServiceError(f"UDB_SERVICES={mode!r}: expected 'local' or 'containers'")
    return mode == "containers"

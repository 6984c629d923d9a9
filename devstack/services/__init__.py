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

One module per concern: config (paths, ports, versions, credentials), process (pid files, logs,
spawn, readiness, stop), endpoints, one module per service (kafka, minio, postgres, webdav),
containers, and control (up, down, status and the CLI).

CLI: python -m devstack.services up|down|status [names...]
"""
from .config import (CACHE, CONTAINER_SERVICES, HOST, KAFKA_LIBS, KAFKA_LOG4J, KAFKA_PORT, LOG_DIR, MINIO_BIN,
                     MINIO_PORT, POSTGRES_PORT, ROOT, SERVICES, WEBDAV_PORT, WEBDAV_ROOT, ServiceError,
                     use_containers)
from .control import down, main, status, up
from .endpoints import endpoint_of, endpoints, minio_credentials
from .kafka import install_kafka, start_kafka, stop_kafka
from .minio import install_minio, start_minio, stop_minio
from .postgres import install_postgres, start_postgres, stop_postgres
from .webdav import install_webdav, start_webdav, stop_webdav

__all__ = [
    "CACHE", "CONTAINER_SERVICES", "HOST", "KAFKA_LIBS", "KAFKA_LOG4J", "KAFKA_PORT", "LOG_DIR", "MINIO_BIN",
    "MINIO_PORT", "POSTGRES_PORT", "ROOT", "SERVICES", "WEBDAV_PORT", "WEBDAV_ROOT", "ServiceError", "down",
    "endpoint_of", "endpoints", "install_kafka", "install_minio", "install_postgres", "install_webdav", "main",
    "minio_credentials", "start_kafka", "start_minio", "start_postgres", "start_webdav", "status", "stop_kafka",
    "stop_minio", "stop_postgres", "stop_webdav", "up", "use_containers",
]

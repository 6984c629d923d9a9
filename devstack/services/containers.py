"""UDB_SERVICES=containers: kafka, minio and postgres from testcontainers (Docker hosts only).
Those containers live as long as the calling process."""
from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any, Callable

from .config import MINIO_ROOT_PASSWORD, MINIO_ROOT_USER, POSTGRES_DB, POSTGRES_PASSWORD, POSTGRES_USER, ServiceError

_containers: dict[str, Any] = {}


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_container(name: str, ready: Callable[[], bool] | None = None, timeout: float = 60) -> None:
    """Start `name` in a container (once per process); `ready`, when given, is polled until it
    holds (MinIO's health check: a plain container has no wait strategy of its own)."""
    if name in _containers:
        return
    if not docker_available():
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
    deadline = time.monotonic() + timeout
    while ready is not None and not ready():
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} container not ready after {timeout:.0f}s")
        time.sleep(0.5)


def stop_container(name: str) -> bool:
    container = _containers.pop(name, None)
    if container is None:
        return False
    container.stop()
    return True


def running() -> set[str]:
    """The services this process runs in containers."""
    return set(_containers)


def container_endpoints() -> dict[str, str]:
    """Endpoints of the services running in containers, by endpoint name (kafka, s3, postgres)."""
    result = {}
    if "kafka" in _containers:
        result["kafka"] = _containers["kafka"].get_bootstrap_server()
    if "minio" in _containers:
        container = _containers["minio"]
        result["s3"] = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(9000)}"
    if "postgres" in _containers:
        result["postgres"] = _containers["postgres"].get_connection_url(driver=None)
    return result

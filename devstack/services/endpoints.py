"""Where each service answers: the local processes' fixed loopback addresses, or the
containers' mapped ports when UDB_SERVICES=containers started them."""
from __future__ import annotations

from . import containers
from .config import (HOST, KAFKA_PORT, MINIO_PORT, MINIO_ROOT_PASSWORD, MINIO_ROOT_USER, POSTGRES_DB,
                     POSTGRES_PASSWORD, POSTGRES_PORT, POSTGRES_USER, WEBDAV_PORT)


def endpoints() -> dict[str, str]:
    """{kafka, s3, postgres, webdav} -> address."""
    result = {
        "kafka": f"{HOST}:{KAFKA_PORT}",
        "s3": f"http://{HOST}:{MINIO_PORT}",
        "postgres": f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@{HOST}:{POSTGRES_PORT}/{POSTGRES_DB}",
        "webdav": f"http://{HOST}:{WEBDAV_PORT}",
    }
    result.update(containers.container_endpoints())
    return result


def minio_credentials() -> tuple[str, str]:
    return MINIO_ROOT_USER, MINIO_ROOT_PASSWORD


def endpoint_of(name: str) -> str:
    """The endpoint of a service by its name (minio answers as "s3")."""
    return endpoints()["s3" if name == "minio" else name]

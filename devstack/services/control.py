"""The services together: start them in parallel, stop them, report their state, and the CLI
`python -m devstack.services up|down|status [names...]`."""
from __future__ import annotations

import argparse
import concurrent.futures
import sys

from . import containers
from .config import CONTAINER_SERVICES, SERVICES, ServiceError, use_containers
from .endpoints import endpoint_of
from .kafka import kafka_ready, start_kafka, stop_kafka
from .minio import minio_ready, start_minio, stop_minio
from .postgres import postgres_ready, start_postgres, stop_postgres
from .process import running_pid
from .webdav import start_webdav, stop_webdav, webdav_ready

_STARTERS = {"kafka": start_kafka, "minio": start_minio, "postgres": start_postgres, "webdav": start_webdav}
_STOPPERS = {"kafka": stop_kafka, "minio": stop_minio, "postgres": stop_postgres, "webdav": stop_webdav}
_CHECKS = {"kafka": kafka_ready, "minio": minio_ready, "postgres": postgres_ready, "webdav": webdav_ready}


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
    return {name: endpoint_of(name) for name in selected}


def down(names=None) -> None:
    selected = _names(names)
    with concurrent.futures.ThreadPoolExecutor(len(selected)) as pool:
        list(pool.map(lambda name: _STOPPERS[name](), selected))


def status(names=None) -> dict[str, dict]:
    """name -> {"state": "up" | "down" | "unhealthy", "endpoint": ..., "pid": ...}."""
    result: dict[str, dict] = {}
    for name in _names(names):
        if use_containers() and name in CONTAINER_SERVICES:
            state = "up" if name in containers.running() else "down"
            result[name] = {"state": state, "endpoint": endpoint_of(name), "pid": None}
            continue
        pid = running_pid(name)
        if pid is None:
            state = "down"
        else:
            state = "up" if _CHECKS[name]() else "unhealthy"
        result[name] = {"state": state, "endpoint": endpoint_of(name), "pid": pid}
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

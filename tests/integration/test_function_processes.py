"""Each function as its own functions-framework process: health, dependency report, strict start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devstack import stack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_startupz_reports_every_dependency_and_the_gauge(running_stack):
    for name, url in ((n, stack.function_url(n)) for n in stack.FUNCTION_PORTS):
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        report = httpx.get(f"{url}/startupz", timeout=30)
        assert report.status_code == 200, report.text
        assert report.json() == {"function": name, "ready": True, "dependencies": {
            "object_store": "up", "kafka": "up", "duckdb_extensions": "up"}}
        metrics = httpx.get(f"{url}/metrics", timeout=5,
                            headers={"Authorization": f"Bearer {stack.broker_token()}"}).text
        for component in ("object_store", "kafka", "duckdb_extensions"):
            assert f'udb_dependency_up{{component="{component}"}} 1.0' in metrics


def test_strict_startup_exits_when_a_dependency_is_down(tmp_path):
    env = {**os.environ, **stack.function_env("sync"), "UDB_STRICT_STARTUP": "1",
           "UDB_KAFKA_BOOTSTRAP": "127.0.0.1:1", "UDB_S3_ENDPOINT": "http://127.0.0.1:2"}
    result = subprocess.run([str(Path(sys.executable).parent / "functions-framework"), "--source",
                             str(REPO / "functions" / "sync" / "main.py"), "--target", "http", "--port", "18099"],
                            env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    assert "udb-sync: required dependency object_store is down" in result.stderr
    assert "udb-sync: required dependency kafka is down" in result.stderr


def test_bad_configuration_exits_before_the_port_is_bound(tmp_path):
    from tests.function_server import free_port, server_env
    port = free_port()
    env = server_env(tmp_path, UDB_MODE="bogus", UDB_READY_CACHE_SECONDS="soon")
    result = subprocess.run([str(Path(sys.executable).parent / "functions-framework"), "--source",
                             str(REPO / "functions" / "sync" / "main.py"), "--target", "http", "--port", str(port)],
                            env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("udb-sync:")] == [
        "udb-sync: invalid configuration: UDB_MODE: expected one of embedded, stack, cluster; found 'bogus'",
        "udb-sync: invalid configuration: UDB_READY_CACHE_SECONDS: expected float, found 'soon'",
    ]
    assert "Traceback" not in result.stderr


def test_readyz_and_startupz_reuse_one_kafka_client(stack_services, tmp_path):
    """A real function process (functions-framework, gunicorn's forked worker) answers its
    probes over the Kafka producer it publishes with: in front of Kafka's bootstrap address a
    relay counts the clients the process makes. The admin client per check it used to open
    would count one per /startupz and per /readyz refresh."""
    from devstack import services
    from tests.function_server import serve
    from tests.peers.tcp_counter import TcpCounter

    with TcpCounter(("127.0.0.1", services.KAFKA_PORT)) as kafka:
        env = {**stack.function_env("sync"), "UDB_KAFKA_BOOTSTRAP": kafka.address, "UDB_READY_CACHE_SECONDS": "0",
               "UDB_OTEL_EXPORTER": "none", "UDB_LINEAGE": "none", "UDB_LOG_LEVEL": "WARNING"}
        env.pop("UDB_HOME")
        with serve("sync", tmp_path / "home", **env) as server:
            for _ in range(5):  # the startupProbe: a fresh check each time
                status, body, _ = server.get("/startupz", timeout=30)
                assert status == 200, body
                assert json.loads(body)["dependencies"] == {"object_store": "up", "kafka": "up",
                                                            "duckdb_extensions": "up"}
            for _ in range(100):  # the readinessProbe, every report stale: refreshed in the background
                status, body, _ = server.get("/readyz")
                assert status == 200, body
                time.sleep(0.02)
            assert kafka.accepted == 1

"""Each function as its own functions-framework process: health, dependency report, strict start."""
from __future__ import annotations

import os
import subprocess
import sys
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

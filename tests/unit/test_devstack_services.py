"""devstack/services/ as a package: the paths its modules compute from their own location, the
names callers import from `devstack.services`, and the CLI `python -m devstack.services`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devstack import services
from devstack.services import config, process
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_paths_are_the_repositorys():
    # config.py sits two levels below the root: the Kafka build files and .cache/ are found there.
    assert config.ROOT == REPO
    assert config.CACHE == REPO / ".cache" and config.LOG_DIR == REPO / ".cache" / "logs"
    assert config.KAFKA_POM.is_file() and config.KAFKA_LOG4J.is_file()
    assert config.KAFKA_POM == REPO / "devstack" / "kafka" / "pom.xml"


def test_callers_names_are_importable_from_the_package():
    # images/build.py, devstack/stack.py and the tests import these from devstack.services.
    for name in ("install_kafka", "install_minio", "KAFKA_LIBS", "KAFKA_LOG4J", "MINIO_BIN", "WEBDAV_ROOT",
                 "LOG_DIR", "CACHE", "ROOT", "HOST", "SERVICES", "ServiceError", "endpoints", "minio_credentials",
                 "up", "down", "status", "start_minio", "stop_minio", "start_kafka", "stop_kafka"):
        assert hasattr(services, name), name
    assert services.SERVICES == ("kafka", "minio", "postgres", "webdav")
    assert services.endpoints()["s3"] == "http://127.0.0.1:19000"
    assert process.log_file("kafka") == REPO / ".cache" / "logs" / "kafka.log"


def test_log_tail_gives_the_latest_run_only(tmp_path):
    log = tmp_path / "svc.log"
    log.write_text("\n=== 2026-01-01 00:00:00 starting: a\nold line\n"
                   "\n=== 2026-01-02 00:00:00 starting: b\nnew 1\nnew 2\n")
    assert process.log_tail(log) == "=== 2026-01-02 00:00:00 starting: b\nnew 1\nnew 2"
    assert process.log_tail(log, lines=1) == "new 2"
    assert process.log_tail(tmp_path / "missing.log") == "(no log)"


def test_cli_refuses_an_unknown_service_before_touching_any():
    result = subprocess.run([sys.executable, "-m", "devstack.services", "status", "kafka", "bogus"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "error: unknown service(s) bogus; known: kafka, minio, postgres, webdav\n"

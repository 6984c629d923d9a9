"""Session fixtures for the real stack: services, function processes and the local broker.

Started by the tests themselves (the same code as `just stack up`) and stopped at the end,
unless they were already running when the session began (a developer's `just stack up`).
"""
from __future__ import annotations

import time
import uuid

import boto3
import httpx
import pytest

from devstack import services, stack


def _running(report: dict, names) -> bool:
    return all(report.get(n, {}).get("state") == "up" for n in names)


@pytest.fixture(scope="session")
def stack_services():
    before = services.status(stack.STACK_SERVICES + ["postgres"])
    services.up(stack.STACK_SERVICES + ["postgres"])
    yield services.endpoints()
    started = [n for n, info in before.items() if info["state"] != "up"]
    if started:
        services.down(started)


@pytest.fixture(scope="session")
def running_stack(stack_services):
    report = stack.status()
    already = _running(report, list(stack.FUNCTION_PORTS) + ["broker"])
    urls = stack.up(with_services=False)
    yield urls
    if not already:
        stack.down(with_services=False)


@pytest.fixture(scope="session")
def s3_client(stack_services):
    user, password = services.minio_credentials()
    return boto3.client("s3", endpoint_url=stack_services["s3"], aws_access_key_id=user,
                        aws_secret_access_key=password, region_name="us-east-1")


@pytest.fixture
def tenant() -> str:
    # A fresh tenant per test: MinIO and Kafka keep data between sessions.
    return "t" + uuid.uuid4().hex[:10]


def wait_for_job(artifacts_url: str, tenant: str, job_id: str, timeout: float = 240,
                 states: tuple = ("completed", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    doc = None
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            response = client.get(f"{artifacts_url}/status/{job_id}", headers={"X-UDB-Tenant": tenant})
            if response.status_code == 200:
                doc = response.json()
                if doc["state"] in states:
                    return doc
            time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s; last status {doc}")

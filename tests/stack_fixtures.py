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


_KEYS: dict[tuple[str, str], str] = {}


def auth_headers(tenant: str, role: str = "admin") -> dict:
    """Credentials for `tenant` on the running stack (authentication is on there): an API key
    made once per tenant and role in the stack's store, as `udb keys create` does, plus the
    X-UDB-Tenant header (allowed when it names the key's tenant)."""
    if (tenant, role) not in _KEYS:
        from shared.security.auth import KeyStore
        from shared.core.settings import Settings
        from shared.storage.backends import open_store

        store = open_store(Settings.from_env(env=stack.function_env("cli")))
        _KEYS[(tenant, role)] = KeyStore(store).create(tenant, role, "tests")[0]
    return {"Authorization": f"Bearer {_KEYS[(tenant, role)]}", "X-UDB-Tenant": tenant}


def broker_auth() -> dict:
    """The broker token header: what UDB's own senders present to the broker ingress (any event
    type, any tenant). A test acting as a tenant uses `auth_headers(tenant)` instead."""
    return {"Authorization": f"Bearer {stack.broker_token()}"}


def wait_for_job(artifacts_url: str, tenant: str, job_id: str, timeout: float = 240,
                 states: tuple = ("completed", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    doc = None
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            response = client.get(f"{artifacts_url}/status/{job_id}", headers=auth_headers(tenant))
            if response.status_code == 200:
                doc = response.json()
                if doc["state"] in states:
                    return doc
            time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s; last status {doc}")


def wait_for_reports(artifacts_url: str, tenant: str, job_id: str, timeout: float = 300) -> dict:
    """The job document of a completed job once its reports (the reports function, on the side)
    are no longer `pending`."""
    deadline = time.monotonic() + timeout
    while True:
        doc = wait_for_job(artifacts_url, tenant, job_id, timeout=max(1.0, deadline - time.monotonic()))
        if (doc.get("reports") or {}).get("state") != "pending":
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"the reports of job {job_id} are still pending after {timeout}s: {doc['reports']}")
        time.sleep(0.5)


SOURCE_BUCKET = "udb-e2e-sources"


def sales_in_minio(s3_client, tenant: str, tmp_path, rows: int) -> str:
    """A generated sales CSV (tests.conftest.write_sales) uploaded for `tenant`; its s3 hint."""
    from tests.conftest import write_sales

    try:
        s3_client.create_bucket(Bucket=SOURCE_BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    path = write_sales(tmp_path / tenant / "sales.csv", rows)
    s3_client.upload_file(str(path), SOURCE_BUCKET, f"{tenant}/sales.csv")
    return f"s3://{SOURCE_BUCKET}/{tenant}/sales.csv"


def topic_records(topic: str, keep) -> list:
    """Every record of `topic`, from the start until it stays quiet for 2 s, that `keep(record)`
    accepts, in order."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def consume() -> list:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=services.endpoints()["kafka"],
                                    auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
        await consumer.start()
        seen = []
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=2000, max_records=5000)
                if not batch:
                    return seen
                for records in batch.values():
                    seen.extend(r for r in records if keep(r))
        finally:
            await consumer.stop()

    return asyncio.run(consume())


def broker_events(tenant: str, job_id: str) -> list:
    """(Kafka headers, CloudEvent) of every event of the job on the broker's topic, in order."""
    from shared.core import bindings

    records = topic_records(f"knative-broker-{stack.NAMESPACE}-{stack.BROKER}", lambda r: r.key == tenant.encode())
    found = []
    for record in records:
        event = bindings.from_kafka(record.key, record.value, record.headers)
        if event.get_attributes().get("jobid") == job_id:
            found.append((dict(record.headers), event))
    return found


def stack_tenant_store(tenant: str):
    """The tenant's view of the stack's bucket, as the functions see it (for reading its lake)."""
    from shared.storage.s3store import S3Store
    from shared.storage.store import TenantStore
    user, password = services.minio_credentials()
    return TenantStore(S3Store(stack.BUCKET, endpoint=services.endpoints()["s3"], access_key=user,
                               secret_key=password), tenant)


def stack_lake(tenant: str):
    """A read-only connection on the tenant's lake in the stack (shared.storage.lake.reader)."""
    from shared.storage import lake
    return lake.reader(stack_tenant_store(tenant))

"""A valid event that breaks a handler every time: retried, dead-lettered, its job failed with
the reason — and other tenants' jobs are not held up."""
from __future__ import annotations

import time

import httpx
import pytest
from cloudevents.http import to_binary

from devstack import stack
from shared import events
from shared.tenancy import new_job_id
from tests.conftest import write_sales
from tests.stack_fixtures import broker_auth, wait_for_job

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]


def post(event) -> None:
    headers, body = to_binary(event)
    assert httpx.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body, timeout=10).status_code == 202


def test_poison_event_is_dead_lettered_and_fails_only_its_job(running_stack, s3_client, tenant, tmp_path):
    # A corrupt warehouse breaks analyze on every attempt (an internal error, so it is retried).
    s3_client.put_object(Bucket=stack.BUCKET, Key=f"tenants/{tenant}/warehouse.duckdb", Body=b"not a database" * 100)
    poison_job = new_job_id()
    started = time.monotonic()
    post(events.make_event(events.ANALYZE_REQUESTED, {}, tenant=tenant, job_id=poison_job, function="test"))

    # Meanwhile another tenant's whole job goes through.
    other = "o" + tenant[1:]
    path = write_sales(tmp_path / "ok" / "sales.csv", 800)
    try:
        s3_client.create_bucket(Bucket="udb-e2e-sources")
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3_client.upload_file(str(path), "udb-e2e-sources", f"{other}/sales.csv")
    ok_job = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": f"s3://udb-e2e-sources/{other}/sales.csv"},
                           tenant=other, job_id=ok_job, function="test"))
    ok = wait_for_job(stack.function_url("artifacts"), other, ok_job, timeout=120)
    assert ok["state"] == "completed" and list(ok["tables"].values()) == [{"rows": 800}]

    failed = wait_for_job(stack.function_url("artifacts"), tenant, poison_job, timeout=120)
    elapsed = time.monotonic() - started
    assert failed["state"] == "failed"
    assert failed["error"]["stage"] == "analyze" and failed["error"]["function"] == "analyze"
    assert failed["error"]["reason"].startswith(
        "delivery of dev.udb.analyze.requested to http://127.0.0.1:18084/ failed after all retries (HTTP 500)")
    # analyze-on-analyze-requested's own delivery (it replaces the Broker's): 1 + 3 retries with
    # exponential backoff from 1 s, 2 + 4 + 8 = 14 s of waiting.
    assert elapsed >= 14
    # The analyze process did not crash-loop: it is still the same healthy process.
    assert httpx.get(stack.function_url("analyze") + "/healthz", timeout=5).status_code == 200

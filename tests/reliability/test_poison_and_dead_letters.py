"""A valid event that breaks a handler every time: deterministic, so answered 422 once (never
retried), its job failed at once with the full cause, dead-lettered — and other tenants' jobs
are not held up (issue 23, point 6)."""
from __future__ import annotations

import base64
import json
import re
import time

import httpx
import pytest
from cloudevents.http import to_binary

from devstack import stack
from shared.core import events
from shared.core.tenancy import new_job_id
from tests.conftest import write_sales
from tests.stack_fixtures import broker_auth, topic_records, wait_for_job

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]


def post(event) -> None:
    headers, body = to_binary(event)
    assert httpx.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body, timeout=10).status_code == 202


def event_answers(function: str) -> dict[str, float]:
    """udb_http_requests_total of `function`'s event route, by status."""
    answer = httpx.get(stack.function_url(function) + "/metrics", headers=broker_auth(), timeout=5)
    answer.raise_for_status()  # /metrics needs the metrics or broker token
    text = answer.text
    return {status: float(value) for status, value in re.findall(
        rf'udb_http_requests_total{{function="{function}",route="event",status="([0-9]+)"}} ([0-9.e+]+)', text)}


def test_poison_event_is_dead_lettered_and_fails_only_its_job(running_stack, s3_client, tenant, tmp_path):
    # A corrupt warehouse (its lake catalog) breaks analyze on every attempt: an internal error, deterministic.
    s3_client.put_object(Bucket=stack.BUCKET, Key=f"tenants/{tenant}/catalog.ducklake", Body=b"not a database" * 100)
    poison_job = new_job_id()
    before = event_answers("analyze")
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

    failed = wait_for_job(stack.function_url("artifacts"), tenant, poison_job, timeout=120)
    elapsed = time.monotonic() - started
    assert failed["state"] == "failed"
    error = failed["error"]
    # The full cause is in the job document, not only in the function's log.
    assert error["stage"] == "analyze" and error["function"] == "analyze"
    assert error["error_type"] == "IOException"
    assert error["reason"].startswith("internal error in analyze: IOException: ")
    assert "not a valid DuckDB database file" in error["reason"]
    assert error["step"] == "open warehouse" and error["raised_at"].startswith("lake.py:")  # attaching the catalog
    # Failed at once: no 1 + 5 retries with backoff (31 s of waiting before issue 23).
    assert elapsed < 20, elapsed

    ok = wait_for_job(stack.function_url("artifacts"), other, ok_job, timeout=120)
    assert ok["state"] == "completed" and list(ok["tables"].values()) == [{"rows": 800}]

    # Exactly one delivery attempt, answered 422 (which Knative's broker does not retry).
    after = event_answers("analyze")
    assert after.get("422", 0) - before.get("422", 0) == 1
    assert after.get("500", 0) - before.get("500", 0) == 0
    # Dead-lettered at once with that answer; the dead-letter consumer keeps the cause.
    dead = [r for r in topic_records("udb.dead-letters", lambda r: r.key == tenant.encode())
            if dict(r.headers).get("ce_jobid") == poison_job.encode()]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["ce_knativeerrorcode"] == b"422"
    answer = json.loads(base64.b64decode(headers["ce_knativeerrordata"]))
    assert answer["error"] == error["reason"][:len(answer["error"])] and answer["state"] == "failed"
    assert answer["error_type"] == "IOException" and answer["job"] == poison_job
    again = wait_for_job(stack.function_url("artifacts"), tenant, poison_job, timeout=10)
    assert again["error"] == error
    # The analyze process did not crash-loop: it is still the same healthy process.
    assert httpx.get(stack.function_url("analyze") + "/healthz", timeout=5).status_code == 200

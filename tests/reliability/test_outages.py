"""Kafka restarts and MinIO outages in the middle of jobs: nothing lost, jobs complete when the
service returns; past the retry budget a job fails with the reason."""
from __future__ import annotations

import re
import time

import httpx
import pytest
from cloudevents.http import to_binary

from devstack import services, stack
from shared import events
from shared.tenancy import new_job_id
from tests.stack_fixtures import broker_auth, sales_in_minio, wait_for_job

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]


def post(event) -> None:
    headers, body = to_binary(event)
    assert httpx.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body, timeout=10).status_code == 202


def count_503(function: str) -> float:
    text = httpx.get(stack.function_url(function) + "/metrics", timeout=5, headers=broker_auth()).text
    return sum(float(v) for v in re.findall(
        rf'udb_http_requests_total{{function="{function}",route="event",status="503"}} ([0-9.e+]+)', text))


def test_kafka_restart_mid_pipeline_loses_nothing(running_stack, s3_client, tenant, tmp_path):
    hint = sales_in_minio(s3_client, tenant, tmp_path, 2_500)
    job = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job, function="test"))
    services.stop_kafka()   # while the job is on its way
    time.sleep(3)
    services.start_kafka()
    done = wait_for_job(stack.function_url("artifacts"), tenant, job, timeout=240)
    assert done["state"] == "completed", done.get("error")
    assert list(done["tables"].values()) == [{"rows": 2_500}]
    assert [h["state"] for h in done["history"]][-1] == "completed"


def test_minio_outage_is_retried_and_the_job_completes(running_stack, s3_client, tenant, tmp_path):
    hint = sales_in_minio(s3_client, tenant, tmp_path, 1_200)
    before = count_503("discover")
    services.stop_minio()
    job = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job, function="test"))
    time.sleep(6)  # inside the retry budget (1 + 2 + 4 + 8 + 16 s)
    assert count_503("discover") > before  # the function answered 5xx, the broker kept retrying
    services.start_minio()
    done = wait_for_job(stack.function_url("artifacts"), tenant, job, timeout=180)
    assert done["state"] == "completed", done.get("error")
    assert list(done["tables"].values()) == [{"rows": 1_200}]


def test_minio_outage_past_the_retry_budget_fails_the_job_with_the_reason(running_stack, s3_client, tenant,
                                                                           tmp_path):
    hint = sales_in_minio(s3_client, tenant, tmp_path, 300)
    services.stop_minio()
    job = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job, function="test"))
    time.sleep(40)  # past discover's budget: the event is dead-lettered
    services.start_minio()
    done = wait_for_job(stack.function_url("artifacts"), tenant, job, timeout=180)
    assert done["state"] == "failed"
    assert done["error"]["stage"] == "discover" and done["error"]["function"] == "discover"
    assert done["error"]["reason"].startswith(
        "delivery of dev.udb.discover.requested to http://127.0.0.1:18081/ failed after all retries (HTTP 503)")

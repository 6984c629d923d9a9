"""Kafka restarts and MinIO outages in the middle of jobs: nothing lost, jobs complete when the
service returns; past the retry budget a job fails with the reason."""
from __future__ import annotations

import re
import time

import httpx
import pytest
from cloudevents.http import to_binary

from devstack import services, stack
from shared.core import events
from shared.core.tenancy import new_job_id
from tests.reliability.test_broker_restart import jobs_started
from tests.stack_fixtures import auth_headers, broker_auth, sales_in_minio, wait_for_job

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


@pytest.mark.parametrize("outage_s", [6, 22])
def test_minio_outage_is_retried_and_the_job_completes(running_stack, s3_client, tenant, tmp_path, outage_s):
    hint = sales_in_minio(s3_client, tenant, tmp_path, 1_200)
    before = count_503("discover")
    services.stop_minio()
    job = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job, function="test"))
    time.sleep(outage_s)  # 6 s: inside the retry budget (1 + 2 + 4 + 8 + 16 s); 22 s: near its end
    assert count_503("discover") > before  # the function answered 5xx, the broker kept retrying
    services.start_minio()
    done = wait_for_job(stack.function_url("artifacts"), tenant, job, timeout=180)
    assert done["state"] == "completed", done.get("error")
    assert list(done["tables"].values()) == [{"rows": 1_200}]


def test_minio_outage_past_the_retry_budget_parks_the_job_and_resumes_it(running_stack, s3_client, tenant,
                                                                          tmp_path):
    """Past discover's budget the event is dead-lettered; the job waits (not failed) and the
    udb-redrive sweep resumes it once discover is ready again (issue 23, point 5)."""
    hint = sales_in_minio(s3_client, tenant, tmp_path, 300)
    services.stop_minio()
    job = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job, function="test"))
    time.sleep(40)  # past discover's budget: the event is dead-lettered
    services.start_minio()
    back = time.monotonic()
    done = wait_for_job(stack.function_url("artifacts"), tenant, job, timeout=240)
    print(f"\n40 s MinIO outage -> job completed {time.monotonic() - back:.1f} s after MinIO was back")
    assert done["state"] == "completed", done.get("error")
    assert list(done["tables"].values()) == [{"rows": 300}]
    assert done["redrive"]["state"] == "redriven" and done["redrive"]["function"] == "discover"
    assert done["redrive"]["reason"].startswith(
        "delivery of dev.udb.discover.requested to http://127.0.0.1:18081/ failed after all retries (HTTP 503)")
    assert "failed" not in [h["state"] for h in done["history"]]


def test_analyze_down_40s_the_job_completes_without_a_manual_step(running_stack, s3_client, tenant, tmp_path):
    """Analyze stopped for 40 s while a job reaches it: its delivery runs out of retries (31 s)
    and is dead-lettered, the job waits at `loaded`, and once analyze is back the sweep resumes
    it: completed, exact rows, every stage run once."""
    hint = sales_in_minio(s3_client, tenant, tmp_path, 900)
    stack.stop("analyze")
    stopped = time.monotonic()
    try:
        job = new_job_id()
        post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job,
                               function="test"))
        deadline = time.monotonic() + 90
        while True:  # parked: the dead letter reached artifacts, the job waits for analyze
            doc = httpx.get(f"{stack.function_url('artifacts')}/status/{job}", headers=auth_headers(tenant),
                            timeout=10).json()
            if (doc.get("redrive") or {}).get("state") == "waiting":
                break
            assert doc["state"] not in ("failed", "completed"), doc
            assert time.monotonic() < deadline, f"the job never started waiting: {doc}"
            time.sleep(0.5)
        assert doc["state"] == "loaded" and doc["redrive"]["function"] == "analyze"
        assert doc["redrive"]["reason"].startswith(
            "delivery of dev.udb.warehouse.loaded to http://127.0.0.1:18084/ failed after all retries (no answer)")
        time.sleep(max(0.0, 40 - (time.monotonic() - stopped)))
    finally:
        stack.start_function("analyze")
    back = time.monotonic()
    done = wait_for_job(stack.function_url("artifacts"), tenant, job, timeout=180)
    print(f"\n40 s analyze outage -> job completed {time.monotonic() - back:.1f} s after analyze was back "
          f"({time.monotonic() - stopped:.1f} s after it stopped)")
    assert done["state"] == "completed", done.get("error")
    assert list(done["tables"].values()) == [{"rows": 900}]
    assert done["redrive"]["state"] == "redriven" and done["redrive"]["redrives"] == 1
    assert "failed" not in [h["state"] for h in done["history"]]
    assert done["artifacts_index"]
    assert [jobs_started(f, tenant) for f in ("discover", "sync", "writer", "analyze")] == [1, 1, 1, 1]

"""Rate limits per tenant (429 with Retry-After) and the cap on a tenant's concurrent jobs."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from shared.core import events
from shared.security import ratelimit
from shared.serving.embedded import Dispatcher
from tests.security.conftest import bearer, new_key

pytestmark = pytest.mark.security
JOB = "job-00000000000000c1"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_token_bucket_admits_the_burst_then_the_rate():
    clock = Clock()
    limiter = ratelimit.Limiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("acme")
    with pytest.raises(ratelimit.RateLimited) as info:
        limiter.take("acme")
    assert info.value.retry_after == 1
    assert str(info.value) == ("too many requests for acme: the limit is 60 a minute with bursts of 3 "
                               "(UDB_RATE_LIMIT, UDB_RATE_BURST); retry in 1 s")
    limiter.take("other")  # another tenant has its own bucket
    clock.now += 1.0
    limiter.take("acme")  # one token back after a second
    with pytest.raises(ratelimit.RateLimited):
        limiter.take("acme")
    clock.now += 60
    for _ in range(3):  # refilled to the burst, never beyond
        limiter.take("acme")
    with pytest.raises(ratelimit.RateLimited):
        limiter.take("acme")
    ratelimit.Limiter(per_minute=0, burst=1).take("acme")  # 0 turns it off


def _seed(ctx, tenant: str, job: str = JOB):
    ctx.jobs(tenant).create(job, hint="x")


def test_http_requests_past_the_tenants_burst_get_429_with_retry_after(app_for):
    client, ctx = app_for("artifacts", UDB_RATE_LIMIT=6, UDB_RATE_BURST=3)
    _seed(ctx, "acme")
    _seed(ctx, "other")
    acme, other = new_key(ctx, "acme", "viewer"), new_key(ctx, "other", "viewer")
    assert [client.get(f"/status/{JOB}", headers=bearer(acme)).status_code for _ in range(3)] == [200] * 3
    limited = client.get(f"/status/{JOB}", headers=bearer(acme))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "10"
    assert "too many requests for acme" in limited.get_json()["error"]
    assert client.get(f"/status/{JOB}", headers=bearer(other)).status_code == 200  # not acme's bucket
    assert client.get("/healthz").status_code == 200  # probes are never limited


def test_failed_authentications_from_one_address_are_limited(app_for):
    client, ctx = app_for("artifacts", UDB_RATE_LIMIT=6, UDB_RATE_BURST=3)
    bad = bearer("udb_000000000000_" + "A" * 43)
    assert [client.get(f"/status/{JOB}", headers=bad).status_code for _ in range(4)] == [401, 401, 401, 429]


def _live_job(ctx, tenant: str, job: str, state: str, age_seconds: float = 0):
    jobs = ctx.jobs(tenant)
    jobs.create(job, hint="x")
    if state != "requested":
        jobs.move(job, state)
    if age_seconds:
        store = ctx.tenant_store(tenant)
        doc = json.loads(store.get(f"jobs/{job}.json").data)
        doc["updated_at"] = (datetime.now(timezone.utc) - timedelta(seconds=age_seconds)).isoformat()
        store.put(f"jobs/{job}.json", json.dumps(doc).encode())


def test_the_concurrent_job_cap_counts_only_live_recent_jobs(ctx_for):
    ctx = ctx_for("discover")
    _live_job(ctx, "acme", "job-000000000000000a", "syncing")
    _live_job(ctx, "acme", "job-000000000000000b", "completed")
    _live_job(ctx, "acme", "job-000000000000000c", "failed")
    _live_job(ctx, "acme", "job-000000000000000d", "loading", age_seconds=7200)  # orphaned by a crash
    _live_job(ctx, "other", "job-000000000000000e", "syncing")
    store = ctx.tenant_store("acme")
    assert ratelimit.live_jobs(store, stale_after=3600) == ["job-000000000000000a"]
    assert sorted(ratelimit.live_jobs(store, stale_after=0)) == ["job-000000000000000a", "job-000000000000000d"]
    assert ratelimit.live_jobs(store, stale_after=3600, exclude="job-000000000000000a") == []


def test_discover_connect_refuses_a_job_past_the_cap_with_429(app_for, sales_csv):
    client, ctx = app_for("discover", UDB_MAX_CONCURRENT_JOBS=2)
    key = new_key(ctx, "acme", "analyst")
    _live_job(ctx, "acme", "job-000000000000000a", "syncing")
    first = client.post("/sources/discover_connect", json={"hint": str(sales_csv)}, headers=bearer(key))
    assert first.status_code == 200  # the first job stays "discovered": live, nothing consumes it here
    refused = client.post("/sources/discover_connect", json={"hint": str(sales_csv)}, headers=bearer(key))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    assert refused.get_json() == {"error": "tenant acme already has 2 live jobs; the limit is 2 "
                                           "(UDB_MAX_CONCURRENT_JOBS): retry when one has finished"}
    assert len(list(ctx.tenant_store("acme").list("jobs/"))) == 2  # the refused request left no job
    other = client.post("/sources/discover_connect", json={"hint": str(sales_csv)},
                        headers=bearer(new_key(ctx, "other", "analyst")))
    assert other.status_code == 200  # the cap is per tenant


def test_an_event_past_the_cap_fails_its_job_with_the_reason(settings, sales_csv):
    dispatcher = Dispatcher(replace(settings, max_concurrent_jobs=1))
    ctx = dispatcher.context("cli")
    _live_job(ctx, "acme", "job-000000000000000a", "syncing")
    job = "job-00000000000000f1"
    ctx.jobs("acme").create(job, hint=str(sales_csv))
    dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, {"hint": str(sales_csv)}, tenant="acme",
                                         job_id=job, function="test"))
    doc = ctx.jobs("acme").get(job)
    assert doc["state"] == "failed" and doc["error"]["stage"] == "discover"
    assert doc["error"]["reason"].startswith("tenant acme already has 1 live jobs; the limit is 1")

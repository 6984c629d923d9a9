"""At-least-once delivery: every event type delivered twice, mid-job and after the job ended,
never duplicates rows or artifacts."""
from __future__ import annotations

import json

import httpx
import pytest
from cloudevents.http import to_binary

from devstack import stack
from functions.analyze.handler import handle as analyze
from functions.discover.handler import handle as discover
from functions.sync.handler import handle as sync
from functions.writer.handler import handle as writer
from shared.core import events
from shared.serving.runtime import invoke
from shared.core.tenancy import new_job_id
from tests.conftest import write_sales
from tests.stack_fixtures import broker_auth, broker_events, wait_for_job, wait_for_reports
from shared.storage import lake

pytestmark = pytest.mark.reliability


def test_each_handler_twice_mid_job_loads_once_and_writes_each_artifact_once(ctx_for, tmp_path):
    path = write_sales(tmp_path / "dup" / "sales.csv", 3_000)
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": str(path)}, tenant="dup", job_id=job,
                                function="test")
    steps = [("discover", discover), ("sync", sync), ("writer", writer), ("analyze", analyze)]
    event = request
    for name, handle in steps:
        first = invoke(handle, event, ctx_for(name))
        if name != "analyze":
            second = invoke(handle, event, ctx_for(name))  # the broker delivered it twice
            assert second["type"] == first["type"]
        event = first
    assert event["type"] == events.ANALYSIS_COMPLETED
    store = ctx_for("analyze").tenant_store("dup")
    with lake.reader(store) as con:
        assert con.execute("SELECT count(*) FROM dup__sales").fetchone()[0] == 3_000
        assert con.execute("SELECT count(*) FROM udb_meta.batches").fetchone()[0] == 1
    index = json.loads(store.get(f"artifacts/{job}/index.json").data)
    names = [a["name"] for a in index["artifacts"]]
    assert len(names) == len(set(names))
    before = {i.key: i.etag for i in store.list(f"artifacts/{job}/")}
    # After the end: every event again changes nothing at all (the job is finished).
    for name, handle in steps:
        assert invoke(handle, request if name == "discover" else event, ctx_for(name)) is None
    assert {i.key: i.etag for i in store.list(f"artifacts/{job}/")} == before
    assert ctx_for("analyze").jobs("dup").get(job)["state"] == "completed"


@pytest.mark.e2e
def test_redelivering_every_event_of_a_stack_job_changes_nothing(running_stack, s3_client, tenant, tmp_path):
    try:
        s3_client.create_bucket(Bucket="udb-e2e-sources")
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    path = write_sales(tmp_path / "d" / "sales.csv", 1_000)
    s3_client.upload_file(str(path), "udb-e2e-sources", f"{tenant}/sales.csv")
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": f"s3://udb-e2e-sources/{tenant}/sales.csv"},
                                tenant=tenant, job_id=job, function="test")
    headers, body = to_binary(request)
    assert httpx.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body, timeout=10).status_code == 202
    done = wait_for_job(stack.function_url("artifacts"), tenant, job)
    assert done["state"] == "completed"
    # The reports function adds to the job's artifacts after it completed: wait until it is done.
    assert wait_for_reports(stack.function_url("artifacts"), tenant, job)["reports"]["state"] == "ready"
    listing = s3_client.list_objects_v2(Bucket=stack.BUCKET, Prefix=f"tenants/{tenant}/artifacts/{job}/")
    before = {o["Key"]: o["ETag"] for o in listing["Contents"]}
    warehouse_etag = s3_client.head_object(Bucket=stack.BUCKET, Key=f"tenants/{tenant}/catalog.ducklake")["ETag"]

    seen = [event for _, event in broker_events(tenant, job)]
    assert [e["type"] for e in seen] == [events.DISCOVER_REQUESTED, events.SOURCE_DISCOVERED, events.SYNC_STAGED,
                                        events.WAREHOUSE_LOADED, events.ANALYSIS_COMPLETED, events.REPORTS_RENDERED]
    for e in seen:  # the broker delivers each one again
        headers, body = to_binary(e)
        assert httpx.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body, timeout=10).status_code == 202
    import time
    time.sleep(5)
    listing = s3_client.list_objects_v2(Bucket=stack.BUCKET, Prefix=f"tenants/{tenant}/artifacts/{job}/")
    assert {o["Key"]: o["ETag"] for o in listing["Contents"]} == before
    assert s3_client.head_object(Bucket=stack.BUCKET, Key=f"tenants/{tenant}/catalog.ducklake")["ETag"] == warehouse_etag
    assert wait_for_job(stack.function_url("artifacts"), tenant, job)["state"] == "completed"

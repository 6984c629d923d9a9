"""Each handler called directly with a CloudEvent, as the HTTP target and the dispatcher do."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from functions.discover.handler import handle as discover
from functions.sync.handler import handle as sync
from functions.writer.handler import handle as writer
from shared.core import events
from shared.storage import lake
from shared.core.errors import ValidationError
from shared.serving.runtime import invoke
from tests.conftest import write_sales

pytestmark = pytest.mark.unit
TENANT = "acme"


def request(hint: str, job_id: str = "job-00000000000000a1", **data):
    return events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, **data}, tenant=TENANT, job_id=job_id,
                             function="test")


def warehouse_rows(ctx, table: str, tmp_path: Path) -> int:
    with lake.reader(ctx.tenant_store(TENANT)) as con:
        return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_discover_replies_with_the_catalogue(ctx_for, sales_csv):
    reply = invoke(discover, request(str(sales_csv)), ctx_for("discover"))
    assert reply["type"] == events.SOURCE_DISCOVERED
    assert reply["tenant"] == TENANT and reply["jobid"] == "job-00000000000000a1"
    assert reply["autosync"] == "true" and reply["partitionkey"] == TENANT
    data = events.event_data(reply)
    source = data["source"]
    assert source["provider"] == "file" and source["short"] == "data"
    assert [s["name"] for s in source["streams"]] == ["sales"]
    columns = {c["name"]: c["type"] for c in source["streams"][0]["columns"]}
    assert columns == {"order_id": "BIGINT", "region": "VARCHAR", "ordered_at": "TIMESTAMP",
                       "amount": "DOUBLE", "discount": "DOUBLE"}
    assert source["streams"][0]["cursor_candidates"] == ["ordered_at"]
    assert data["candidates"][0] == {"provider": "file", "confidence": 0.99,
                                     "reasons": ["local path", "is a file", "extension .csv is a known format"]}
    stored = json.loads(ctx_for("discover").tenant_store(TENANT).get(f"sources/{source['id']}.json").data)
    assert stored == source
    job = ctx_for("discover").jobs(TENANT).get("job-00000000000000a1")
    assert job["state"] == "discovered" and job["source_id"] == source["id"]


def test_sync_then_writer_load_exact_rows_and_are_idempotent(ctx_for, sales_csv, tmp_path):
    discovered = invoke(discover, request(str(sales_csv)), ctx_for("discover"))
    staged = invoke(sync, discovered, ctx_for("sync"))
    assert staged["type"] == events.SYNC_STAGED
    batch = events.event_data(staged)["tables"][0]
    assert batch["table"] == "data__sales" and batch["rows"] == 10_000
    assert batch["parts"] == ["staging/job-00000000000000a1/data__sales/part-0.parquet"]

    loaded = invoke(writer, staged, ctx_for("writer"))
    assert events.event_data(loaded)["tables"] == [
        {"table": "data__sales", "rows": 10_000, "applied": True, "previous_rows": None}]
    # At-least-once delivery: the same staged batch again is recognised and not loaded twice.
    again = invoke(writer, staged, ctx_for("writer"))
    assert events.event_data(again)["tables"] == [
        {"table": "data__sales", "rows": 10_000, "applied": False, "previous_rows": None}]
    assert warehouse_rows(ctx_for("writer"), "data__sales", tmp_path) == 10_000
    with lake.reader(ctx_for("writer").tenant_store(TENANT)) as con:
        assert con.execute("SELECT batch_id, rows FROM udb_meta.batches").fetchall() == [
            ("job-00000000000000a1/data__sales", 10_000)]
    assert ctx_for("writer").store.head("locks/acme/warehouse.lease") is None  # lease released


def test_second_load_keeps_the_previous_snapshot(ctx_for, tmp_path):
    path = write_sales(tmp_path / "src" / "sales.csv", 1_000)
    for job in ("job-00000000000000b1", "job-00000000000000b2"):
        staged = invoke(sync, invoke(discover, request(str(path), job), ctx_for("discover")), ctx_for("sync"))
        loaded = invoke(writer, staged, ctx_for("writer"))
        write_sales(path, 1_500)  # the source grows between the two jobs
    assert events.event_data(loaded)["tables"][0] == {"table": "src__sales", "rows": 1_500, "applied": True,
                                                      "previous_rows": 1_000}
    with lake.reader(ctx_for("writer").tenant_store(TENANT)) as con:
        assert con.execute("SELECT count(*) FROM udb_snapshots.src__sales").fetchone()[0] == 1_000
        assert con.execute("SELECT count(*) FROM main.src__sales").fetchone()[0] == 1_500


def test_bad_source_fails_the_job_with_a_job_failed_reply(ctx_for, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    reply = invoke(discover, request(str(empty)), ctx_for("discover"))
    assert reply["type"] == events.JOB_FAILED
    assert events.event_data(reply) == {"stage": "discover", "function": "discover",
                                        "reason": "empty.csv: file is empty"}
    job = ctx_for("discover").jobs(TENANT).get("job-00000000000000a1")
    assert job["state"] == "failed" and job["error"]["reason"] == "empty.csv: file is empty"


def test_invalid_event_is_refused_with_every_problem(ctx_for):
    event = request("/x")
    event["tenant"] = "Bad Tenant"
    event["jobid"] = "nope"
    with pytest.raises(ValidationError) as err:
        invoke(discover, event, ctx_for("discover"))
    assert set(err.value.problems) >= {"tenant", "jobid"}


def test_incremental_batches_append_and_keep_the_previous_snapshot(ctx_for, tmp_path):
    path = write_sales(tmp_path / "inc" / "sales.csv", 300)
    discovered = invoke(discover, request(str(path), "job-00000000000000d1"), ctx_for("discover"))
    staged = invoke(sync, discovered, ctx_for("sync"))
    invoke(writer, staged, ctx_for("writer"))
    # A later incremental batch of 120 new records for the same table.
    write_sales(path, 120)
    second = invoke(sync, invoke(discover, request(str(path), "job-00000000000000d2"), ctx_for("discover")),
                    ctx_for("sync"))
    data = events.event_data(second)
    data["tables"][0]["mode"] = "append"
    appended = events.make_event(events.SYNC_STAGED, data, tenant=TENANT, job_id="job-00000000000000d2",
                                 function="sync")
    loaded = invoke(writer, appended, ctx_for("writer"))
    assert events.event_data(loaded)["tables"] == [
        {"table": "inc__sales", "rows": 420, "applied": True, "previous_rows": 300}]
    assert warehouse_rows(ctx_for("writer"), "inc__sales", tmp_path) == 420

"""The pipeline through the real stack: broker ingress -> Kafka -> function processes -> MinIO.

The same data also runs embedded; row counts and statistics must be equal.
"""
from __future__ import annotations

import asyncio
import json

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.http import to_binary, to_structured

from devstack import services, stack
from shared.core import bindings, events
from frontends import cli
from shared.core.tenancy import new_job_id
from tests.conftest import create_pg_orders, write_sales
from tests.stack_fixtures import auth_headers, wait_for_job, wait_for_reports

pytestmark = pytest.mark.e2e
SOURCE_BUCKET = "udb-e2e-sources"
VOLATILE = ("elapsed_ms", "size_bytes", "size_note")


def post_to_broker(event, structured: bool = False) -> None:
    headers, body = (to_structured if structured else to_binary)(event)
    headers.update(auth_headers(event["tenant"]))  # the ingress takes a tenant's own events
    response = httpx.post(stack.broker_url(), headers=headers, content=body, timeout=10)
    assert response.status_code == 202, response.text


def fetch(tenant: str, job_id: str, name: str = "") -> httpx.Response:
    response = httpx.get(f"{stack.function_url('artifacts')}/artifact/{job_id}/{name}",
                         headers=auth_headers(tenant), timeout=30)
    assert response.status_code == 200, response.text
    return response


def comparable(profile: dict) -> dict:
    """A profile without its timings and table names, for stack-vs-embedded comparison."""
    columns = [{k: v for k, v in c.items() if k not in VOLATILE} for c in profile["column_profiles"]]
    return {"rows": profile["rows"], "duplicate_rows": profile["duplicate_rows"], "columns": columns}


def embedded_profile(tmp_path, monkeypatch, capsys, hint: str) -> dict:
    monkeypatch.setenv("UDB_HOME", str(tmp_path / "embedded"))
    assert cli.main(["run", hint, "--tenant", "embedded", "--no-reports"]) == 0
    job_id = capsys.readouterr().out.splitlines()[0].split()[1]
    assert cli.main(["artifacts", job_id, "--tenant", "embedded"]) == 0
    out = capsys.readouterr().out
    profile = next(line.split()[-1] for line in out.splitlines() if line.endswith(".json") and "profile-" in line)
    return json.loads(open(profile).read())


def run_through_stack(tenant: str, hint: str, structured: bool = False) -> tuple[str, dict]:
    job_id = new_job_id()
    post_to_broker(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job_id,
                                     function="test"), structured)
    doc = wait_for_job(stack.function_url("artifacts"), tenant, job_id)
    assert doc["state"] == "completed", doc.get("error")
    # The reports function renders beside the completed job; wait so the index no longer changes.
    doc = wait_for_reports(stack.function_url("artifacts"), tenant, job_id)
    assert doc["state"] == "completed" and doc["reports"]["state"] in ("ready", "failed"), doc["reports"]
    return job_id, doc


def test_csv_in_minio_matches_the_embedded_run(running_stack, s3_client, tenant, tmp_path, monkeypatch, capsys):
    path = write_sales(tmp_path / "csv" / "sales.csv", 20_000)
    try:
        s3_client.create_bucket(Bucket=SOURCE_BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    key = f"{tenant}/sales.csv"
    s3_client.upload_file(str(path), SOURCE_BUCKET, key)

    job_id, doc = run_through_stack(tenant, f"s3://{SOURCE_BUCKET}/{key}", structured=True)
    assert list(doc["tables"].values()) == [{"rows": 20_000}]
    assert set(doc["stage_seconds"]) == {"discover", "sync", "load", "analyze"}
    index = fetch(tenant, job_id).json()
    table = index["tables"][0]
    profile = fetch(tenant, job_id, f"profile-{table}.json").json()
    assert fetch(tenant, job_id, f"profile-{table}.html").headers["content-type"] == "text/html; charset=utf-8"
    for entry in index["artifacts"]:
        assert len(fetch(tenant, job_id, entry["name"]).content) == entry["bytes"]
    # The status document's signed link opens the report page with no header (a browser's request).
    page = httpx.get(doc["report_link"]["url"], timeout=30)
    assert page.status_code == 200 and f"UDB analysis {job_id}" in page.text

    assert comparable(profile) == comparable(embedded_profile(tmp_path, monkeypatch, capsys, str(path)))
    # The warehouse is in MinIO, where the writer put it: the lake's catalog and its Parquet data files.
    head = s3_client.head_object(Bucket=stack.BUCKET, Key=f"tenants/{tenant}/catalog.ducklake")
    assert head["ContentLength"] > 0
    data = s3_client.list_objects_v2(Bucket=stack.BUCKET, Prefix=f"tenants/{tenant}/lake/main/")
    assert data["KeyCount"] >= 1 and all(o["Key"].endswith(".parquet") for o in data["Contents"])
    assert "Contents" not in s3_client.list_objects_v2(Bucket=stack.BUCKET, Prefix=f"tenants/{tenant}/warehouse.duckdb")


def test_postgres_table_matches_the_embedded_run(running_stack, tenant, tmp_path, monkeypatch, capsys):
    dsn = services.endpoints()["postgres"]
    table = f"orders_{tenant}"
    with psycopg.connect(dsn, autocommit=True) as pg:
        create_pg_orders(pg, table, 15_000)
    hint = f"{dsn}?table=public.{table}"
    job_id, doc = run_through_stack(tenant, hint)
    assert list(doc["tables"].values()) == [{"rows": 15_000}]
    assert "udb:udb@" not in json.dumps(doc)  # the password never lands in the job document
    index = fetch(tenant, job_id).json()
    profile = fetch(tenant, job_id, f"profile-{index['tables'][0]}.json").json()
    cols = {c["name"]: c for c in profile["column_profiles"]}
    assert cols["amount"]["mean"] == 49.5 and cols["discount"]["nulls"] == 1_500
    assert comparable(profile) == comparable(embedded_profile(tmp_path, monkeypatch, capsys, hint))


def test_job_events_on_kafka_follow_the_job_and_match_the_schema(running_stack, s3_client, tenant, tmp_path):
    path = write_sales(tmp_path / "ev" / "sales.csv", 500)
    try:
        s3_client.create_bucket(Bucket=SOURCE_BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3_client.upload_file(str(path), SOURCE_BUCKET, f"{tenant}/ev.csv")
    job_id, doc = run_through_stack(tenant, f"s3://{SOURCE_BUCKET}/{tenant}/ev.csv")

    import jsonschema
    schema = json.loads((events.SCHEMA_DIR / "job.json").read_text())

    async def consume() -> list:
        consumer = AIOKafkaConsumer("udb.job-events", bootstrap_servers=services.endpoints()["kafka"],
                                    auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
        await consumer.start()
        seen = []
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=2000)
                if not batch:
                    return seen
                for records in batch.values():
                    for r in records:
                        if r.key == tenant.encode():
                            seen.append((dict(r.headers), bindings.from_kafka(r.key, r.value, r.headers)))
        finally:
            await consumer.stop()

    seen = asyncio.run(consume())
    states = [event.get_data()["state"] for _, event in seen]
    assert states == [h["state"] for h in doc["history"]]
    for headers, event in seen:
        assert headers["ce_type"] == b"dev.udb.job.changed" and headers["ce_jobid"] == job_id.encode()
        jsonschema.validate(event.get_data(), schema)


@pytest.fixture
def reports_restored(running_stack):
    yield
    stack.stop("reports")
    stack.start_function("reports")


def test_reports_land_beside_the_completed_job_and_a_failed_delivery_only_fails_them(
        reports_restored, s3_client, tenant, tmp_path):
    """The reports function in its own process: the job is `completed` by analyze, then its
    reports land in the index and in GET /status. Then a reports function that crashes on
    every delivery: retried by its Trigger, dead-lettered, and the dead letter marks the reports
    failed with the reason; the job stays `completed` and keeps every artifact analyze wrote."""
    try:
        s3_client.create_bucket(Bucket=SOURCE_BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    path = write_sales(tmp_path / "rp" / "sales.csv", 800)
    s3_client.upload_file(str(path), SOURCE_BUCKET, f"{tenant}/rp.csv")
    hint = f"s3://{SOURCE_BUCKET}/{tenant}/rp.csv"

    job_id, doc = run_through_stack(tenant, hint)
    table = next(iter(doc["tables"]))
    assert doc["reports"]["state"] == "ready", doc["reports"]
    assert {i["id"]: i["state"] for i in doc["reports"]["items"]} == {
        f"ydata:{table}": "ready", f"evidently-summary:{table}": "ready", "png-charts": "skipped"}  # UDB_CHART_PNG=0
    index = fetch(tenant, job_id).json()
    names = {a["name"] for a in index["artifacts"]}
    assert {f"ydata-{table}.html", f"quality-{table}.html", f"quality-{table}.json"} <= names
    assert "rendering" not in fetch(tenant, job_id, "index.html").text
    for entry in index["artifacts"]:
        assert len(fetch(tenant, job_id, entry["name"]).content) == entry["bytes"]

    stack.stop("reports")
    stack.start_function("reports", extra_env={"UDB_FAULTS": "reports.before_render:raise"})
    job_id = new_job_id()
    post_to_broker(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job_id,
                                     function="test"))
    doc = wait_for_reports(stack.function_url("artifacts"), tenant, job_id, timeout=240)
    assert doc["state"] == "completed" and doc["error"] is None
    assert doc["reports"]["state"] == "failed"
    reason = doc["reports"]["reason"]
    assert reason.startswith("delivery of dev.udb.analysis.completed to ") and "failed after all retries (HTTP 500)" in reason
    assert {i["state"] for i in doc["reports"]["items"]} == {"failed", "skipped"}
    index = fetch(tenant, job_id).json()
    failed = [r for r in index["reports"] if r["state"] == "failed"]
    # (the second load of the table has a snapshot to compare with: the drift page was planned too)
    assert {r["id"] for r in failed} == {f"ydata:{table}", f"evidently-summary:{table}", f"evidently-drift:{table}"}
    assert all(r["reason"] == reason for r in failed)
    names = {a["name"] for a in index["artifacts"]}
    assert f"profile-{table}.json" in names and f"ydata-{table}.html" not in names
    page = fetch(tenant, job_id, "index.html").text
    assert "failed after all retries" in page and "http-equiv" not in page

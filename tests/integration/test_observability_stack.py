"""Observability of the running stack: the metrics contract, log hygiene and lineage.

One job goes through the real stack (broker -> Kafka -> function processes -> MinIO): a
PostgreSQL table of people with e-mail addresses, reached with a DSN whose password is a fresh
secret. Then every function's /metrics is scraped and checked against docs/metrics.md, with
the values that are known exactly for a fresh tenant; every log line written meanwhile is
searched for the secret and the addresses; and the OpenLineage events are read back.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from devstack import services, stack
from shared.core import bindings, events
from shared.observability import lineage
from shared.core.tenancy import new_job_id
from tests.observability import (FUNCTIONS, LINEAGE, TRACES, contract, ensure_traced_functions, family_of,
                                 label_sets, log_offsets, logs_since, sample, scrape, wait_for_spans)
from tests.stack_fixtures import auth_headers, wait_for_job, wait_for_reports

pytestmark = pytest.mark.integration
ROWS = 200
STAGES = {"discover": ("handler", "probe"), "sync": ("handler", "extract", "stage"),
          "writer": ("handler", "lease", "load", "upload"),
          "analyze": ("handler", "profile", "kpi", "render"), "reports": ("handler", "report")}
REQUIRED = {"udb_jobs_started_total", "udb_jobs_total", "udb_stage_duration_seconds", "udb_rows_synced_total",
            "udb_bytes_staged_total", "udb_writer_queue_depth", "udb_writer_lease_wait_seconds",
            "udb_duckdb_write_duration_seconds", "udb_kpi_duration_seconds", "udb_artifact_bytes_total",
            "udb_artifacts_per_job", "udb_profile_coverage_ratio", "udb_dependency_up", "udb_http_requests_total"}


@dataclass
class Job:
    tenant: str
    job_id: str
    trace_id: str
    doc: dict
    table: str
    secret: str
    email_domain: str
    offsets: dict


@pytest.fixture(scope="module")
def pg_job(running_stack) -> Job:
    ensure_traced_functions()
    tenant = "t" + uuid.uuid4().hex[:10]
    secret = f"Sekr1t-{uuid.uuid4().hex}"
    domain = f"{tenant}.example.org"
    role, table = f"obs_{tenant}", f"people_{tenant}"
    admin = services.endpoints()["postgres"]
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
        pg.execute(f"""CREATE TABLE {table} AS
            SELECT i AS person_id, 'person' || i || '@{domain}' AS email,
                   (i % 50)::double precision AS score, DATE '2025-01-01' + i AS joined
            FROM generate_series(1, {ROWS}) AS s(i)""")
        pg.execute(f"GRANT SELECT ON {table} TO {role}")
    host = admin.rsplit("@", 1)[1]  # 127.0.0.1:15432/udb
    hint = f"postgresql://{role}:{secret}@{host}?table=public.{table}"
    offsets = log_offsets()
    job_id = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job_id,
                                function="test")
    headers, body = bindings.to_http(request)
    headers.update(auth_headers(tenant))
    response = httpx.post(stack.broker_url(), headers=headers, content=body, timeout=10)
    assert response.status_code == 202, response.text
    try:
        doc = wait_for_job(stack.function_url("artifacts"), tenant, job_id)
        # and its reports, rendered beside the completed job by the reports function
        wait_for_reports(stack.function_url("artifacts"), tenant, job_id)
        assert doc["state"] == "completed", doc.get("error")
        trace_id = events.trace_id_of(request["traceparent"])
        # The analyze handler span ends after the job document says completed: wait for it.
        wait_for_spans(trace_id, lambda spans: any(s["name"].startswith("analyze ") for s in spans["analyze"]))
        yield Job(tenant, job_id, trace_id, doc, next(iter(doc["tables"])), secret, domain, offsets)
    finally:
        with psycopg.connect(admin, autocommit=True) as pg:
            pg.execute(f"DROP TABLE IF EXISTS {table}")
            pg.execute(f"DROP ROLE IF EXISTS {role}")


def artifact(job: Job, name: str) -> bytes:
    response = httpx.get(f"{stack.function_url('artifacts')}/artifact/{job.job_id}/{name}",
                         headers=auth_headers(job.tenant), timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def test_the_contract_names_every_required_metric():
    rows = {r["name"]: r for r in contract()}
    assert REQUIRED <= set(rows), f"docs/metrics.md lacks {sorted(REQUIRED - set(rows))}"
    for row in rows.values():
        assert row["type"] in ("counter", "gauge", "histogram") and row["meaning"], row
        assert set(row["functions"]) <= set(FUNCTIONS), row


def test_every_function_serves_the_contract_with_its_labels(pg_job):
    for function in FUNCTIONS:  # readiness checks set udb_dependency_up
        assert httpx.get(stack.function_url(function) + "/readyz", timeout=30).status_code == 200
    scraped = {f: scrape(f) for f in FUNCTIONS}
    for row in contract():
        for function in FUNCTIONS:  # one registry: every family is declared everywhere
            family = family_of(scraped[function], row["name"])
            assert family is not None, f"{row['name']} missing on {function}"
            assert family.type == row["type"], f"{row['name']} on {function} is a {family.type}"
        for function in row["functions"]:
            assert label_sets(scraped[function], row["name"]) == {frozenset(row["labels"])}, \
                f"{row['name']} on {function}: labels {label_sets(scraped[function], row['name'])}"


def test_metric_values_of_the_job(pg_job, s3_client):
    s = {f: scrape(f) for f in FUNCTIONS}
    t = pg_job.tenant
    for function, stages in STAGES.items():
        labels = {"function": function, "tenant": t}
        assert sample(s[function], "udb_jobs_started_total", labels) == 1
        assert sample(s[function], "udb_jobs_total", {**labels, "outcome": "ok"}) == 1
        assert sample(s[function], "udb_jobs_total", {**labels, "outcome": "failed"}) is None
        assert sample(s[function], "udb_http_requests_total",
                      {"function": function, "route": "event", "status": "200"}) >= 1
        for stage in stages:
            assert sample(s[function], "udb_stage_duration_seconds_count", {"function": function, "stage": stage}) >= 1
    # sync: the exact rows, and the exact bytes of the parts in MinIO
    assert sample(s["sync"], "udb_rows_synced_total", {"tenant": t}) == ROWS
    listed = s3_client.list_objects_v2(Bucket=stack.BUCKET, Prefix=f"tenants/{t}/staging/{pg_job.job_id}/")
    assert sample(s["sync"], "udb_bytes_staged_total", {"tenant": t}) == sum(o["Size"] for o in listed["Contents"])
    # writer: one load for the tenant; idle now
    assert sample(s["writer"], "udb_duckdb_write_duration_seconds_count", {"tenant": t}) == 1
    assert sample(s["writer"], "udb_writer_lease_wait_seconds_count") >= 1
    assert sample(s["writer"], "udb_writer_queue_depth", {"state": "waiting_lease"}) == 0
    assert sample(s["writer"], "udb_writer_queue_depth", {"state": "loading"}) == 0
    # analyze: every artifact byte it wrote (the reports function adds its own later, and rewrites
    # the index and the page as each report lands: counted by its own process)
    index = json.loads(artifact(pg_job, "index.json"))
    own = sum(a["bytes"] for a in index["artifacts"] if "report" not in a and a["name"] != "index.html")
    assert sample(s["analyze"], "udb_artifact_bytes_total", {"tenant": t}) > own
    kpis = json.loads(artifact(pg_job, f"kpis-{pg_job.table}.json"))
    assert sample(s["analyze"], "udb_kpi_duration_seconds_count") >= len(kpis) > 0
    assert sample(s["analyze"], "udb_artifacts_per_job_count") >= 1
    assert sample(s["analyze"], "udb_profile_duration_seconds_count") >= 1
    full = {k: sample(s["analyze"], f"udb_profile_coverage_ratio_{k}", {"profile": "duckdb"}) for k in ("count", "sum")}
    assert full["count"] >= 1 and full["sum"] == full["count"]  # the DuckDB profile reads every row
    assert sample(s["analyze"], "udb_profile_coverage_ratio_bucket", {"profile": "duckdb", "le": "0.99"}) == 0
    # reports: the sampled engines' coverage and one duration per report, in its own process
    wait_for_reports(stack.function_url("artifacts"), pg_job.tenant, pg_job.job_id)
    s["reports"] = scrape("reports")
    sampled = {k: sample(s["reports"], f"udb_profile_coverage_ratio_{k}", {"profile": "sampled"})
               for k in ("count", "sum")}
    assert sampled["count"] >= 1 and 0 < sampled["sum"] <= sampled["count"]
    for kind in ("ydata", "evidently-summary"):
        assert sample(s["reports"], "udb_report_duration_seconds_count", {"report": kind, "outcome": "ready"}) >= 1
    # every function: its dependencies up; artifacts answered the status polls
    for function in FUNCTIONS:
        for component in ("object_store", "kafka", "duckdb_extensions"):
            assert sample(s[function], "udb_dependency_up", {"component": component}) == 1, (function, component)
    assert sample(s["artifacts"], "udb_http_requests_total",
                  {"function": "artifacts", "route": "/status/", "status": "200"}) >= 1
    assert sample(s["discover"], "udb_lineage_events_total", {"event_type": "START", "result": "sent"}) >= 1
    assert sample(s["analyze"], "udb_lineage_events_total", {"event_type": "COMPLETE", "result": "sent"}) >= 1


def test_logs_are_correlated_and_never_show_the_secret_or_an_address(pg_job):
    written = logs_since(pg_job.offsets)
    for name, text in written.items():
        assert pg_job.secret not in text, f"{name} shows the DSN password"
        assert pg_job.email_domain not in text, f"{name} shows an e-mail address of the table"
    # Nor do the job's spans or lineage events.
    for folder in (TRACES, LINEAGE):
        for path in folder.glob("*.jsonl"):
            text = path.read_text()
            assert pg_job.secret not in text and pg_job.email_domain not in text, path

    spans = wait_for_spans(pg_job.trace_id, lambda s: True, timeout=0)
    seen = set()
    for function in STAGES:
        span_ids = {s["span_id"] for s in spans[function]}
        for line in written.get(f"fn-{function}.log", "").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the server's own start-up lines
            if entry.get("job") != pg_job.job_id:
                continue
            assert {"time", "level", "function", "tenant", "job", "trace_id", "span_id", "message"} <= set(entry)
            assert entry["function"] == function and entry["tenant"] == pg_job.tenant
            assert entry["trace_id"] == pg_job.trace_id and entry["span_id"] in span_ids, entry
            seen.add(function)
    assert {"discover", "sync"} <= seen  # "discovered ..." and "staged ..." lines


def test_lineage_of_the_job_in_the_stack(pg_job):
    run = lineage.run_id(pg_job.tenant, pg_job.job_id)
    found = {f: [e for e in lineage.read_events(LINEAGE / f"{f}.jsonl") if e["run"]["runId"] == run]
             for f in FUNCTIONS}
    assert [e["eventType"] for e in found["discover"]] == ["START"]
    assert [e["eventType"] for e in found["analyze"]] == ["COMPLETE"]
    assert found["sync"] == found["writer"] == found["artifacts"] == []
    start, complete = found["discover"][0], found["analyze"][0]
    source = {"namespace": "postgres://127.0.0.1:15432", "name": f"udb.public.people_{pg_job.tenant}", "facets": {}}
    for event in (start, complete):
        assert event["job"] == {"namespace": f"udb/{pg_job.tenant}", "name": pg_job.doc["source_id"], "facets": {}}
        assert event["inputs"] == [source]
    assert complete["outputs"][0]["namespace"] == f"duckdb://udb/{pg_job.tenant}"
    assert complete["outputs"][0]["name"] == pg_job.table
    assert complete["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == ROWS

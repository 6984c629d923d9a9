"""functions/artifacts/deadletters.py: a dead-lettered event fails its job with the reason, but
a completed job's reports fail alone (the job stays completed). Outages, which park the job for
the redrive sweep, are in test_redrive.py."""
from __future__ import annotations

import base64

import pytest
from cloudevents.http import CloudEvent

from functions.artifacts import deadletters
from shared.core import events
from shared.storage import jobindex

pytestmark = pytest.mark.unit
TENANT, JOB = "acme", "job-00000000000000d1"


def _letter(event_type: str, data: dict, *, code: str, dest: str = "http://udb-analyze.udb.svc.cluster.local/",
            detail: bytes = b"", **kw) -> CloudEvent:
    event = events.make_event(event_type, data, tenant=TENANT, job_id=JOB, function="writer", **kw)
    attrs = {**event.get_attributes(), "knativeerrordest": dest, "knativeerrorcode": code,
             "knativeerrordata": base64.b64encode(detail).decode()}
    return CloudEvent(attrs, event.get_data())


def _attrs(**extra) -> CloudEvent:
    return CloudEvent({"type": "dev.udb.sync.staged", "source": "/x", **extra}, {})


@pytest.mark.parametrize("extra,reason", [
    ({"knativeerrorcode": "500", "knativeerrordest": "http://w/", "knativeerrordata": base64.b64encode(b" boom \n").decode()},
     "delivery of dev.udb.sync.staged to http://w/ failed after all retries (HTTP 500): boom"),
    ({"knativeerrorcode": "0", "knativeerrordest": "http://w/"},
     "delivery of dev.udb.sync.staged to http://w/ failed after all retries (no answer)"),
    ({}, "delivery of dev.udb.sync.staged to ? failed after all retries (no answer)"),
    ({"knativeerrorcode": "200", "knativeerrordest": "http://w/"},
     "delivery of dev.udb.sync.staged to http://w/ failed after all retries (HTTP 200, a reply that is not a CloudEvent)"),
    ({"knativeerrorcode": "422", "knativeerrordest": "http://w/", "knativeerrordata": "%%not base64%%"},
     "delivery of dev.udb.sync.staged to http://w/ failed after all retries (HTTP 422)"),
])
def test_reason_of(extra, reason):
    assert deadletters.reason_of(_attrs(**extra)) == reason


def test_a_long_detail_is_cut_to_the_maximum():
    detail = base64.b64encode(b"x" * 1000).decode()
    reason = deadletters.reason_of(_attrs(knativeerrorcode="500", knativeerrordest="d", knativeerrordata=detail))
    assert len(reason) == deadletters.MAX_REASON
    assert reason.startswith("delivery of dev.udb.sync.staged to d failed after all retries (HTTP 500): xxx")


def test_a_deterministic_failure_fails_the_job_with_the_reason(ctx_for):
    ctx = ctx_for("artifacts")
    ctx.jobs(TENANT).create(JOB)
    ctx.jobs(TENANT).move(JOB, "loaded", tables={"csv__sales": {"rows": 3}})
    letter = _letter(events.WAREHOUSE_LOADED, {"source_id": "csv", "autoanalyze": True,
                                               "tables": [{"table": "csv__sales", "rows": 3, "applied": True}]},
                     code="400", detail=b'{"error": "bad table"}', flags={"autoanalyze": True})
    assert deadletters.handle(letter, ctx) is None
    doc = ctx.jobs(TENANT).get(JOB)
    assert doc["state"] == "failed"
    assert doc["error"] == {"stage": "analyze", "function": "analyze", "reason": (
        "delivery of dev.udb.warehouse.loaded to http://udb-analyze.udb.svc.cluster.local/ failed after all "
        'retries (HTTP 400): {"error": "bad table"}')}


def test_a_completed_jobs_reports_fail_and_the_job_stays_completed(ctx_for):
    ctx = ctx_for("artifacts")
    jobs, store = ctx.jobs(TENANT), ctx.tenant_store(TENANT)
    jobs.create(JOB)
    for state in ("loaded", "completed"):
        jobs.move(JOB, state)
    plan = jobindex.plan_reports(["csv__sales"], charts=1)
    plan[0]["state"] = "ready"
    jobindex.save(store, {"job_id": JOB, "tenant": TENANT, "tables": ["csv__sales"], "artifacts": [],
                          "reports": plan}, facts=[])
    index_key = f"artifacts/{JOB}/index.json"
    letter = _letter(events.ANALYSIS_COMPLETED, {"index": index_key, "artifacts": 1, "tables": ["csv__sales"]}, code="0",
                     dest="http://udb-reports.udb.svc.cluster.local/")
    assert deadletters.handle(letter, ctx) is None
    reason = ("delivery of dev.udb.analysis.completed to http://udb-reports.udb.svc.cluster.local/ failed after "
              "all retries (no answer)")
    index, _ = jobindex.load(store, JOB)
    assert [(i["id"], i["state"], i["reason"]) for i in index["reports"]] == [
        ("ydata:csv__sales", "ready", None), ("evidently-summary:csv__sales", "failed", reason),
        ("png-charts", "failed", reason)]
    doc = jobs.get(JOB)
    assert doc["state"] == "completed"
    assert doc["reports"]["state"] == "failed" and doc["reports"]["reason"] == reason
    assert doc["reports"]["counts"] == {"pending": 0, "ready": 1, "failed": 2, "skipped": 0}
    page = store.get(store.artifact_key(JOB, "index.html")).data.decode()
    assert "failed after all retries (no answer)" in page


def test_a_reports_letter_for_a_job_without_an_index_changes_nothing(ctx_for):
    ctx = ctx_for("artifacts")
    ctx.jobs(TENANT).create(JOB)
    letter = _letter(events.REPORTS_RENDERED, {"index": f"artifacts/{JOB}/index.json", "state": "ready",
                                               "reports": []}, code="500")
    assert deadletters.handle(letter, ctx) is None
    assert ctx.jobs(TENANT).get(JOB)["state"] == "requested" and ctx.jobs(TENANT).get(JOB).get("reports") is None

"""Retention: POST /admin/prune deletes staging and artifacts of jobs idle past their retention,
on a real LocalStore with known job ages, and nothing else."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from cloudevents.http import CloudEvent, to_binary, to_structured
from functions_framework import create_app

from functions.artifacts.admin import prune
from shared.core.errors import ValidationError
from shared.storage.jobs import new_job
from shared.core.settings import Settings
from shared.storage.store import LocalStore
from tests.conftest import REPO

pytestmark = pytest.mark.unit

NOW = datetime(2025, 6, 30, tzinfo=timezone.utc)
JOB_A, JOB_B, JOB_C, JOB_D, JOB_E = (f"job-{n:016x}" for n in (0xA, 0xB, 0xC, 0xD, 0xE))

# (tenant, job, days since its last update or None for "no job document", {key: size})
LAYOUT = [
    ("acme", JOB_A, 10, {"staging/{job}/sales/part-0.parquet": 100, "staging/{job}/sales/part-1.parquet": 200,
                         "artifacts/{job}/index.json": 10, "artifacts/{job}/report.html": 20}),
    ("acme", JOB_B, 40, {"staging/{job}/sales/part-0.parquet": 300,
                         "artifacts/{job}/index.json": 30, "artifacts/{job}/report.html": 40,
                         "artifacts/{job}/chart.png": 50}),
    ("acme", JOB_C, 1, {"staging/{job}/sales/part-0.parquet": 400, "artifacts/{job}/index.json": 60}),
    ("beta", JOB_D, None, {"staging/{job}/t/part-0.parquet": 500, "artifacts/{job}/index.json": 70}),
    ("beta", JOB_E, 3, {"staging/{job}/t/part-0.parquet": 600}),
]
# Never candidates, whatever their age.
UNTOUCHABLE = ["tenants/acme/warehouse.duckdb", "tenants/acme/sources/sales-1234abcd.json",
               "tenants/beta/warehouse.duckdb", "locks/acme/warehouse.lease",
               "tenants/acme/staging/not-a-job/x.parquet", "tenants/BAD/staging/job-00000000000000ff/x.parquet",
               "tenants/acme/cache/drift.parquet"]


def put_job(store, tenant: str, job: str, days: float, now: datetime = NOW) -> None:
    doc = new_job(job, tenant)
    doc["updated_at"] = (now - timedelta(days=days)).isoformat(timespec="milliseconds")
    doc["state"] = "completed"
    store.put(f"tenants/{tenant}/jobs/{job}.json", json.dumps(doc).encode())


def build(store, now: datetime = NOW) -> set[str]:
    for tenant, job, days, objects in LAYOUT:
        if days is not None:
            put_job(store, tenant, job, days, now)
        for key, size in objects.items():
            store.put(f"tenants/{tenant}/" + key.format(job=job), b"x" * size)
    for key in UNTOUCHABLE:
        store.put(key, b"keep")
    return {info.key for info in store.list("")}


def job_keys(tenant: str, job: str, area: str) -> set[str]:
    objects = next(o for t, j, _, o in LAYOUT if (t, j) == (tenant, job))
    return {f"tenants/{tenant}/" + k.format(job=job) for k in objects if k.startswith(area + "/")}


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def test_prune_deletes_exactly_what_is_past_retention(store):
    before = build(store)
    result = prune(store, staging_days=2, artifact_days=30, now=NOW)
    assert result["deleted"] == {
        "staging": {"jobs": 3, "objects": 4, "bytes": 100 + 200 + 300 + 600},  # A (10 d), B (40 d), E (3 d)
        "artifacts": {"jobs": 1, "objects": 3, "bytes": 30 + 40 + 50},          # B (40 d)
    }
    assert result["kept"] == {"staging": {"objects": 1}, "artifacts": {"objects": 3}}  # C; A's two and C's one
    assert result["unknown_age"] == {"objects": 2}  # D has no job document
    assert result["retention_days"] == {"staging": 2, "artifacts": 30} and result["dry_run"] is False
    gone = (job_keys("acme", JOB_A, "staging") | job_keys("acme", JOB_B, "staging")
            | job_keys("acme", JOB_B, "artifacts") | job_keys("beta", JOB_E, "staging"))
    assert {info.key for info in store.list("")} == before - gone
    for key in UNTOUCHABLE:
        assert store.get(key).data == b"keep"
    # The job documents themselves stay: the status of an old job is still readable.
    assert all(store.head(f"tenants/{t}/jobs/{j}.json") for t, j, d, _ in LAYOUT if d is not None)


def test_second_prune_finds_nothing_more(store):
    build(store)
    prune(store, staging_days=2, artifact_days=30, now=NOW)
    again = prune(store, staging_days=2, artifact_days=30, now=NOW)
    assert again["deleted"]["staging"]["objects"] == 0 and again["deleted"]["artifacts"]["objects"] == 0


def test_dry_run_counts_and_deletes_nothing(store):
    before = build(store)
    result = prune(store, staging_days=2, artifact_days=30, now=NOW, dry_run=True)
    assert result["dry_run"] is True
    assert result["deleted"]["staging"]["objects"] == 4 and result["deleted"]["artifacts"]["objects"] == 3
    assert {info.key for info in store.list("")} == before


def test_one_tenant_only(store):
    before = build(store)
    result = prune(store, staging_days=2, artifact_days=30, now=NOW, tenant="beta")
    assert result["deleted"]["staging"] == {"jobs": 1, "objects": 1, "bytes": 600}
    assert result["deleted"]["artifacts"]["objects"] == 0
    assert {info.key for info in store.list("")} == before - job_keys("beta", JOB_E, "staging")


def test_zero_days_keeps_an_area_forever(store):
    build(store)
    result = prune(store, staging_days=0, artifact_days=5, now=NOW)
    assert result["deleted"]["staging"]["objects"] == 0
    assert result["kept"]["staging"]["objects"] == 5
    # artifacts of A (10 d) and B (40 d) are past 5 days
    assert result["deleted"]["artifacts"] == {"jobs": 2, "objects": 5, "bytes": 10 + 20 + 30 + 40 + 50}


def test_boundary_is_strictly_older(store):
    put_job(store, "acme", JOB_A, 2)
    store.put(f"tenants/acme/staging/{JOB_A}/t/part-0.parquet", b"x")
    assert prune(store, staging_days=2, artifact_days=30, now=NOW)["deleted"]["staging"]["objects"] == 0
    later = NOW + timedelta(milliseconds=1)
    assert prune(store, staging_days=2, artifact_days=30, now=later)["deleted"]["staging"]["objects"] == 1


def test_unreadable_job_document_means_unknown_age(store):
    store.put(f"tenants/acme/jobs/{JOB_A}.json", b"{not json")
    store.put(f"tenants/acme/jobs/{JOB_B}.json", json.dumps({"job_id": JOB_B}).encode())
    store.put(f"tenants/acme/staging/{JOB_A}/t/part-0.parquet", b"x")
    store.put(f"tenants/acme/staging/{JOB_B}/t/part-0.parquet", b"x")
    result = prune(store, staging_days=1, artifact_days=1, now=NOW)
    assert result["unknown_age"] == {"objects": 2} and result["deleted"]["staging"]["objects"] == 0


def test_negative_days_are_refused(store, tmp_path):
    with pytest.raises(ValueError):
        prune(store, staging_days=-1, artifact_days=30)
    with pytest.raises(ValidationError) as info:
        Settings.from_env(env={"UDB_STAGING_RETENTION_DAYS": "-2", "UDB_ARTIFACT_RETENTION_DAYS": "-1"})
    assert set(info.value.problems) == {"UDB_STAGING_RETENTION_DAYS", "UDB_ARTIFACT_RETENTION_DAYS"}


def test_documented_defaults():
    documented = {env: default for env, default, _ in Settings.documented()}
    assert documented["UDB_STAGING_RETENTION_DAYS"] == "2"
    assert documented["UDB_ARTIFACT_RETENTION_DAYS"] == "30"


# --- over HTTP, through functions-framework's app -----------------------------------------------

@pytest.fixture
def artifacts_client(settings, monkeypatch):
    monkeypatch.setenv("UDB_HOME", str(settings.home))
    monkeypatch.setenv("UDB_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("UDB_STAGING_RETENTION_DAYS", "2")
    monkeypatch.setenv("UDB_ARTIFACT_RETENTION_DAYS", "30")
    app = create_app(target="http", source=str(REPO / "functions" / "artifacts" / "main.py"))
    return app.test_client(), LocalStore(settings.home / "store" / settings.bucket)


def ping_event(data: dict | None) -> CloudEvent:
    attrs = {"type": "dev.knative.sources.ping", "source": "/apis/v1/namespaces/udb/pingsources/udb-prune",
             "datacontenttype": "application/json"}
    return CloudEvent(attrs, data)


def test_ping_cloudevent_in_binary_mode_prunes(artifacts_client):
    client, store = artifacts_client
    build(store, now=datetime.now(timezone.utc))
    headers, body = to_binary(ping_event({"dry_run": False}))
    response = client.post("/admin/prune", headers=headers, data=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert result["deleted"]["staging"]["objects"] == 4 and result["deleted"]["artifacts"]["objects"] == 3
    assert result["tenant"] == "*"
    assert store.head(f"tenants/acme/staging/{JOB_A}/sales/part-0.parquet") is None
    assert store.get("tenants/acme/warehouse.duckdb").data == b"keep"


def test_structured_ping_and_plain_post(artifacts_client):
    client, store = artifacts_client
    build(store, now=datetime.now(timezone.utc))
    headers, body = to_structured(ping_event({"dry_run": True}))
    dry = client.post("/admin/prune", headers=headers, data=body).get_json()
    assert dry["dry_run"] is True and dry["deleted"]["staging"]["objects"] == 4
    assert store.head(f"tenants/acme/staging/{JOB_A}/sales/part-0.parquet") is not None
    plain = client.post("/admin/prune")  # no body at all
    assert plain.status_code == 200 and plain.get_json()["deleted"]["artifacts"]["objects"] == 3
    assert client.post("/admin/prune").get_json()["deleted"]["staging"]["objects"] == 0


def test_bad_options_get_400_naming_each(artifacts_client):
    client, _ = artifacts_client
    response = client.post("/admin/prune", json={"dry_run": "yes", "days": 1})
    assert response.status_code == 400
    assert set(response.get_json()["problems"]) == {"dry_run", "days"}
    response = client.post("/admin/prune", data=b"[1]", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "body" in response.get_json()["problems"]
    assert client.get("/admin/prune").status_code == 405  # POST only (405 Method Not Allowed, Allow: POST)

"""The functions-framework HTTP targets, through functions-framework's own Flask app."""
from __future__ import annotations

import json

import pytest
from cloudevents.http import from_http, to_binary, to_structured
from functions_framework import create_app

from shared.core import events
from shared.serving import runtime
from tests.conftest import REPO

pytestmark = pytest.mark.unit
TENANT = "acme"
JOB = "job-00000000000000c1"


@pytest.fixture
def client_for(settings, monkeypatch):
    """A test client of the real functions-framework app; the function reads its settings from
    the environment, as a deployed function does."""
    monkeypatch.setenv("UDB_HOME", str(settings.home))
    monkeypatch.setenv("UDB_LOG_LEVEL", "WARNING")

    def make(function: str):
        app = create_app(target="http", source=str(REPO / "functions" / function / "main.py"))
        return app.test_client(), runtime.start(function, settings)

    return make


def test_event_in_binary_and_structured_mode_gets_the_next_event(client_for, sales_csv):
    client, _ = client_for("discover")
    event = events.make_event(events.DISCOVER_REQUESTED, {"hint": str(sales_csv)}, tenant=TENANT, job_id=JOB,
                              function="test")
    for encode in (to_binary, to_structured):
        headers, body = encode(event)
        response = client.post("/", headers=headers, data=body)
        assert response.status_code == 200
        reply = from_http(dict(response.headers), response.get_data())
        assert reply["type"] == events.SOURCE_DISCOVERED and reply["jobid"] == JOB
        assert response.headers["ce-type"] == events.SOURCE_DISCOVERED  # binary mode reply


def test_malformed_and_invalid_events_get_400_naming_every_problem(client_for):
    client, _ = client_for("discover")
    response = client.post("/", data=b"not an event", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed CloudEvent"
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/t", "ce-type": events.DISCOVER_REQUESTED,
               "ce-tenant": "Nope", "ce-jobid": "x", "Content-Type": "application/json"}
    response = client.post("/", data=json.dumps({"hint": 5}), headers=headers)
    body = response.get_json()
    assert response.status_code == 400
    assert set(body["problems"]) == {"tenant", "jobid", "data.hint"}


def test_health_endpoints_answer(client_for):
    client, ctx = client_for("analyze")
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["dependencies"] == {"object_store": "up", "duckdb_extensions": "up"}
    assert b"udb_dependency_up" in client.get("/metrics").data


def test_artifacts_serves_status_index_and_files_for_one_tenant_only(client_for):
    client, ctx = client_for("artifacts")
    jobs = ctx.jobs(TENANT)
    jobs.create(JOB, hint="x")
    store = ctx.tenant_store(TENANT)
    store.put(store.artifact_key(JOB, "summary.md"), b"# hello")
    store.put(store.artifact_key(JOB, "index.json"), json.dumps({"artifacts": [
        {"name": "summary.md", "media_type": "text/markdown", "bytes": 7, "sha256": "x"}]}).encode())
    h = {"X-UDB-Tenant": TENANT}
    assert client.get(f"/status/{JOB}", headers=h).get_json()["state"] == "requested"
    assert client.get(f"/artifact/{JOB}/", headers=h).get_json()["artifacts"][0]["name"] == "summary.md"
    got = client.get(f"/artifact/{JOB}/summary.md", headers=h)
    assert got.status_code == 200 and got.data == b"# hello"
    assert got.headers["Content-Type"] == "text/markdown; charset=utf-8"
    other = {"X-UDB-Tenant": "other"}
    assert client.get(f"/status/{JOB}", headers=other).status_code == 404
    assert client.get(f"/artifact/{JOB}/summary.md", headers=other).status_code == 404
    assert client.get(f"/status/{JOB}").status_code == 400  # no tenant
    assert client.get(f"/artifact/{JOB}/..%2Findex.json", headers=h).status_code in (400, 404)
    assert client.get(f"/artifact/{JOB}/nope.html", headers=h).status_code == 404


def test_discover_connect_answers_with_the_job_and_candidates(client_for, sales_csv):
    client, ctx = client_for("discover")
    response = client.post("/sources/discover_connect", json={"hint": str(sales_csv)},
                           headers={"X-UDB-Tenant": TENANT})
    body = response.get_json()
    assert response.status_code == 200 and body["sent"] is False  # no K_SINK in this test
    assert body["candidates"][0]["provider"] == "file"
    assert ctx.jobs(TENANT).get(body["jobId"])["state"] == "discovered"
    bad = client.post("/sources/discover_connect", json={"hint": str(sales_csv) + ".nope"},
                      headers={"X-UDB-Tenant": TENANT})
    assert bad.status_code == 422 and bad.get_json()["error"].startswith("no such file or directory")
    assert ctx.jobs(TENANT).get(bad.get_json()["jobId"])["state"] == "failed"
    assert client.post("/sources/discover_connect", json={}, headers={"X-UDB-Tenant": TENANT}).status_code == 400
    assert client.post("/sources/discover_connect", json={"hint": "x"}).status_code == 400

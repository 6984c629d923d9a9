"""Security of the running stack: the broker ingress and every function authenticate, two tenants
cross nowhere over HTTP or Kafka (guessed job ids included), limits hold on the real server, and
a source password shows up in no object, event, job event or function log."""
from __future__ import annotations

import secrets

import httpx
import psycopg
import pytest
from cloudevents.http import CloudEvent, to_binary

from devstack import stack
from devstack.services import process
from shared.core import bindings, events
from shared.core.tenancy import new_job_id
from tests.stack_fixtures import auth_headers, broker_auth, sales_in_minio, topic_records, wait_for_job

pytestmark = [pytest.mark.security, pytest.mark.e2e]


def _post(url: str, event, headers: dict | None = None) -> httpx.Response:
    ce_headers, body = to_binary(event)
    return httpx.post(url, headers={**ce_headers, **(headers or {})}, content=body, timeout=30)


def _kafka_records(topic: str, keys: set[bytes]) -> list:
    return topic_records(topic, lambda r: r.key in keys)


@pytest.fixture
def two_tenants(running_stack, s3_client, tmp_path):
    """Tenant a with a completed job; tenant b with a key and nothing else."""
    a, b = "sa" + secrets.token_hex(4), "sb" + secrets.token_hex(4)
    job = new_job_id()
    event = events.make_event(events.DISCOVER_REQUESTED, {"hint": sales_in_minio(s3_client, a, tmp_path, 400)},
                              tenant=a, job_id=job, function="test")
    assert _post(stack.broker_url(), event, auth_headers(a, "analyst")).status_code == 202
    doc = wait_for_job(stack.function_url("artifacts"), a, job)
    assert doc["state"] == "completed", doc.get("error")
    return a, b, job, doc


def test_the_broker_ingress_takes_only_the_broker_token_or_a_tenants_own_requests(running_stack, tenant):
    other = "so" + secrets.token_hex(4)
    event = events.make_event(events.DISCOVER_REQUESTED, {"hint": "s3://nowhere/x.csv"}, tenant=tenant,
                              job_id=new_job_id(), function="test")
    assert _post(stack.broker_url(), event).status_code == 401
    assert _post(stack.broker_url(), event, {"Authorization": "Bearer udb_000000000000_" + "A" * 43}).status_code == 401
    crossed = _post(stack.broker_url(), event, auth_headers(other, "analyst"))
    assert crossed.status_code == 403 and f"cannot send events of tenant '{tenant}'" in crossed.json()["error"]
    assert _post(stack.broker_url(), event, auth_headers(tenant, "viewer")).status_code == 403
    # A terminal type no Trigger routes: accepted from the broker token, it goes nowhere.
    internal = CloudEvent({"type": events.REPORTS_RENDERED, "source": "/udb/test", "tenant": tenant,
                           "jobid": new_job_id(), "partitionkey": tenant}, {"index": "x"})
    refused = _post(stack.broker_url(), internal, auth_headers(tenant, "admin"))
    assert refused.status_code == 403 and "come from UDB itself" in refused.json()["error"]
    assert _post(stack.broker_url(), internal, broker_auth()).status_code == 202  # UDB's own senders


def test_each_functions_event_entry_needs_the_broker_token(running_stack, tenant):
    event = events.make_event(events.ANALYZE_REQUESTED, {"tables": ["nope"]}, tenant=tenant, job_id=new_job_id(),
                              function="test")
    for name in stack.FUNCTION_PORTS:
        response = _post(stack.function_url(name), event)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"] == 'Bearer realm="udb"'
    # With the token the analyze function takes it (and fails the job: no such table).
    assert _post(stack.function_url("analyze"), event, broker_auth()).status_code == 200


def test_two_tenants_cross_nowhere_over_http(two_tenants):
    a, b, job, doc = two_tenants
    url = stack.function_url("artifacts")
    index = httpx.get(f"{url}/artifact/{job}/", headers=auth_headers(a, "viewer"), timeout=30).json()
    names = [entry["name"] for entry in index["artifacts"]]
    with httpx.Client(base_url=url, timeout=30) as http:
        for path in [f"/status/{job}", f"/artifact/{job}/"] + [f"/artifact/{job}/{n}" for n in names]:
            assert http.get(path, headers=auth_headers(a, "viewer")).status_code == 200, path
            assert http.get(path, headers=auth_headers(b, "admin")).status_code == 404, path
            assert http.get(path, headers={**auth_headers(b, "admin"), "X-UDB-Tenant": a}).status_code == 403
            assert http.get(path).status_code == 401
            assert http.get(path, headers={"X-UDB-Tenant": a}).status_code == 401  # a header is no credential
        guessed = [new_job_id() for _ in range(40)]
        assert {http.get(f"/status/{g}", headers=auth_headers(a, "viewer")).status_code for g in guessed} == {404}
        assert http.get("/kpis/", headers=auth_headers(b, "viewer")).json() == {"kpis": []}
        for path in (f"/artifact/{job}/..%2F..%2F..%2F{a}%2Fjobs%2F{job}.json", f"/status/..%2F{a}%2Fjobs%2F{job}"):
            assert http.get(path, headers=auth_headers(b, "admin")).status_code in (400, 404)


def test_two_tenants_cross_nowhere_on_kafka(two_tenants):
    a, b, job, _ = two_tenants
    routed = _kafka_records("knative-broker-udb-udb", {a.encode(), b.encode()})
    of_job = [bindings.from_kafka(r.key, r.value, r.headers) for r in routed]
    of_job = [e for e in of_job if e["jobid"] == job]
    assert len(of_job) >= 5
    # (the Kafka binding hands the record key back as bytes)
    assert {(e["tenant"], str(e["partitionkey"], "utf-8") if isinstance(e["partitionkey"], bytes)
             else e["partitionkey"]) for e in of_job} == {(a, a)}
    job_events = _kafka_records("udb.job-events", {a.encode(), b.encode()})
    assert job_events and {r.key for r in job_events} == {a.encode()}
    assert all(dict(r.headers)["ce_tenant"] == a.encode() for r in job_events)


def test_discover_connect_and_limits_on_the_real_server(running_stack, s3_client, tenant, tmp_path):
    url = stack.function_url("discover") + "/sources/discover_connect"
    hint = sales_in_minio(s3_client, tenant, tmp_path, 150)
    assert httpx.post(url, json={"hint": hint}, timeout=30).status_code == 401
    assert httpx.post(url, json={"hint": hint}, headers=auth_headers(tenant, "viewer"), timeout=30).status_code == 403
    response = httpx.post(url, json={"hint": hint, "autoanalyze": False}, headers=auth_headers(tenant, "analyst"),
                          timeout=60)
    assert response.status_code == 202 and response.json()["sent"] is True  # on to the broker, with the token
    doc = wait_for_job(stack.function_url("artifacts"), tenant, response.json()["jobId"], states=("loaded", "failed"))
    assert doc["state"] == "loaded" and list(doc["tables"].values()) == [{"rows": 150}]

    def chunks():  # Transfer-Encoding: chunked, 5 MiB: above UDB_MAX_BODY_BYTES (4 MiB)
        yield b'{"hint": "'
        for _ in range(5):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    too_big = httpx.post(url, content=chunks(), timeout=60,
                         headers={**auth_headers(tenant, "analyst"), "Content-Type": "application/json"})
    assert too_big.status_code == 413
    deep = httpx.post(url, content=b'{"hint": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", timeout=30,
                      headers={**auth_headers(tenant, "analyst"), "Content-Type": "application/json"})
    assert deep.status_code == 400 and "UDB_MAX_JSON_DEPTH" in deep.json()["error"]
    local = httpx.post(url, json={"hint": "/etc/passwd"}, headers=auth_headers(tenant, "analyst"), timeout=30)
    assert local.status_code == 422 and "local paths cannot be read in stack mode" in local.json()["error"]


@pytest.fixture
def pg_secret_source(stack_services):
    admin = stack_services["postgres"]
    suffix = secrets.token_hex(4)
    role, password, table = f"sst_{suffix}", f"Pw-{secrets.token_hex(12)}", f"people_{suffix}"
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        pg.execute(f"CREATE TABLE {table} AS SELECT i AS id, i * 1.5 AS amount FROM generate_series(1, 60) AS s(i)")
        pg.execute(f"GRANT SELECT ON {table} TO {role}")
    host = admin.split("@", 1)[1].split("/", 1)[0]
    yield f"postgresql://{role}:{password}@{host}/udb?table=public.{table}", password
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {table}")
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_source_password_stays_out_of_objects_events_and_logs_in_the_stack(running_stack, s3_client, tenant,
                                                                          pg_secret_source):
    dsn, password = pg_secret_source
    logs = {name: process.log_file(f"fn-{name}") for name in stack.FUNCTION_PORTS}
    offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}
    response = httpx.post(stack.function_url("discover") + "/sources/discover_connect", json={"hint": dsn},
                          headers=auth_headers(tenant, "analyst"), timeout=60)
    assert response.status_code == 202, response.text
    doc = wait_for_job(stack.function_url("artifacts"), tenant, response.json()["jobId"])
    assert doc["state"] == "completed", doc.get("error")
    secret = password.encode()
    keys = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=stack.BUCKET, Prefix=f"tenants/{tenant}/") for o in page.get("Contents", [])]
    assert any("/artifacts/" in k for k in keys) and any("/staging/" in k for k in keys)
    for key in keys:
        assert secret not in s3_client.get_object(Bucket=stack.BUCKET, Key=key)["Body"].read(), key
    for topic in ("knative-broker-udb-udb", "udb.job-events"):
        records = _kafka_records(topic, {tenant.encode()})
        assert records, topic
        for r in records:
            assert secret not in r.value and all(secret not in v for _, v in r.headers), topic
    for name, path in logs.items():
        with open(path, "rb") as fh:
            fh.seek(offsets[name])
            assert secret not in fh.read(), f"the {name} log shows the password"

"""The pipeline with every function in its own container: a CSV in MinIO and a PostgreSQL table
through the broker (ingress -> Kafka -> the function containers) to completed artifacts."""
from __future__ import annotations

import json
import time
import uuid

import boto3
import httpx
import psycopg
import pytest
from cloudevents.http import to_binary, to_structured

from shared.core import events
from shared.storage import lake
from shared.core.tenancy import new_job_id
from tests.conftest import create_pg_orders, write_sales
from tests.containers.conftest import BUCKET, FUNCTION_PORTS, MINIO_PASSWORD, MINIO_USER, containers_env

pytestmark = pytest.mark.containers
SOURCE_BUCKET = "udb-containers-sources"
_KEYS: dict[str, str] = {}


def auth_headers(stack: dict, tenant: str) -> dict:
    """An admin API key of `tenant` made in the containers' store (as `udb keys create` does)."""
    if tenant not in _KEYS:
        from shared.security.auth import KeyStore
        from shared.core.settings import Settings
        from shared.storage.backends import open_store

        env = containers_env("cli", {"s3": stack["s3"], "kafka": stack["kafka"]})
        store = open_store(Settings.from_env(env=env))
        _KEYS[tenant] = KeyStore(store).create(tenant, "admin", "tests")[0]
    return {"Authorization": f"Bearer {_KEYS[tenant]}", "X-UDB-Tenant": tenant}


def run_job(stack: dict, tenant: str, hint: str, structured: bool = False) -> tuple[str, dict]:
    job_id = new_job_id()
    event = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=tenant, job_id=job_id, function="test")
    headers, body = (to_structured if structured else to_binary)(event)
    headers.update(auth_headers(stack, tenant))
    response = httpx.post(stack["broker"], headers=headers, content=body, timeout=10)
    assert response.status_code == 202, response.text
    deadline, doc = time.monotonic() + 300, None
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            reply = client.get(f"{stack['artifacts']}/status/{job_id}", headers=auth_headers(stack, tenant))
            if reply.status_code == 200:
                doc = reply.json()
                # Completed, and the reports (drawn beside the job by udb-reports) no longer pending.
                if doc["state"] == "failed" or (doc["state"] == "completed"
                                                and (doc.get("reports") or {}).get("state") != "pending"):
                    return job_id, doc
            time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in 300s; last status {doc}")


def fetch(stack: dict, tenant: str, job_id: str, name: str = "") -> httpx.Response:
    response = httpx.get(f"{stack['artifacts']}/artifact/{job_id}/{name}", headers=auth_headers(stack, tenant),
                         timeout=30)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture
def tenant() -> str:
    return "c" + uuid.uuid4().hex[:10]


def test_csv_in_minio_to_completed_artifacts(containers_stack, tenant, tmp_path):
    s3 = boto3.client("s3", endpoint_url=containers_stack["s3"], aws_access_key_id=MINIO_USER,
                      aws_secret_access_key=MINIO_PASSWORD, region_name="us-east-1")
    try:
        s3.create_bucket(Bucket=SOURCE_BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    path = write_sales(tmp_path / "sales.csv", 20_000)
    s3.upload_file(str(path), SOURCE_BUCKET, f"{tenant}/sales.csv")

    job_id, doc = run_job(containers_stack, tenant, f"s3://{SOURCE_BUCKET}/{tenant}/sales.csv", structured=True)
    assert doc["state"] == "completed", doc.get("error")
    assert list(doc["tables"].values()) == [{"rows": 20_000}]
    assert set(doc["stage_seconds"]) == {"discover", "sync", "load", "analyze"}
    assert doc["reports"]["state"] == "ready", json.dumps(doc["reports"], indent=1)
    index = fetch(containers_stack, tenant, job_id).json()
    table = index["tables"][0]
    profile = fetch(containers_stack, tenant, job_id, f"profile-{table}.json").json()
    assert profile["rows"] == 20_000 and profile["duplicate_rows"] == 0
    cols = {c["name"]: c for c in profile["column_profiles"]}
    assert cols["amount"]["mean"] == 49.5 and cols["discount"]["nulls"] == 2_000
    assert cols["order_id"]["min"] == 1 and cols["order_id"]["max"] == 20_000
    for entry in index["artifacts"]:
        assert len(fetch(containers_stack, tenant, job_id, entry["name"]).content) == entry["bytes"]
    # The writer container put the tenant's lake in MinIO: its catalog and the table's Parquet.
    head = s3.head_object(Bucket=BUCKET, Key=f"tenants/{tenant}/{lake.CATALOG}")
    assert head["ContentLength"] > 0
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"tenants/{tenant}/{lake.DATA}")
    assert [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".parquet")]


def test_postgres_table_to_completed_artifacts(containers_stack, tenant):
    dsn = containers_stack["postgres"]
    table = f"orders_{tenant}"
    with psycopg.connect(dsn, autocommit=True) as pg:
        create_pg_orders(pg, table, 15_000)

    job_id, doc = run_job(containers_stack, tenant, f"{dsn}?table=public.{table}")
    assert doc["state"] == "completed", doc.get("error")
    assert list(doc["tables"].values()) == [{"rows": 15_000}]
    assert "udb:udb@" not in json.dumps(doc)  # the password never lands in the job document
    index = fetch(containers_stack, tenant, job_id).json()
    profile = fetch(containers_stack, tenant, job_id, f"profile-{index['tables'][0]}.json").json()
    cols = {c["name"]: c for c in profile["column_profiles"]}
    assert profile["rows"] == 15_000
    assert cols["amount"]["mean"] == 49.5 and cols["discount"]["nulls"] == 1_500
    assert cols["region"]["distinct"] == 4


def test_every_function_cold_started_in_its_container(function_containers):
    cold = function_containers["_cold"]
    assert set(cold) == set(FUNCTION_PORTS)
    for name, figures in cold.items():
        # Sanity bounds (the figures themselves are in docs/scaling.md): /readyz after /healthz,
        # and both within the Knative startupProbe's 2 minutes.
        assert 0 < figures["healthz_s"] <= figures["readyz_s"] < 120, (name, figures)

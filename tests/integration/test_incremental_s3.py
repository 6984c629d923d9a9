"""S3 incremental by object against a real MinIO, through the discover, sync and writer
handlers: the prefix is one table keyed by `_s3_key`; a sync reads only the objects that are
new or changed since the last one, and a changed object's rows replace its old rows.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from devstack import services
from functions.discover.handler import handle as discover
from functions.sync.handler import handle as sync
from functions.writer.handler import handle as writer
from shared.core import events
from shared.serving import runtime
from shared.core.errors import SourceError
from shared.serving.runtime import invoke
from shared.sources import SourceEnv, inspect_source
from shared.core.tenancy import new_job_id
from shared.storage import lake

pytestmark = pytest.mark.integration

TENANT = "acme"


def csv(first: int, last: int, scale: int = 1) -> bytes:
    return ("id,amount\n" + "".join(f"{i},{i * scale}\n" for i in range(first, last + 1))).encode()


@pytest.fixture
def minio(stack_services, settings):
    endpoint = services.endpoints()["s3"]
    user, password = services.minio_credentials()
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=user, aws_secret_access_key=password,
                          region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    name = f"udb-inc-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    configured = replace(settings, s3_endpoint=endpoint, s3_access_key=user, s3_secret_key=password)
    ctxs = {f: runtime.start(f, configured) for f in ("discover", "sync", "writer")}
    try:
        yield client, name, ctxs
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)


def run_sync(event, ctxs) -> dict | None:
    staged = invoke(sync, event, ctxs["sync"])
    if staged is None:
        return None
    assert staged["type"] == events.SYNC_STAGED, events.event_data(staged)
    loaded = invoke(writer, staged, ctxs["writer"])
    assert loaded["type"] == events.WAREHOUSE_LOADED, events.event_data(loaded)
    return events.event_data(staged)


def query(ctxs, tmp_path: Path, text: str):
    con = lake.open_reader(ctxs["writer"].tenant_store(TENANT), tmp_path)
    try:
        return con.execute(text).fetchall()
    finally:
        con.close()


def test_s3_incremental_reads_only_new_and_changed_objects(minio, tmp_path):
    client, bucket, ctxs = minio
    client.put_object(Bucket=bucket, Key="sales/a.csv", Body=csv(1, 10))
    client.put_object(Bucket=bucket, Key="sales/b.csv", Body=csv(11, 15))
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": f"s3://{bucket}/sales/",
                                                             "options": {"incremental": True}},
                                tenant=TENANT, job_id=new_job_id(), function="test")
    discovered = invoke(discover, request, ctxs["discover"])
    assert discovered["type"] == events.SOURCE_DISCOVERED, events.event_data(discovered)
    source = events.event_data(discovered)["source"]
    [stream] = source["streams"]
    assert stream["name"] == "sales" and [c["name"] for c in stream["columns"]] == ["id", "amount", "_s3_key"]
    assert stream["options"]["incremental"] == {"by": "object", "primary_key": ["_s3_key"]}
    table = f"{source['short']}__sales"

    first = run_sync(discovered, ctxs)
    assert first["tables"][0]["rows"] == 15 and first["tables"][0]["mode"] == "merge"
    assert query(ctxs, tmp_path, f"SELECT count(*), sum(amount) FROM {table}") == [(15, 120)]

    def again():
        return run_sync(events.make_event(events.SYNC_REQUESTED, {"source_id": source["id"]}, tenant=TENANT,
                                          job_id=new_job_id(), function="test"), ctxs)

    assert again() is None  # nothing new or changed: nothing read, no batch

    # One object added, another changed (b: ids 11-17, amounts x100): only those two are read.
    client.put_object(Bucket=bucket, Key="sales/c.csv", Body=csv(100, 102))
    client.put_object(Bucket=bucket, Key="sales/b.csv", Body=csv(11, 17, scale=100))
    second = again()
    assert second["tables"][0]["rows"] == 3 + 7
    assert query(ctxs, tmp_path, f"SELECT _s3_key, count(*), sum(amount) FROM {table} GROUP BY 1 ORDER BY 1") == [
        ("sales/a.csv", 10, 55), ("sales/b.csv", 7, 9800), ("sales/c.csv", 3, 303)]
    state = json.loads(ctxs["sync"].tenant_store(TENANT).get(f"state/{source['id']}.json").data)
    assert sorted(state["streams"]["sales"]["objects"]) == ["sales/a.csv", "sales/b.csv", "sales/c.csv"]
    assert again() is None


def test_s3_incremental_refuses_a_cursor_spec(minio):
    client, bucket, ctxs = minio
    client.put_object(Bucket=bucket, Key="x/a.csv", Body=csv(1, 2))
    env = SourceEnv.of(ctxs["discover"], TENANT, {"incremental": {"cursor_field": "id"}})
    with pytest.raises(SourceError, match=r"options.incremental: expected true for an S3 source \(incremental by "
                                          r"object\), found \{'cursor_field': 'id'\}"):
        inspect_source("s3", f"s3://{bucket}/x/", env)

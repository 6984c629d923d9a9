"""SIGKILL the writer at each point of a commit: the warehouse is the old or the new version,
never corrupt, and the job completes on redelivery (an expired lease is taken over)."""
from __future__ import annotations

import time

import httpx
import pytest
from cloudevents.http import to_binary

from devstack import services, stack
from shared.core import events
from shared.core.tenancy import new_job_id
from tests.conftest import write_sales
from tests.stack_fixtures import broker_auth, wait_for_job
from tests.stack_fixtures import stack_lake

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
BUCKET = "udb-e2e-sources"
LOG = services.LOG_DIR / "fn-writer.log"


def post(event) -> None:
    headers, body = to_binary(event)
    assert httpx.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body, timeout=10).status_code == 202


def restart_writer(**env) -> None:
    stack.stop("writer")
    stack.start_function("writer", extra_env={"UDB_LEASE_SECONDS": "3", **env})


def warehouse_rows(s3_client, tenant: str, table: str, tmp_path) -> int:
    with stack_lake(tenant) as con:  # opens: not corrupt
        return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


@pytest.fixture
def writer_restored(running_stack):
    yield
    restart_writer()


@pytest.mark.parametrize("point", ["after_lease", "mid_load", "before_upload", "after_upload"])
def test_writer_killed_mid_commit_recovers(point, writer_restored, s3_client, tenant, tmp_path):
    try:
        s3_client.create_bucket(Bucket=BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    hint = f"s3://{BUCKET}/{tenant}/sales.csv"
    first = write_sales(tmp_path / "v1" / "sales.csv", 400)
    s3_client.upload_file(str(first), BUCKET, f"{tenant}/sales.csv")
    restart_writer()
    job_a = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autoanalyze": False}, tenant=tenant,
                           job_id=job_a, function="test"))
    done = wait_for_job(stack.function_url("artifacts"), tenant, job_a, timeout=60, states=("loaded", "failed"))
    assert done["state"] == "loaded"
    table = next(iter(done["tables"]))
    assert warehouse_rows(s3_client, tenant, table, tmp_path) == 400

    second = write_sales(tmp_path / "v2" / "sales.csv", 600)
    s3_client.upload_file(str(second), BUCKET, f"{tenant}/sales.csv")
    log_size = LOG.stat().st_size
    restart_writer(UDB_FAULTS=f"writer.{point}")
    job_b = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autoanalyze": False}, tenant=tenant,
                           job_id=job_b, function="test"))
    deadline = time.monotonic() + 60
    while f"killing writer at {point}" not in LOG.read_text(errors="replace")[log_size:]:
        assert time.monotonic() < deadline, "the writer never reached the fault point"
        time.sleep(0.2)
    # Killed mid-commit: the stored warehouse is a whole version, old or new.
    rows = warehouse_rows(s3_client, tenant, table, tmp_path)
    assert rows == (600 if point == "after_upload" else 400)

    restart_writer()  # a healthy writer: the broker's redelivery completes the job
    done = wait_for_job(stack.function_url("artifacts"), tenant, job_b, timeout=120, states=("loaded", "failed"))
    assert done["state"] == "loaded", done.get("error")
    assert done["tables"] == {table: {"rows": 600}}
    assert warehouse_rows(s3_client, tenant, table, tmp_path) == 600
    with stack_lake(tenant) as con:
        assert con.execute("SELECT job_id, rows FROM udb_meta.batches ORDER BY applied_at").fetchall() == [
            (job_a, 400), (job_b, 600)]  # each batch applied exactly once
        assert con.execute(f'SELECT count(*) FROM udb_snapshots."{table}"').fetchone()[0] == 400

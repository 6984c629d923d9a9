"""A writer killed (-9) in the middle of a load (issue 23, point 4): its 10 s lease, renewed by a
heartbeat while it loaded, is free again soon after; the restarted writer applies the
redelivered load within 10 s of its restart, exactly once, and another tenant's load waiting
behind it is not held up for the old lease's whole period either."""
from __future__ import annotations

import time
from datetime import datetime

import pytest

from devstack import services, stack
from shared.core import events
from shared.core.tenancy import new_job_id
from tests.reliability.test_broker_restart import jobs_started
from tests.reliability.test_writer_crashes import post
from tests.stack_fixtures import sales_in_minio, wait_for_job
from tests.stack_fixtures import stack_lake

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
LOG = services.LOG_DIR / "fn-writer.log"
TAKEOVER_BOUND_S = 10.0


@pytest.fixture
def writer_restored(running_stack):
    yield
    stack.stop("writer")
    stack.start_function("writer")


def loaded_at(doc: dict) -> float:
    return datetime.fromisoformat(next(h["at"] for h in doc["history"] if h["state"] == "loaded")).timestamp()


def catalogue(s3_client, tenant: str, tmp_path) -> list:
    with stack_lake(tenant) as con:
        return con.execute("SELECT job_id, rows FROM udb_meta.batches ORDER BY applied_at").fetchall()


def test_writer_killed_mid_load_is_taken_over_within_10s(writer_restored, s3_client, tenant, tmp_path):
    other = "o" + tenant[1:]
    hint_a = sales_in_minio(s3_client, tenant, tmp_path, 1_500)
    hint_b = sales_in_minio(s3_client, other, tmp_path, 2_000)
    stack.stop("writer")
    stack.start_function("writer", extra_env={"UDB_FAULTS": "writer.mid_load", "UDB_LEASE_SECONDS": "10"})
    log_size = LOG.stat().st_size
    job_a = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint_a, "autoanalyze": False}, tenant=tenant,
                           job_id=job_a, function="test"))
    deadline = time.monotonic() + 60
    while "killing writer at mid_load" not in LOG.read_text(errors="replace")[log_size:]:
        assert time.monotonic() < deadline, "the writer never reached the fault point"
        time.sleep(0.1)
    # The dead writer's lease on tenant A is still in the store; tenant B's job arrives now.
    assert s3_client.head_object(Bucket=stack.BUCKET, Key=f"locks/{tenant}/warehouse.lease")
    job_b = new_job_id()
    post(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint_b, "autoanalyze": False}, tenant=other,
                           job_id=job_b, function="test"))

    stack.stop("writer")
    stack.start_function("writer", extra_env={"UDB_LEASE_SECONDS": "10"})
    restarted = time.time()
    done_a = wait_for_job(stack.function_url("artifacts"), tenant, job_a, timeout=90, states=("loaded", "failed"))
    done_b = wait_for_job(stack.function_url("artifacts"), other, job_b, timeout=90, states=("loaded", "failed"))
    a_s, b_s = loaded_at(done_a) - restarted, loaded_at(done_b) - restarted
    print(f"\nwriter kill -> restarted writer applied the redelivered load {a_s:.2f} s after its restart; "
          f"the other tenant's load {b_s:.2f} s after")
    assert done_a["state"] == "loaded", done_a.get("error")
    assert done_b["state"] == "loaded", done_b.get("error")
    assert a_s <= TAKEOVER_BOUND_S and b_s <= TAKEOVER_BOUND_S
    assert list(done_a["tables"].values()) == [{"rows": 1_500}]
    assert list(done_b["tables"].values()) == [{"rows": 2_000}]
    # Exact rows, each batch applied once; the lease released after each load.
    assert catalogue(s3_client, tenant, tmp_path) == [(job_a, 1_500)]
    assert catalogue(s3_client, other, tmp_path) == [(job_b, 2_000)]
    assert jobs_started("writer", other) == 1  # B was delivered once, to the restarted writer
    for t in (tenant, other):
        with pytest.raises(s3_client.exceptions.ClientError):
            s3_client.head_object(Bucket=stack.BUCKET, Key=f"locks/{t}/warehouse.lease")

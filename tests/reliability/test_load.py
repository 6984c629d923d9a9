"""Load: 4 tenants x 10 concurrent jobs through the stack. Every job completes with exact row
counts, and no tenant's warehouse loses an update (each job adds its own table)."""
from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from cloudevents.http import to_binary

from devstack import services, stack
from shared.core import events
from shared.core.tenancy import new_job_id
from tests.conftest import write_sales
from tests.stack_fixtures import broker_auth, wait_for_job
from tests.stack_fixtures import stack_lake

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
BUCKET = "udb-e2e-sources"
TENANTS, JOBS_PER_TENANT = 4, 10
WRITER_GROUP = "knative-trigger-udb-writer-on-sync-staged"
REPORT = Path(__file__).resolve().parents[2] / ".cache" / "load-report.json"


def writer_queue_depth(kafka: str) -> int:
    """Records on the broker topic the writer's consumer group has not committed yet (all
    types: the group filters after reading, so this is the backlog it must get through)."""
    async def depth():
        from aiokafka import AIOKafkaConsumer
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
        await admin.start()
        await consumer.start()
        try:
            offsets = await admin.list_consumer_group_offsets(WRITER_GROUP)
            parts = [TopicPartition("knative-broker-udb-udb", p) for p in range(4)]
            ends = await consumer.end_offsets(parts)
            return sum(ends[tp] - (offsets[tp].offset if tp in offsets and offsets[tp].offset >= 0 else 0)
                       for tp in parts)
        finally:
            await consumer.stop()
            await admin.close()
    return asyncio.run(depth())


def test_four_tenants_times_ten_concurrent_jobs(running_stack, s3_client, tenant, tmp_path):
    try:
        s3_client.create_bucket(Bucket=BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    tenants = [f"{tenant[:8]}-l{i}" for i in range(TENANTS)]
    plan = []  # (tenant, job, table stem, rows)
    for t in tenants:
        for j in range(JOBS_PER_TENANT):
            rows = 200 + 37 * j + 11 * tenants.index(t)
            path = write_sales(tmp_path / t / f"part{j}.csv", rows)
            s3_client.upload_file(str(path), BUCKET, f"{t}/part{j}.csv")
            plan.append((t, new_job_id(), f"part{j}", rows))

    kafka = services.endpoints()["kafka"]
    depths, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            try:
                depths.append(writer_queue_depth(kafka))
            except Exception:
                pass
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        for t, job, stem, _ in plan:  # all 40 requested at once
            event = events.make_event(events.DISCOVER_REQUESTED, {"hint": f"s3://{BUCKET}/{t}/{stem}.csv"},
                                      tenant=t, job_id=job, function="test")
            headers, body = to_binary(event)
            assert client.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body).status_code == 202
    docs = [wait_for_job(stack.function_url("artifacts"), t, job, timeout=900) for t, job, _, _ in plan]
    wall = time.monotonic() - started
    stop.set()
    sampler.join()

    for (t, job, stem, rows), doc in zip(plan, docs):
        assert doc["state"] == "completed", (job, doc.get("error"))
        assert doc["tables"] == {f"udb_e2e_sources__{stem}": {"rows": rows}}
    for t in tenants:  # no lost update: each tenant's warehouse holds all ten tables, exactly
        with stack_lake(t) as con:
            for _, _, stem, rows in (p for p in plan if p[0] == t):
                assert con.execute(f"SELECT count(*) FROM udb_e2e_sources__{stem}").fetchone()[0] == rows
            assert con.execute("SELECT count(*) FROM udb_meta.batches").fetchone()[0] == JOBS_PER_TENANT

    latencies = sorted((datetime.fromisoformat(d["updated_at"]) - datetime.fromisoformat(d["created_at"]))
                       .total_seconds() for d in docs)
    q = statistics.quantiles(latencies, n=20)
    report = {"jobs": len(docs), "tenants": TENANTS, "wall_seconds": round(wall, 1),
              "throughput_jobs_per_minute": round(len(docs) / wall * 60, 1),
              "latency_p50_seconds": round(statistics.median(latencies), 1),
              "latency_p95_seconds": round(q[18], 1), "max_writer_queue_depth": max(depths or [0])}
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    print("\nload:", json.dumps(report))

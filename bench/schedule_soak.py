"""A bounded soak of scheduled syncs on the real stack (Kafka, MinIO, the function processes,
the local broker and its udb-schedules PingSource): SOURCES S3 CSV sources, each scheduled
"* * * * *", for MINUTES slots; then every scheduled job's outcome. Prints the table of
docs/reliability.md (success rate, p50/p95 duration from the job's creation to `loaded`).

    python bench/schedule_soak.py [--sources 10] [--minutes 5] [--rows 2000]

Starts the stack (and its services) unless they are running, and stops what it started.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import boto3
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack import services, stack  # noqa: E402
from shared.core import events  # noqa: E402
from shared.core.settings import Settings  # noqa: E402
from shared.storage.backends import open_store  # noqa: E402
from shared.storage.store import TenantStore  # noqa: E402
from shared.core.tenancy import new_job_id  # noqa: E402

BUCKET = "udb-soak-sources"


def _store():
    return open_store(Settings.from_env(env=stack.function_env("cli")))


def headers(tenant: str) -> dict:
    from shared.security.auth import KeyStore
    key = KeyStore(_store()).create(tenant, "admin", "soak")[0]
    return {"Authorization": f"Bearer {key}", "X-UDB-Tenant": tenant}


def wait_job(tenant: str, job_id: str, auth: dict, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{stack.function_url('artifacts')}/status/{job_id}", headers=auth, timeout=10)
        if r.status_code == 200 and r.json()["state"] in ("loaded", "completed", "failed"):
            return r.json()
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not finish in {timeout}s")


def scheduled_jobs(tenant: str) -> list[dict]:
    store = TenantStore(_store(), tenant)
    out = []
    for info in store.list("jobs/"):
        if info.key.endswith(".json"):
            doc = json.loads(store.get(info.key).data)
            if doc.get("scheduled_slot"):
                out.append(doc)
    return out


def slot_markers(tenant: str) -> int:
    return sum(1 for i in TenantStore(_store(), tenant).list("schedules/") if ".fired/" in i.key)


def soak(sources: int, minutes: int, rows: int, log=print) -> dict:
    """Discover SOURCES sources, schedule each every minute, wait MINUTES slots, unschedule; the
    scheduled jobs' outcomes and durations."""
    from tests.conftest import write_sales
    tenant = "soak" + uuid.uuid4().hex[:8]
    auth = headers(tenant)
    user, password = services.minio_credentials()
    s3 = boto3.client("s3", endpoint_url=services.endpoints()["s3"], aws_access_key_id=user,
                      aws_secret_access_key=password, region_name="us-east-1")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    source_ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(sources):
            path = write_sales(Path(tmp) / f"s{i}.csv", rows + i)
            s3.upload_file(str(path), BUCKET, f"{tenant}/s{i}.csv")
            job_id = new_job_id()
            event = events.make_event(events.DISCOVER_REQUESTED, {"hint": f"s3://{BUCKET}/{tenant}/s{i}.csv",
                                                                  "autoanalyze": False},
                                      tenant=tenant, job_id=job_id, function="soak", flags={"autoanalyze": False})
            from cloudevents.conversion import to_binary
            h, body = to_binary(event)
            h.update(auth)
            assert httpx.post(stack.broker_url(), headers=h, content=body, timeout=10).status_code == 202
            doc = wait_job(tenant, job_id, auth)
            assert doc["state"] == "loaded", doc.get("error")
            source_ids.append(doc["source_id"])
    for source_id in source_ids:
        r = httpx.put(f"{stack.function_url('artifacts')}/sources/{source_id}/schedule", headers=auth, timeout=10,
                      json={"cron": "* * * * *", "timezone": "UTC", "autoanalyze": False})
        assert r.status_code == 201, r.text
    started = time.time()
    log(f"{sources} sources scheduled every minute; soaking {minutes} slots ...")
    # Stop right after the MINUTES-th slot of the first whole minute after scheduling.
    first = (int(started) // 60 + 1) * 60
    time.sleep(max(0.0, first + (minutes - 1) * 60 + 20 - time.time()))
    for source_id in source_ids:
        httpx.delete(f"{stack.function_url('artifacts')}/sources/{source_id}/schedule", headers=auth, timeout=10)
    jobs = scheduled_jobs(tenant)
    finished = [wait_job(tenant, d["job_id"], auth) for d in jobs]
    ok = [d for d in finished if d["state"] in ("loaded", "completed")]
    seconds = sorted((datetime.fromisoformat(d["updated_at"]) - datetime.fromisoformat(d["created_at"])).total_seconds()
                     for d in ok)
    slots = {(d["source_id"], d["scheduled_slot"]) for d in jobs}
    return {"tenant": tenant, "sources": sources, "minutes": minutes, "syncs": len(jobs), "succeeded": len(ok),
            "failed": [d.get("error") for d in finished if d["state"] == "failed"],
            "distinct_slots": len(slots), "slot_markers": slot_markers(tenant),
            "success_rate": len(ok) / len(jobs) if jobs else 0.0,
            "p50_s": statistics.median(seconds) if seconds else None,
            "p95_s": seconds[max(0, int(round(0.95 * len(seconds))) - 1)] if seconds else None,
            "max_s": seconds[-1] if seconds else None}


def table(result: dict) -> str:
    return ("| scheduled syncs | succeeded | success rate | p50 | p95 | max | slots fired twice |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| {result['syncs']} ({result['sources']} sources x {result['minutes']} slots) | {result['succeeded']} | "
            f"{result['success_rate']:.1%} | {result['p50_s']:.1f} s | {result['p95_s']:.1f} s | "
            f"{result['max_s']:.1f} s | {result['syncs'] - result['distinct_slots']} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args(argv)
    report = stack.status()
    already = all(report.get(n, {}).get("state") == "up" for n in [*stack.FUNCTION_PORTS, "broker"])
    before = services.status(stack.STACK_SERVICES)
    stack.up(with_services=True)
    try:
        result = soak(args.sources, args.minutes, args.rows)
    finally:
        if not already:
            stack.down(with_services=False)
            started = [n for n, info in before.items() if info["state"] != "up"]
            if started:
                services.down(started)
    print(json.dumps(result, indent=2))
    print(table(result))
    return 0 if result["success_rate"] > 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())

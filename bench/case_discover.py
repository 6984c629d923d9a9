"""discover -> analysis.completed for a CSV file, end to end: embedded (`udb run FILE` in one
process, UDB's default settings) and through the running stack (the discover event posted to
the broker ingress with a tenant's API key, the CSV in MinIO, the job polled on the artifacts
function until completed). The stack's work happens in its long-running function processes,
so its runs have no peak RSS of their own. Each stack run uses a new tenant, so, like each
embedded run (a fresh UDB_HOME), it is a first load with no drift reference.

`udb-embedded-nopng` is the embedded run with UDB_CHART_PNG=0, the stack's default: the
embedded default renders every KPI chart to PNG in headless Chromium as well.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from bench import common

CASE = "discover"
TITLE = "discover -> analysis.completed for a CSV (UDB embedded and stack)"
TOOLS = ["udb-embedded", "udb-stack", "udb-embedded-nopng"]
SOURCE_BUCKET = "udb-bench-sources"
POLL_SECONDS = 0.02  # between status GETs while a stack run waits for `completed`


def _stack_down_reason() -> str | None:
    from devstack import stack

    try:
        report = stack.status()
    except Exception as exc:  # noqa: BLE001 (any failure to ask means: not usable)
        return f"cannot read the stack's status: {exc}"
    down = [name for name in list(stack.FUNCTION_PORTS) + ["broker", "kafka", "minio"]
            if report.get(name, {}).get("state") != "up"]
    return f"the stack is not up ({', '.join(down)} down; `just stack up`)" if down else None


def _s3():
    import boto3
    from devstack import services

    user, password = services.minio_credentials()
    return boto3.client("s3", endpoint_url=services.endpoints()["s3"], aws_access_key_id=user,
                        aws_secret_access_key=password, region_name="us-east-1")


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    path = common.make_csv(data / f"sales-{rows}.csv", rows)
    params = {"rows": rows, "csv": str(path),
              "described": f"{rows:,} rows x {common.COLUMNS} columns, {path.stat().st_size / 1e6:.0f} MB"}
    params["skip"] = {"udb-embedded-nopng": "full size only"} if quick else {}
    reason = _stack_down_reason()
    if reason:
        params["skip"]["udb-stack"] = reason
        return params
    s3, key = _s3(), f"sales-{rows}.csv"
    try:
        s3.create_bucket(Bucket=SOURCE_BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    try:
        present = s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ContentLength"] == path.stat().st_size
    except s3.exceptions.ClientError:
        present = False
    if not present:
        s3.upload_file(str(path), SOURCE_BUCKET, key)
    params["hint"] = f"s3://{SOURCE_BUCKET}/{key}"
    return params


def run(tool: str, params: dict, run_dir: Path) -> dict:
    if tool.startswith("udb-embedded"):
        if tool == "udb-embedded-nopng":
            os.environ["UDB_CHART_PNG"] = "0"
        started = time.perf_counter()
        from frontends import cli

        code = cli.main(["run", params["csv"], "--tenant", "bench"])
        seconds = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"udb run failed with exit code {code}")
        job = json.loads(next((run_dir / "udb" / "store" / "udb" / "tenants" / "bench" / "jobs").glob("*.json")).read_text())
        return {"seconds": seconds, "rows": common.warehouse_rows(common.udb_warehouse(run_dir)),
                "note": "stages: " + _stages(job)}
    return _through_stack(params)


def _wait_for_idle_renderers(timeout: float) -> None:
    """After its reports, the stack's reports function starts new renderers that import their
    engines (seconds of CPU); wait until they are idle, so they do not load the next run."""
    import psutil

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        warm = [p for p in psutil.process_iter(["cmdline"])
                if "functions.reports.render" in (p.info["cmdline"] or [])]
        try:
            busy = sum(p.cpu_percent(interval=None) for p in warm)
            time.sleep(0.5)
            busy = sum(p.cpu_percent(interval=None) for p in warm)
        except psutil.Error:
            continue
        if busy < 5:
            return


def _stages(job: dict) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in job.get("stage_seconds", {}).items())


def _through_stack(params: dict, timeout: float = 900, settle_reports: bool = False) -> dict:
    """Seconds from the event posted to the stack's broker to `completed`. With
    `settle_reports`, it then waits (off the clock) until the stack's reports function has
    finished the job's reports, so their rendering does not load the machine during the next
    run of another tool."""
    import httpx
    from cloudevents.http import to_binary

    from devstack import stack
    from shared.core import events
    from shared.core.tenancy import new_job_id
    from tests.stack_fixtures import auth_headers

    tenant = "bench-" + uuid.uuid4().hex[:8]
    headers = auth_headers(tenant)  # an API key for the new tenant, made before the clock starts
    job_id = new_job_id()
    event = events.make_event(events.DISCOVER_REQUESTED, {"hint": params["hint"]}, tenant=tenant, job_id=job_id,
                              function="bench")
    wire_headers, body = to_binary(event)
    status_url = f"{stack.function_url('artifacts')}/status/{job_id}"
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        response = client.post(stack.broker_url(), headers={**wire_headers, **headers}, content=body)
        if response.status_code != 202:
            raise SystemExit(f"the broker refused the event: {response.status_code} {response.text[:300]}")
        while True:
            reply = client.get(status_url, headers=headers)
            if reply.status_code == 200 and reply.json()["state"] in ("completed", "failed"):
                break
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"job {job_id} did not finish within {timeout:.0f} s")
            # Every 20 ms: a status GET costs the artifacts function a few ms, and a 0.1 s pause
            # added up to 0.1 s (0.05 s on average) to the measured time after `completed`.
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        while settle_reports and (reply.json().get("reports") or {}).get("state") == "pending":
            if time.perf_counter() - started > timeout:
                break
            time.sleep(0.5)
            reply = client.get(status_url, headers=headers)
        if settle_reports:
            _wait_for_idle_renderers(timeout=60)
    doc = reply.json()
    if doc["state"] != "completed":
        raise SystemExit(f"job {job_id} failed: {doc.get('error')}")
    return {"seconds": seconds, "rows": sum(t["rows"] for t in doc["tables"].values()),
            "note": "stages: " + _stages(doc), "rss_is_own": False}

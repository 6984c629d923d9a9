"""reports: the heavy renderers on the side of a completed job.

Triggered by `dev.udb.analysis.completed`. analyze has already completed the job and planned
its reports in index.json (all `pending`): per table the ydata-profiling report and the
Evidently summary, the Evidently drift page where the table has a previous snapshot, and the
PNG images of the job's charts. Each is rendered in its own child process under a deadline and
a memory bound (bounded.py), a few at once; as each lands its files are stored, the index
(index.json and the report page) gains them, and the job document's `reports` field says where
things stand. A report that fails is recorded with its reason; the job stays `completed`.

Reads a copy of the warehouse, read-only; never writes it. A dependency outage (the object
store) raises TransientError: the delivery is retried, and past its retries dead-lettered,
which marks the reports still pending as failed (functions/artifacts/deadletters.py).
"""
from __future__ import annotations

import contextvars
import json
import tempfile
import threading
import time
from typing import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from cloudevents.http import CloudEvent

from shared.core import events
from shared.storage import jobindex, lake
from shared.observability import metrics, telemetry
from shared.core.errors import NotFound
from shared.serving.runtime import Context

FUNCTION = "reports"
WAREHOUSE = lake.CATALOG
MEDIA = {".html": "text/html", ".json": "application/json", ".png": "image/png"}


def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    store = ctx.tenant_store(tenant)
    jobs = ctx.jobs(tenant)
    ctx.fault("before_render")
    try:
        index, _ = jobindex.load(store, job_id)
    except NotFound:
        ctx.log.warning("no index.json for job %s: nothing to render", job_id)
        return None
    todo = [item for item in index.get("reports", []) if item["state"] == "pending"]
    if not todo:
        return None  # a redelivery after the reports were rendered, or nothing planned
    started = time.perf_counter()
    landed = ctx.report_landed  # embedded: `udb run` prints each report as it lands
    lock = threading.Lock()

    def record(item: dict, state: str, *, reason: str | None = None, seconds: float | None = None,
               note: str | None = None, entries: Sequence[dict] = (), peak_rss_mb: float | None = None) -> None:
        def change(ix: dict) -> None:
            names = {e["name"] for e in entries}
            ix["artifacts"] = [e for e in ix["artifacts"] if e["name"] not in names] + list(entries)
            for it in ix.get("reports", []):
                if it["id"] == item["id"]:
                    it.update(state=state, reason=reason, seconds=seconds, note=note, peak_rss_mb=peak_rss_mb,
                              artifacts=[e["name"] for e in entries] or it["artifacts"])
        with lock:  # one writer of this job's index and document at a time, in this process
            written = jobindex.update(store, job_id, change)
            jobs.set_reports(job_id, jobindex.job_reports(written["reports"],
                                                          seconds=round(time.perf_counter() - started, 3)))
            item.update(state=state, reason=reason, seconds=seconds,
                        artifacts=[e["name"] for e in entries] or item["artifacts"])
        metrics.report_seconds.labels(item["kind"], state).observe(seconds or 0.0)
        if landed:
            landed(item)

    with tempfile.TemporaryDirectory(prefix="udb-reports-") as tmp:
        work = Path(tmp)
        try:
            local, _ = lake.fetch_catalog(store, work)
        except NotFound:
            for item in todo:
                record(item, "failed", reason=f"tenant {tenant} has no warehouse any more")
            return _reply(ctx, event, index, todo, started)
        specs = {item["id"]: _spec(item, index, work, local, store, ctx, job_id) for item in todo}
        _render_all(todo, specs, work, store, ctx, record, job_id)
    return _reply(ctx, event, index, todo, started)


# It works on completed jobs: shared.serving.runtime.invoke does not skip them for it. (A marker
# attribute on the function, which runtime.invoke reads with getattr.)
handle.after_completion = True  # type: ignore[attr-defined]


def _render_all(todo: list[dict], specs: dict, work: Path, store, ctx: Context, record, job_id: str) -> None:
    from functions.reports import bounded

    settings = ctx.settings
    budget_end = time.monotonic() + settings.reports_budget_seconds
    artifacts = jobindex.Artifacts(store, job_id)

    def one(item: dict):
        remaining = budget_end - time.monotonic()
        if remaining <= 0:
            return item, None
        deadline = min(float(settings.reports_deadline_seconds or remaining), remaining)
        specs[item["id"]]["deadline"] = deadline
        with telemetry.stage("report", report=item["id"]):
            return item, bounded.run(specs[item["id"]], work, deadline=deadline, settings=settings,
                                     memory_mb=settings.reports_memory_mb, log=ctx.log)

    with ThreadPoolExecutor(max_workers=max(1, settings.reports_workers), thread_name_prefix="udb-report") as pool:
        # Each in a copy of this context: its `report` span is a child of the handler's span.
        # The PNG charts first: their engine (kaleido) is ready soonest and their one Chromium
        # session is the longest render of a small table, so starting it last made it land last.
        ordered = sorted(todo, key=lambda item: item["kind"] != "png-charts")
        running = {pool.submit(contextvars.copy_context().run, one, item) for item in ordered}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                item, outcome = future.result()
                if outcome is None:
                    record(item, "failed", reason=f"not started: the job's reports ran past their budget of "
                                                  f"{settings.reports_budget_seconds} s (UDB_REPORTS_BUDGET_SECONDS)")
                    continue
                if not outcome.ok:
                    ctx.log.warning("report %s failed: %s", item["id"], outcome.reason)
                    record(item, "failed", reason=outcome.reason, seconds=outcome.seconds,
                           peak_rss_mb=outcome.peak_rss_mb)
                    continue
                out = Path(specs[item["id"]]["out"])
                start = len(artifacts.entries)
                for produced in outcome.result.get("artifacts", []):
                    name = produced["name"]
                    artifacts.put(name, (out / name).read_bytes(), produced.get("media_type") or
                                  MEDIA.get(Path(name).suffix, "application/octet-stream"),
                                  produced["description"], produced.get("table", item["table"]), report=item["id"])
                _store_cache(out / "cache", store)
                sampling = (outcome.result.get("info") or {}).get("sampling")
                if sampling and sampling.get("total_rows"):  # the share of the table these engines saw
                    metrics.profile_coverage.labels("sampled").observe(sampling["sampled_rows"] / sampling["total_rows"])
                record(item, "ready", seconds=outcome.seconds, note=outcome.result.get("note"),
                       entries=artifacts.entries[start:], peak_rss_mb=outcome.peak_rss_mb)


def _spec(item: dict, index: dict, work: Path, warehouse: Path, store, ctx: Context, job_id: str) -> dict:
    settings = ctx.settings
    spec = {"kind": item["kind"], "table": item["table"], "warehouse": str(warehouse),
            "lake": lake.store_spec(store),
            "out": str(work / item["id"].replace(":", "__")), "sample_rows": settings.profile_sample_rows,
            "max_columns": settings.reports_max_columns, "faults": settings.faults,
            "duckdb_memory_limit": settings.duckdb_memory_limit, "duckdb_threads": 1,
            "chromium_path": settings.chromium_path, "drift_cache": settings.drift_cache}
    if item["kind"] == "evidently-drift" and settings.drift_cache:
        spec["cache_in"] = _fetch_cache(item["table"], warehouse, work, store, settings)
    if item["kind"] == "png-charts":
        spec["charts"] = _charts(index, store, job_id)
    return spec


def _fetch_cache(table: str, warehouse: Path, work: Path, store, settings) -> dict:
    """The cached drift reference of this snapshot, when there is one, as local files for the child."""
    from functions.reports import engines

    con = lake.connect(store, warehouse, read_only=True, memory_limit=settings.duckdb_memory_limit, threads=1)
    try:
        lake.create_reference_views(con)
        keys = engines.reference_key(con, ("udb_snapshots", table), settings.profile_sample_rows, cache_name=table,
                                     max_columns=settings.reports_max_columns)[:2]
    finally:
        con.close()
    found = {}
    for key in keys:
        try:
            path = work / "cache-in" / key.rsplit("/", 1)[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(store.get(key).data)
            found[key] = str(path)
        except NotFound:
            return {}
    return found


def _store_cache(folder: Path, store) -> None:
    """Upload a drift reference the child sampled (metadata first, then the Parquet, in the
    order it wrote them), after dropping the older entries of its table."""
    manifest = folder / "keys.json"
    if not manifest.is_file():
        return
    keys = json.loads(manifest.read_text())
    for old in list(store.list(keys[0].rsplit("/", 1)[0] + "/")):
        if old.key not in keys:
            store.delete(old.key)
    for i, key in enumerate(keys):
        store.put(key, (folder / f"{i}.bin").read_bytes(),
                  content_type="application/json" if key.endswith(".json") else "application/vnd.apache.parquet")


def _charts(index: dict, store, job_id: str) -> list[dict]:
    """The charts analyze drew (from its kpis-*.json): [{base, table, item}] for the PNGs."""
    charts = []
    for entry in index["artifacts"]:
        name = entry["name"]
        if not (name.startswith("kpis-") and name.endswith(".json")):
            continue
        for item in json.loads(store.get(store.artifact_key(job_id, name)).data):
            if item.get("chart_html") and "result" in item:
                charts.append({"base": item["chart_html"][:-len(".html")], "table": entry.get("table"), "item": item})
    return charts


def _reply(ctx: Context, event: CloudEvent, index: dict, items: list[dict], started: float) -> CloudEvent:
    seconds = round(time.perf_counter() - started, 3)
    reports = [{"id": i["id"], "kind": i["kind"], "table": i["table"], "state": i["state"], "reason": i["reason"],
                "seconds": i.get("seconds"), "artifacts": list(i["artifacts"])} for i in items]
    state = "failed" if any(i["state"] == "failed" for i in items) else "ready"
    ctx.log.info("reports of job %s %s in %.1f s", index["job_id"], state, seconds)
    store = ctx.tenant_store(index["tenant"])
    return ctx.emit(events.REPORTS_RENDERED, {"index": store.artifact_key(index["job_id"], jobindex.INDEX_JSON),
                                              "state": state, "seconds": seconds, "reports": reports}, event)

"""analyze: profile, quality and drift, KPIs and charts, summary -> artifacts + index.json.

Reads a copy of the warehouse, read-only; never writes it.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

from cloudevents.http import CloudEvent

from shared import duck, events, metrics
from shared.errors import NotFound, SourceError
from shared.runtime import Context
from shared.store import TenantStore

FUNCTION = "analyze"
USER_TABLES_SQL = ("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                   "AND database_name = current_database() ORDER BY table_name")


class Artifacts:
    """Writes one job's artifacts and remembers them for index.json."""

    def __init__(self, store: TenantStore, job_id: str):
        self.store, self.job_id, self.entries = store, job_id, []

    def put(self, name: str, body: bytes | str, media_type: str, description: str, table: str | None = None):
        data = body.encode() if isinstance(body, str) else body
        self.store.put(self.store.artifact_key(self.job_id, name), data, content_type=media_type)
        self.entries.append({"name": name, "media_type": media_type, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest(), "description": description,
                             "table": table})
        metrics.artifact_bytes.labels(self.store.tenant).inc(len(data))

    def put_json(self, name: str, value, description: str, table: str | None = None):
        self.put(name, json.dumps(value, indent=2, default=str), "application/json", description, table)


def handle(event: CloudEvent, ctx: Context) -> CloudEvent:
    data = events.event_data(event)
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    store = ctx.tenant_store(tenant)
    jobs = ctx.jobs(tenant)
    jobs.ensure(job_id, traceparent=attrs.get("traceparent"))
    jobs.move(job_id, "analyzing")

    with tempfile.TemporaryDirectory(prefix="udb-analyze-") as tmp:
        local = Path(tmp) / "warehouse.duckdb"
        try:
            store.get_to_file("warehouse.duckdb", local)
        except NotFound:
            raise SourceError(f"tenant {tenant} has no warehouse yet: sync a source first") from None
        con = duck.connect(local, read_only=True, memory_limit=ctx.settings.duckdb_memory_limit,
                           threads=ctx.settings.duckdb_threads)
        try:
            available = [r[0] for r in con.execute(USER_TABLES_SQL).fetchall()]
            if attrs["type"] == events.WAREHOUSE_LOADED:
                wanted = [t["table"] for t in data["tables"]]
            else:
                wanted = data.get("tables") or available
            missing = sorted(set(wanted) - set(available))
            if missing:
                raise SourceError(f"no such tables in the warehouse: {missing}; it has {available}")
            artifacts = Artifacts(store, job_id)
            analyse(con, wanted, artifacts, ctx)
        finally:
            con.close()

    index_key = store.artifact_key(job_id, "index.json")
    index = {"job_id": job_id, "tenant": tenant, "tables": wanted, "artifacts": artifacts.entries}
    store.put(index_key, json.dumps(index, indent=2).encode(), content_type="application/json")
    metrics.artifacts_per_job.observe(len(artifacts.entries) + 1)
    jobs.move(job_id, "completed", artifacts_index=index_key)
    return ctx.emit(events.ANALYSIS_COMPLETED, {"index": index_key, "artifacts": len(artifacts.entries) + 1,
                                                "tables": wanted}, event)


def analyse(con, tables: list[str], out: Artifacts, ctx: Context) -> None:
    from functions.analyze import kpis, profile, reports, summary

    profiles, kpi_results, drift_all = [], [], {}
    for table in tables:
        started = time.perf_counter()
        prof = profile.profile_table(con, table)
        metrics.profile_seconds.observe(time.perf_counter() - started)
        profiles.append(prof)
        out.put_json(f"profile-{table}.json", prof, f"Full-table profile of {table} (DuckDB, every row)", table)
        out.put(f"profile-{table}.html", profile.render_profile_html(prof), "text/html",
                f"Full-table profile of {table}, as a page", table)

        frame, sampling = reports.sample_frame(con, table, ctx.settings.profile_sample_rows)
        frame = reports.mask_pii(frame)
        out.put(f"ydata-{table}.html", reports.ydata_report_html(frame, f"{table}", sampling), "text/html",
                f"ydata-profiling report of {table} ({_sampling_note(sampling)})", table)
        html, result = reports.evidently_summary(frame)
        out.put(f"quality-{table}.html", html, "text/html",
                f"Evidently data summary with tests for {table} ({_sampling_note(sampling)})", table)
        out.put_json(f"quality-{table}.json", result, f"Evidently data summary results for {table}", table)

        snapshot = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'udb_snapshots' "
                               "AND table_name = ?", [table]).fetchone()[0]
        if snapshot:
            reference, _ = reports.sample_frame(con, f"udb_snapshots.{duck.quote(table)}",
                                                ctx.settings.profile_sample_rows)
            html, result = reports.evidently_drift(frame, reports.mask_pii(reference))
            verdict = reports.drift_verdict(result)
            drift_all[table] = verdict
            out.put(f"drift-{table}.html", html, "text/html",
                    f"Evidently drift of {table} against its previous snapshot", table)
            out.put_json(f"drift-{table}.json", {"verdict": verdict, "result": result},
                         f"Drift verdict per column and for {table}", table)

        results = []
        for kpi in kpis.default_kpis(con, table, prof):
            started = time.perf_counter()
            result = kpis.run_kpi(con, kpi)
            metrics.kpi_seconds.observe(time.perf_counter() - started)
            results.append({**kpi, "result": result})
            if kpi["chart"]["type"] != "indicator":
                if not any(e["name"] == kpis.PLOTLY_JS for e in out.entries):
                    # One copy per job beside the charts, not 4.5 MB inlined into each of them.
                    out.put(kpis.PLOTLY_JS, kpis.plotly_js(), "text/javascript", "plotly.js used by the charts")
                out.put(f"chart-{table}-{kpi['name']}.html", kpis.chart_html(kpi, result, kpis.PLOTLY_JS),
                        "text/html", f"Chart: {kpi['title']}", table)
        kpi_results.extend(results)
        out.put_json(f"kpis-{table}.json", results, f"KPI definitions, SQL and results for {table}", table)

    markdown, facts = summary.summarize(profiles, kpi_results, drift_all or None)
    out.put("summary.md", markdown, "text/markdown", "Written summary, every sentence from a number in summary.json")
    out.put_json("summary.json", facts, "The facts behind summary.md")


def _sampling_note(sampling: dict) -> str:
    if sampling["sampled_rows"] < sampling["total_rows"]:
        return f"sample of {sampling['sampled_rows']:,} of {sampling['total_rows']:,} rows"
    return f"all {sampling['total_rows']:,} rows"

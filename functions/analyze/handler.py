"""analyze: profile, KPIs and charts, summary -> artifacts + index.json, from DuckDB alone.

Everything here is computed by DuckDB over every row; the job is `completed` when it is done.
The heavy reports (ydata-profiling, Evidently, PNG charts) are only planned here, `pending` in
index.json and in the job document, and rendered on the side by the reports function on
`dev.udb.analysis.completed`: none of their libraries is imported on this path.

Reads the tenant's lake in place, read-only (its small catalog downloaded, the Parquet data
files read from the store); never writes it.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, ContextManager

from cloudevents.http import CloudEvent

from functions.analyze import kpis
from shared.core import events
from shared.storage import jobindex, lake
from shared.observability import metrics, telemetry
from shared.security import pii
from shared.serving.bounds import Bound, bounded_duckdb_memory
from shared.core.errors import NotFound, SourceError
from shared.storage.jobindex import Artifacts
from shared.serving.runtime import Context

FUNCTION = "analyze"
USER_TABLES_SQL = ("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                   "AND database_name = current_database() ORDER BY table_name")  # the lake, in use


def prepare(ctx: Context) -> None:
    """At the served function's start: each analysis's DuckDB instance is opened, its
    extensions loaded, ahead of the job that takes it (duck.Spares)."""
    lake.keep_spares(ctx.settings)


def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    data = events.event_data(event)
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    store = ctx.tenant_store(tenant)
    jobs = ctx.jobs(tenant)
    jobs.ensure(job_id, traceparent=attrs.get("traceparent"))
    jobs.move(job_id, "analyzing")

    settings = ctx.settings
    # The whole analysis runs under a memory bound and a deadline (shared/serving/bounds.py): a breach
    # fails the job at the step it happened in, instead of growing until the kernel kills it.
    bound = Bound(memory_mb=settings.analyze_memory_mb, deadline_s=settings.analyze_deadline_s,
                  what="analysis", log=ctx.log)
    # The DuckDB instance (the reader, locked down for the KPIs once the tables are profiled) and
    # Python share the bound; the instance keeps the share it had when the KPIs had their own.
    duck_memory = bounded_duckdb_memory(settings.duckdb_memory_limit, settings.analyze_memory_mb, 0.35)
    with bound.reasoned(), tempfile.TemporaryDirectory(prefix="udb-analyze-") as tmp, bound:
        try:
            with bound.step("download", lake.CATALOG):
                local, _ = lake.fetch_catalog(store, Path(tmp))
        except NotFound:
            raise SourceError(f"tenant {tenant} has no warehouse yet: sync a source first") from None
        with bound.step("open warehouse"):
            con = bound.watch(lake.connect(store, local, read_only=True, memory_limit=duck_memory,
                                           threads=settings.duckdb_threads), duck_memory)
            lake.create_reference_views(con)
        artifacts = None
        try:
            available = [r[0] for r in con.execute(USER_TABLES_SQL).fetchall()]
            if attrs["type"] == events.WAREHOUSE_LOADED:
                wanted = [t["table"] for t in data["tables"]]
            else:
                wanted = data.get("tables") or available
            missing = sorted(set(wanted) - set(available))
            if missing:
                raise SourceError(f"no such tables in the warehouse: {missing}; it has {available}")
            artifacts = Artifacts(store, job_id, parallel=True)
            # KPI SQL runs locked down (external access off, config locked): on this same
            # instance, once every table is profiled (kpis.lock_down), not on a second one.
            notes, facts, plan = analyse(con, wanted, artifacts, ctx, all_tables=available, bound=bound,
                                         lock_kpis=lambda: kpis.lock_down(con, store))
            with bound.step("write artifacts"):
                artifacts.flush()
        finally:
            if artifacts is not None:
                artifacts.close()
            con.close()

    index_key = store.artifact_key(job_id, jobindex.INDEX_JSON)
    # What the analysis was allowed and what it took (resident MB of this process and the
    # children it started, at its start and at its peak; the bound is on the difference).
    bounds = {"memory_mb": settings.analyze_memory_mb, "deadline_s": settings.analyze_deadline_s,
              "start_rss_mb": bound.start_mb, "peak_rss_mb": bound.peak_mb, "seconds": round(bound.elapsed, 3)}
    index = {"job_id": job_id, "tenant": tenant, "tables": wanted, "artifacts": artifacts.entries, "notes": notes,
             "reports": plan, "bounds": bounds}
    jobindex.save(store, index, facts=facts)
    metrics.artifacts_per_job.observe(len(index["artifacts"]) + 1)
    jobs.move(job_id, "completed", artifacts_index=index_key, reports=jobindex.job_reports(plan))
    return ctx.emit(events.ANALYSIS_COMPLETED, {"index": index_key, "artifacts": len(index["artifacts"]) + 1,
                                                "tables": wanted}, event)


def analyse(con, tables: list[str], out: Artifacts, ctx: Context, *, kpi_con=None,
            all_tables: list[str] | None = None, bound: Bound | None = None,
            lock_kpis=None) -> tuple[list[dict], list[dict], list[dict]]:
    """Every artifact of one job but the index, from DuckDB: per table the profile, text
    statistics for document fragments and drift against the previous snapshot; then, on the
    KPI connection, the default KPIs of every table, the tenant's own KPIs, every chart (HTML)
    and the summary. Returns (notes for the index, the summary's facts, the reports planned for
    the reports function).

    The KPIs run on `kpi_con` (default: `con`), after `lock_kpis()` when given: the handler
    locks its one connection down there (kpis.lock_down), so no KPI runs unlocked and the
    profiler keeps the settings it changes (threads) until then.

    Each step runs in `bound` (a breach fails it with the step's name); without one, unbounded."""
    bound = bound if bound is not None else Bound(memory_mb=0, deadline_s=0)
    with bound.step("import", "analysis libraries"):
        from functions.analyze import drift, profile, summary, textstats
        from shared.analysis import kpi_defs

    settings = ctx.settings
    policy = pii.Policy.of(settings)  # the masking policy of every profile and KPI of the job
    kpi_con = kpi_con if kpi_con is not None else con
    # One catalogue of personal-data columns for every KPI of the job (column lineage masks
    # what is computed from them); it learns each table's verdicts from its profile below.
    limits: dict[str, Any] = {"timeout_ms": settings.kpi_timeout_ms, "max_rows": settings.kpi_max_rows,
              "max_bytes": settings.kpi_max_bytes, "max_cell_chars": settings.kpi_max_cell_chars,
              "personal": kpis.PersonalColumns(kpi_con, policy=policy), "policy": policy}
    profiles, kpi_results, drift_all, text_all, notes = [], [], {}, [], []
    charts: list[dict] = []  # {base, kpi, result, table}
    kpis_by_table: dict[str, list[dict]] = {}
    snapshots = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'udb_snapshots' "
                                           "UNION ALL SELECT view_name FROM duckdb_views() "
                                           "WHERE schema_name = 'udb_snapshots'").fetchall()}
    for table in tables:
        with telemetry.stage("profile", table=table), bound.step("profile", table):
            started = time.perf_counter()
            # Column batches keep DuckDB's memory flat on wide tables; the bound checks itself
            # between batches and names the batch it stopped in.
            def batch_step(first: int, end: int, total: int, table: str = table) -> ContextManager:
                return bound.step("profile", f"{table} columns {first + 1}-{end} of {total:,}")

            prof = profile.profile_table(con, table, batch_columns=profile.batch_columns_for(bound.duckdb_memory),
                                         pii=policy, step=batch_step)
            metrics.profile_seconds.observe(time.perf_counter() - started)
        if prof["correlations"].get("note"):
            notes.append({"kind": "correlations_capped", "message": f"{table}: {prof['correlations']['note']}"})
        metrics.profile_coverage.labels("duckdb").observe(1.0)  # the DuckDB profile reads every row
        profiles.append(prof)
        limits["personal"].learn(prof)
        with bound.step("write profile", table):
            out.put_json(f"profile-{table}.json", prof, f"Full-table profile of {table} (DuckDB, every row)", table)
            out.put(f"profile-{table}.html", profile.render_profile_html(prof), "text/html",
                    f"Full-table profile of {table}, as a page", table)
        if textstats.is_document_table(prof["column_profiles"]):
            with bound.step("text statistics", table):
                stats = textstats.text_stats(con, table)
            text_all.append(stats)
            out.put_json(f"text-stats-{table}.json", stats,
                         f"Text statistics of the document fragments in {table} (documents, elements by type, "
                         f"text lengths, top terms)", table)
            out.put(f"text-stats-{table}.html", textstats.render_text_stats_html(stats), "text/html",
                    f"Text statistics of the document fragments in {table}, as a page", table)

        # Drift against the previous snapshot: the verdict from DuckDB over every row (drift.py);
        # Evidently's visual page is rendered on the side by the reports function.
        with bound.step("drift", table):
            verdict = drift.snapshot_drift(con, table)  # None on a first load: nothing to compare with
        if verdict is not None:
            drift_all[table] = verdict
            out.put_json(f"drift-{table}.json", verdict,
                         f"Drift of {table} against its previous snapshot, per column (DuckDB, every row, "
                         f"Evidently's default tests)", table)

    if lock_kpis is not None:
        with bound.step("lock down", "for KPIs"):
            lock_kpis()
    for table, prof in zip(tables, profiles, strict=True):
        results = []
        for kpi in kpis.default_kpis(con, table, prof):
            with bound.step("kpi", f"{table} {kpi['name']}"):
                item = _run_one(kpi_con, kpi, limits)
            results.append(item)
            if "error" not in item:
                charts.append({"base": f"chart-{table}-{kpi['name']}", "item": item, "table": table})
        kpis_by_table[table] = results
        kpi_results.extend(results)

    custom = []
    definitions = kpi_defs.KpiDefinitions(out.store).list()
    if definitions:
        from shared.security import sqlguard  # sqlglot only for a tenant with KPI definitions
    for definition in definitions:
        kpi = {"name": definition["name"], "title": definition.get("title") or definition["name"],
               "table": None, "chart": definition["chart"], "sql": definition["sql"], "custom": True}
        try:
            # Checked again at run time: the tables may have changed since it was stored.
            kpi["sql"] = sqlguard.check_select(definition["sql"], all_tables or tables).sql
        except sqlguard.SQLRejected as exc:
            custom.append({**kpi, "error": str(exc)})
            continue
        with bound.step("kpi", definition["name"]):
            item = _run_one(kpi_con, kpi, limits)
        if "error" not in item:
            problem = kpi_defs.check_result_columns(definition, item["result"]["columns"])
            if problem:
                item["error"] = problem
        custom.append(item)
        if "error" not in item:
            charts.append({"base": f"chart-kpi-{definition['name']}", "item": item, "table": None})

    with bound.step("charts", f"{len(charts)} chart(s)"):
        _write_charts(charts, out, ctx, notes)
    for table, results in kpis_by_table.items():
        out.put_json(f"kpis-{table}.json", results, f"KPI definitions, SQL, results and charts for {table}", table)
    if definitions:
        out.put_json("kpis-custom.json", custom, "The tenant's own KPIs: definition, guarded SQL, result or the "
                                                 "reason it did not run, and charts")
        failed = [c["name"] for c in custom if "error" in c]
        if failed:
            notes.append({"kind": "kpi_failed", "message": f"{len(failed)} tenant KPI(s) did not run: "
                                                           + ", ".join(failed) + " (reasons in kpis-custom.json)"})

    capped = [item["name"] for item in kpi_results + custom
              if (item.get("result") or {}).get("capped_by") == "bytes" or (item.get("result") or {}).get("cells_cut")]
    if capped:
        notes.append({"kind": "kpi_capped", "message": (
            f"{len(capped)} KPI result(s) cut to the byte cap ({settings.kpi_max_bytes:,} bytes per result, "
            f"{settings.kpi_max_cell_chars:,} characters per cell): " + ", ".join(capped))})
    with bound.step("summary"):
        markdown, facts = summary.summarize(profiles, kpi_results, drift_all or None, custom_kpis=custom,
                                            text_stats=text_all)
    out.put("summary.md", markdown, "text/markdown", "Written summary, every sentence from a number in summary.json")
    out.put_json("summary.json", facts, "The facts behind summary.md")
    plan = jobindex.plan_reports(tables, snapshots=snapshots & set(tables), charts=len(charts),
                                 chart_png=settings.chart_png)
    return notes, facts["facts"], plan


@telemetry.staged("kpi", lambda con, kpi, limits: {"kpi": kpi["name"]})
def _run_one(con, kpi: dict, limits: dict) -> dict:
    """A KPI definition with its result, or with the reason it has none (never raises for bad SQL)."""
    started = time.perf_counter()
    try:
        result = kpis.run_kpi(con, kpi, **limits)
    except kpis.KpiError as exc:
        return {**kpi, "error": str(exc)}
    finally:
        metrics.kpi_seconds.observe(time.perf_counter() - started)
    return {**kpi, "result": result}


@telemetry.staged("render", lambda charts, *_: {"charts": len(charts)})
def _write_charts(charts: list[dict], out: Artifacts, ctx: Context, notes: list[dict]) -> None:
    """Each chart as HTML (plotly.js linked, one copy per job); the reports function renders
    the same figures to PNG."""
    if not charts:
        return
    # One copy per job beside the charts, not 4.5 MB inlined into each of them.
    out.put(kpis.PLOTLY_JS, kpis.plotly_js_bytes(), "text/javascript", "plotly.js used by the charts")
    for chart in charts:
        item = chart["item"]
        # The figure as JSON for plotly.js: no Plotly Python object on this path (building and
        # validating one, template included, cost ~0.3 s per chart).
        page = kpis.chart_html(item, item["result"], plotlyjs=kpis.PLOTLY_JS)
        out.put(f"{chart['base']}.html", page, "text/html", f"Chart: {item['title']}", chart["table"])
        item["chart_html"] = f"{chart['base']}.html"

"""Quality and drift of a table against a shifted copy (amount x 1.25): UDB vs Evidently.

UDB does what the analyze function does for quality and drift: the exact full-table profile
in DuckDB (counts, nulls, distincts, min/max, mean, quantiles, duplicates: every statistic of
Evidently's data summary, over every row), then Evidently's summary and drift reports on
reproducible 50,000-row samples (UDB_REPORT_SAMPLE_ROWS), the drift reference built and cached
as on a first analysis (a cache miss). Evidently gets both whole tables as pandas, one Report
with DataSummaryPreset and DataDriftPreset and its tests, rendered to HTML and JSON.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bench import common

CASE = "quality"
TITLE = "quality + drift, table vs shifted copy (UDB vs Evidently summary + drift presets)"
TOOLS = ["udb", "evidently"]


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    db = common.make_table(data / f"table-{rows}.duckdb", rows)
    return {"rows": rows, "db": str(db), "described": f"{rows:,} vs {rows:,} rows x {common.COLUMNS} columns: {db}"}


def _connect(db: str):
    import duckdb

    # UDB's defaults: UDB_DUCKDB_THREADS=2, UDB_DUCKDB_MEMORY_LIMIT=1GB.
    return duckdb.connect(db, read_only=True, config={"threads": 2, "memory_limit": "1GB"})


def run(tool: str, params: dict, run_dir: Path) -> dict:
    started = time.perf_counter()
    if tool == "udb":
        from functions.analyze import profile
        from functions.reports import engines as reports
        from shared.core.settings import Settings
        from shared.storage.store import LocalStore, TenantStore

        sample = Settings.from_env().profile_sample_rows
        con = _connect(params["db"])
        full = profile.profile_table(con, "bench")
        frame, _ = reports.sample_frame(con, "bench", sample)
        frame = reports.prepare_frame(frame)
        summary_html, summary = reports.evidently_summary(frame)
        reference, info = reports.reference_frame(con, "bench_shifted", sample,
                                                  TenantStore(LocalStore(run_dir / "store"), "bench"), cache_name="bench")
        drift_html, drift = reports.evidently_drift(frame, reference)
        verdict = reports.drift_verdict(drift)
        seconds = time.perf_counter() - started
        rows = full["rows"]
        note = f"drifted: {', '.join(verdict['drifted_columns']) or 'none'}; reports on {sample:,}-row samples"
    else:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset, DataSummaryPreset

        con = _connect(params["db"])
        current = con.execute("SELECT * FROM bench").df()
        reference = con.execute("SELECT * FROM bench_shifted").df()
        snapshot = Report([DataSummaryPreset(), DataDriftPreset()], include_tests=True).run(
            current_data=Dataset.from_pandas(current, data_definition=DataDefinition()),
            reference_data=Dataset.from_pandas(reference, data_definition=DataDefinition()))
        page = snapshot.get_html_str(as_iframe=False)
        result = json.loads(snapshot.json())
        seconds = time.perf_counter() - started
        rows = len(current)
        from functions.reports import engines as reports  # after the clock: only to name the drifted columns

        verdict = reports.drift_verdict(result)
        note = f"drifted: {', '.join(verdict['drifted_columns']) or 'none'}; {len(page) / 1e6:.1f} MB of HTML"
    con.close()
    return {"seconds": seconds, "rows": rows, "note": note}

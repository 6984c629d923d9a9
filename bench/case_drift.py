"""Drift of a table against its previous snapshot over every row: UDB (DuckDB) vs Evidently.

The previous snapshot is the generated 10-column table (common.TABLE_SQL); the current table
is the same rows after three changes: `amount` scaled by 1.25 (a numeric shift), a quarter of
the rows moved to region 'north' (a categorical shift), and `discount` nudged by 0.001 (a
shift too small to count). UDB runs functions/analyze/drift.py over every row in DuckDB;
Evidently gets both whole tables as pandas and runs DataDriftPreset (its default tests and
thresholds) to HTML and JSON. Both must name the same drifted columns (checked after the runs).
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from bench import common

CASE = "drift"
TITLE = "drift over every row, table vs its previous snapshot (UDB DuckDB vs Evidently DataDriftPreset)"
TOOLS = ["udb", "evidently"]
# The current table: the snapshot with a numeric shift, a categorical shift and a tiny nudge.
DRIFTED_SQL = """
CREATE OR REPLACE TABLE bench_current AS SELECT * REPLACE (
    round(amount * 1.25, 2) AS amount,
    CASE WHEN order_id % 4 = 0 THEN 'north' ELSE region END AS region,
    discount + 0.001 AS discount)
FROM bench
"""
EXPECTED = ["region", "amount"]  # what both tools find (column order of the table)


def make(path: Path, rows: int) -> Path:
    """A DuckDB file with `bench` (the snapshot) and `bench_current`; kept when already made."""
    return common.make_pair(path, rows, "bench_current", DRIFTED_SQL)


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    db = make(data / f"drift-{rows}.duckdb", rows)
    return {"rows": rows, "db": str(db), "described": f"{rows:,} vs {rows:,} rows x {common.COLUMNS} columns: {db}"}


def _connect(db: str):
    import duckdb

    # UDB's defaults: UDB_DUCKDB_THREADS=2, UDB_DUCKDB_MEMORY_LIMIT=1GB.
    return duckdb.connect(db, read_only=True, config={"threads": 2, "memory_limit": "1GB"})


def evidently_drifted(current, reference) -> tuple[list[str], dict, str]:
    """Evidently's DataDriftPreset on two whole frames: (drifted columns in column order,
    {column: (method, score)}, the HTML page)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        current_data=Dataset.from_pandas(current, data_definition=DataDefinition()),
        reference_data=Dataset.from_pandas(reference, data_definition=DataDefinition()))
    page = snapshot.get_html_str(as_iframe=False)
    result = json.loads(snapshot.json())
    scores, failed = {}, set()
    for metric in result["metrics"]:
        config = metric.get("config") or {}
        if config.get("type", "").endswith(":ValueDrift"):
            scores[config["column"]] = (config.get("method"), metric.get("value"))
    for test in result.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith(":ValueDrift") and test.get("status") == "FAIL":
            failed.add(params["column"])
    return [c for c in current.columns if c in failed], scores, page


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(tool: str, params: dict, run_dir: Path) -> dict:
    # CPU seconds beside the wall clock: on a shared machine the wall clock measures the queue
    # for the cores as much as the work.
    started, cpu = time.perf_counter(), _cpu()
    if tool == "udb":
        from functions.analyze import drift

        con = _connect(params["db"])
        result = drift.table_drift(con, "bench_current", "bench")
        seconds = time.perf_counter() - started
        drifted = result["drifted_columns"]
        rows = result["rows"]["current"]
        note = f"drifted: {', '.join(drifted) or 'none'}; every row of both tables; {_cpu() - cpu:.2f} CPU s"
    else:
        con = _connect(params["db"])
        current = con.execute("SELECT * FROM bench_current").df()
        reference = con.execute("SELECT * FROM bench").df()
        drifted, _, page = evidently_drifted(current, reference)
        seconds = time.perf_counter() - started
        rows = len(current)
        note = f"drifted: {', '.join(drifted) or 'none'}; {len(page) / 1e6:.1f} MB of HTML; {_cpu() - cpu:.2f} CPU s"
    con.close()
    return {"seconds": seconds, "rows": rows, "note": note, "drifted": drifted}


def check(measured: dict[str, list[dict]]) -> list[str]:
    """Every run of both tools named the same drifted columns (and the expected ones)."""
    failures = []
    for tool, runs in measured.items():
        for i, result in enumerate(runs):
            if "error" not in result and result.get("drifted") != EXPECTED:
                failures.append(f"{CASE} / {tool} run {i + 1}: drifted {result.get('drifted')}, expected {EXPECTED}")
    return failures

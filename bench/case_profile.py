"""Profile of a 10-column table in a DuckDB file: UDB's full-table profile vs ydata-profiling
(minimal and full), the steps of bench/analysis.py. ydata reads the table into pandas first,
as a user of it must; that load is part of its time."""
from __future__ import annotations

import time
from pathlib import Path

from bench import common

CASE = "profile"
TITLE = "profile, 10 columns (UDB vs ydata-profiling minimal and full)"
TOOLS = ["udb", "ydata-minimal", "ydata-full"]
STEPS = {"udb": "udb_profile", "ydata-minimal": "ydata_minimal", "ydata-full": "ydata_full"}


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    db = common.make_table(data / f"table-{rows}.duckdb", rows)
    return {"rows": rows, "db": str(db), "described": f"{rows:,} rows x {common.COLUMNS} columns: {db}"}


def run(tool: str, params: dict, run_dir: Path) -> dict:
    started = time.perf_counter()
    from bench import analysis

    result = analysis.run_step(STEPS[tool], Path(params["db"]), run_dir)
    return {"seconds": time.perf_counter() - started, "rows": result["rows"], "note": result["note"]}

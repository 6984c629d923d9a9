"""CSV file -> warehouse: `udb run --no-analyze` vs dlt reading the file with pyarrow into duckdb."""
from __future__ import annotations

import time
from pathlib import Path

from bench import common

CASE = "csv"
TITLE = "CSV file -> warehouse (UDB vs dlt, pyarrow into duckdb)"
TOOLS = ["udb", "dlt"]


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    path = common.make_csv(data / f"sales-{rows}.csv", rows)
    return {"rows": rows, "csv": str(path),
            "described": f"{rows:,} rows x {common.COLUMNS} columns, {path.stat().st_size / 1e6:.0f} MB: {path}"}


def run(tool: str, params: dict, run_dir: Path) -> dict:
    if tool == "udb":
        return common.udb_load(params["csv"], run_dir)
    started = time.perf_counter()
    import dlt
    import pyarrow.csv as pacsv

    @dlt.resource(name="sales", write_disposition="replace")
    def sales():
        # Streamed in 16 MB blocks: the whole file never sits in memory as one table.
        with pacsv.open_csv(params["csv"], read_options=pacsv.ReadOptions(block_size=16 << 20)) as reader:
            yield from reader

    common.dlt_pipeline(run_dir).run(sales())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": common.dlt_rows(run_dir, "sales")}

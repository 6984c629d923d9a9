"""The core answer on a big file: `udb run FILE --no-reports` on 1,000,000 rows x 10 columns
(the csv case's table; --quick: 10,000 rows), embedded, timed from the process start to the
core answer line (discover, sync, load, analyze from DuckDB alone). Goal (issue 17): <= 5 s."""
from __future__ import annotations

import sys
from pathlib import Path

from bench import common
from bench.case_firstanswer import rows_of, timed_run

CASE = "core1m"
TITLE = "udb run --no-reports on a 10-column CSV: wall to the core answer, embedded (process start included)"
TOOLS = ["udb-core"]


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    path = common.make_csv(data / f"sales-{rows}.csv", rows)
    return {"rows": rows, "csv": str(path),
            "described": f"{rows:,} rows x {common.COLUMNS} columns, {path.stat().st_size / 1e6:.0f} MB"}


def run(tool: str, params: dict, run_dir: Path) -> dict:
    argv = [sys.executable, "-m", "frontends.cli", "run", params["csv"], "--tenant", "bench", "--no-reports"]
    lines, code = timed_run(argv, common.child_env(run_dir))
    if code != 0:
        raise SystemExit(f"udb run failed with exit code {code}: {[line for _, line in lines][-3:]}")
    core = next(t for t, line in lines if line.startswith("completed in "))
    return {"rows": rows_of(lines), "seconds": core, "rss_is_own": False,
            "note": "wall to the core answer, process start included"}

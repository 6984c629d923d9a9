"""A tenant's warehouse as it grows (issue 21): N different 1M-row CSVs loaded into one tenant,
embedded, one after the other, then

- each load's time (the job's `load` stage: lease, catalog, staged parts into the lake, upload),
- a 1,000-row file loaded into the big tenant, and into an empty one,
- a re-sync of the first table: the bytes it adds to the store (lake files + catalog; the
  staged parts, which prune deletes after UDB_STAGING_RETENTION_DAYS, counted apart),
- the analysis of that small table (the job's `analyze` stage, --no-reports) in the big tenant
  and in the empty one.

N is BENCH_GROWTH_TABLES (default 20, the issue's size: 20 tables, 20M rows); rows per table are
the csv case's (1,000,000; --quick: 10,000). The tables are hard links of one generated CSV under
N names, so each is its own table. One run is one process doing all of it: its `seconds` is the
sum of the N loads, the details are in the result's `growth` (printed by `report`).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bench import common

CASE = "growth"
TITLE = "a growing tenant: N 1M-row loads, a small load and an analysis big vs empty, re-sync bytes"
TOOLS = ["udb"]
TENANT, EMPTY = "bench", "empty"


def tables() -> int:
    return int(os.environ.get("BENCH_GROWTH_TABLES", "20"))


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    n = tables()
    source = common.make_csv(data / f"sales-{rows}.csv", rows)
    folder = data / f"growth-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, n + 1):
        path = folder / f"t{i:02d}.csv"
        if not path.exists():
            os.link(source, path)
        paths.append(str(path))
    small = folder / "small.csv"
    if not small.exists():
        common.make_csv(data / "sales-1000.csv", 1000)
        os.link(data / "sales-1000.csv", small)
    # --no-analyze leaves each job `loaded` (live): the per-tenant cap on live jobs must not stop
    # a tenant from being filled.
    return {"rows": rows * n, "csvs": paths, "env": {"UDB_MAX_CONCURRENT_JOBS": str(n + 10)}, "small": str(small), "tables": n, "rows_per_table": rows,
            "described": f"{n} tables x {rows:,} rows x {common.COLUMNS} columns ({source.stat().st_size / 1e6:.0f} MB "
                         f"each), then a 1,000-row table"}


def _udb_run(hint: str, tenant: str, *args: str) -> dict:
    """`udb run` in this process; the job document of the run (its stage_seconds)."""
    from frontends import cli
    from shared.core.settings import Settings
    from shared.storage.backends import open_store

    before = time.perf_counter()
    code = cli.main(["run", hint, "--tenant", tenant, *args])
    wall = time.perf_counter() - before
    if code != 0:
        raise SystemExit(f"udb run {hint} failed with exit code {code}")
    store = open_store(Settings.from_env())
    docs = [json.loads(store.get(i.key).data) for i in store.list(f"tenants/{tenant}/jobs/") if i.key.endswith(".json")]
    doc = max(docs, key=lambda d: d["created_at"])
    return {"wall": wall, "stages": doc["stage_seconds"], "tables": doc["tables"]}


def _bytes(tenant: str, prefix: str) -> int:
    from shared.core.settings import Settings
    from shared.storage.backends import open_store
    return sum(i.size for i in open_store(Settings.from_env()).list(f"tenants/{tenant}/{prefix}"))


def run(tool: str, params: dict, run_dir: Path) -> dict:
    import io
    from contextlib import redirect_stdout

    quiet = io.StringIO()
    loads, sizes = [], []
    os.environ.setdefault("UDB_LOG_LEVEL", "WARNING")
    with redirect_stdout(quiet):
        for path in params["csvs"]:
            result = _udb_run(path, TENANT, "--no-analyze")
            loads.append(result["stages"]["load"])
            sizes.append({"lake": _bytes(TENANT, "lake/"), "catalog": _bytes(TENANT, "catalog.ducklake")})
        # A 1,000-row table into the big tenant, analysed; the same into an empty tenant.
        big = _udb_run(params["small"], TENANT, "--no-reports")
        empty = _udb_run(params["small"], EMPTY, "--no-reports")
        # Re-sync the first table: what it adds to the store.
        before = {"lake": _bytes(TENANT, "lake/"), "catalog": _bytes(TENANT, "catalog.ducklake"),
                  "staging": _bytes(TENANT, "staging/")}
        resync = _udb_run(params["csvs"][0], TENANT, "--no-analyze")
        after = {"lake": _bytes(TENANT, "lake/"), "catalog": _bytes(TENANT, "catalog.ducklake"),
                 "staging": _bytes(TENANT, "staging/")}
    growth = {
        "loads_s": loads,
        "lake_bytes": [s["lake"] for s in sizes],
        "catalog_bytes": [s["catalog"] for s in sizes],
        "small_load_big_s": big["stages"]["load"], "small_load_empty_s": empty["stages"]["load"],
        "small_analyze_big_s": big["stages"]["analyze"], "small_analyze_empty_s": empty["stages"]["analyze"],
        "resync_load_s": resync["stages"]["load"],
        "resync_added_lake_bytes": after["lake"] - before["lake"],
        "resync_added_catalog_bytes": after["catalog"] - before["catalog"],
        "resync_added_staging_bytes": after["staging"] - before["staging"],
        "table_parquet_bytes": sizes[0]["lake"],
    }
    with redirect_stdout(quiet):
        rows = sum(common.warehouse_rows(common.udb_warehouse(run_dir, TENANT), table=f"growth_{params['rows_per_table']}__t{i:02d}")
                   for i in range(1, len(loads) + 1))
    return {"seconds": sum(loads), "rows": rows, "growth": growth,
            "note": f"sum of {len(loads)} loads' load stage"}


def report(measured: dict) -> None:
    """Print each run's figures (the harness prints only seconds and rows)."""
    for i, run in enumerate(measured.get("udb", [])):
        g = run.get("growth")
        if not g:
            continue
        loads = g["loads_s"]
        print(f"   run {i + 1}: load stage per 1M-row table (s): {', '.join(f'{s:.2f}' for s in loads)}")
        print(f"   run {i + 1}: last/first load = {loads[-1] / loads[0]:.2f}; lake after the last: "
              f"{g['lake_bytes'][-1] / 1e6:.1f} MB, catalog {g['catalog_bytes'][-1] / 1e6:.2f} MB")
        print(f"   run {i + 1}: 1,000-row load: big tenant {g['small_load_big_s']:.3f} s, empty {g['small_load_empty_s']:.3f} s")
        print(f"   run {i + 1}: analysis of the 1,000-row table: big {g['small_analyze_big_s']:.3f} s, "
              f"empty {g['small_analyze_empty_s']:.3f} s (+{g['small_analyze_big_s'] - g['small_analyze_empty_s']:.3f} s)")
        print(f"   run {i + 1}: re-sync of one table: load {g['resync_load_s']:.2f} s, adds lake "
              f"{g['resync_added_lake_bytes'] / 1e6:.1f} MB (one table's Parquet: {g['table_parquet_bytes'] / 1e6:.1f} MB) "
              f"+ catalog {g['resync_added_catalog_bytes'] / 1e6:+.2f} MB; staging +{g['resync_added_staging_bytes'] / 1e6:.1f} MB "
              f"(pruned after its retention)")

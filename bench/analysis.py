"""The UDB profiler beside ydata-profiling and Evidently, on one generated table (default
1,000,000 rows x 10 columns), in one run.

Each step runs in its own Python process, so its peak RSS is its own (os.wait4 reports the
child's ru_maxrss) and no library's import or cache helps another step. Per step: the rows
the tool saw, the seconds spent loading the data into pandas (DuckDB -> DataFrame; the
DuckDB steps need none), the seconds the tool itself took, and the peak RSS of the process.

Steps:
  duckdb_summarize    DuckDB's SUMMARIZE (the floor: one scan, approximate)
  udb_profile         functions/analyze/profile/ profile_table(): every statistic of
                      docs/profile-schema.md over the whole table
  ydata_minimal       ydata-profiling ProfileReport(minimal=True).to_html() on the whole table
  ydata_full          ydata-profiling ProfileReport().to_html() on the whole table
  evidently_summary   Evidently Report([DataSummaryPreset()], include_tests=True) on the whole table
  evidently_drift     Evidently Report([DataDriftPreset()], include_tests=True), whole table vs a
                      shifted copy of it
  udb_drift_first     UDB's drift check as the analysis runs it: reference = the shifted copy,
                      sampled (UDB_REPORT_SAMPLE_ROWS, default 50,000) and PII-masked; the
                      reference cache is empty (miss)
  udb_drift_second    the same check again: the reference comes from the cache (hit)

Usage: python bench/analysis.py [--rows N] [--steps a,b,...] [--out DIR] [--timeout S]
Prints one table; the raw numbers go to DIR/results.json (DIR defaults to .udb/bench-analysis).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

STEPS = ["duckdb_summarize", "udb_profile", "ydata_minimal", "ydata_full", "evidently_summary",
         "evidently_drift", "udb_drift_first", "udb_drift_second"]
SAMPLE_ROWS = 50_000

# The table (1M rows x 10 columns by default) and its shifted copy come from bench/common.py.
make_table = common.make_table


# ---------------------------------------------------------------- one step, in a child process


def _frame(con, table: str):
    started = time.perf_counter()
    df = con.execute(f"SELECT * FROM {table}").df()
    return df, time.perf_counter() - started


def run_step(step: str, db: Path, out: Path) -> dict:
    """Run one step in this process and return {rows, load_s, tool_s, note}."""
    import warnings

    import duckdb

    warnings.simplefilter("ignore")
    os.environ.setdefault("YDATA_PROFILING_NO_ANALYTICS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    con = duckdb.connect(str(db), read_only=True, config={"threads": 2, "memory_limit": "4GB"})
    rows = con.execute("SELECT count(*) FROM bench").fetchone()[0]
    load_s, note = 0.0, ""
    if step == "duckdb_summarize":
        started = time.perf_counter()
        con.execute("SUMMARIZE bench").fetchall()
        tool_s = time.perf_counter() - started
    elif step == "udb_profile":
        from functions.analyze.profile import profile_table

        # 1 GB is UDB's default per-connection memory limit (UDB_DUCKDB_MEMORY_LIMIT).
        con.execute("SET memory_limit = '1GB'")
        started = time.perf_counter()
        profile = profile_table(con, "bench")
        tool_s = time.perf_counter() - started
        (out / "udb_profile.json").write_text(json.dumps(profile))
        note = f"{len(profile['alerts'])} alerts, {profile['methods']['quantiles']}"
    elif step in ("ydata_minimal", "ydata_full"):
        from ydata_profiling import ProfileReport

        df, load_s = _frame(con, "bench")
        started = time.perf_counter()
        page = ProfileReport(df, minimal=step == "ydata_minimal", progress_bar=False).to_html()
        tool_s = time.perf_counter() - started
        note = f"{len(page) / 1e6:.1f} MB of HTML"
    elif step == "evidently_summary":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataSummaryPreset

        df, load_s = _frame(con, "bench")
        started = time.perf_counter()
        snapshot = Report([DataSummaryPreset()], include_tests=True).run(
            current_data=Dataset.from_pandas(df, data_definition=DataDefinition()))
        snapshot.get_html_str(as_iframe=False)
        tool_s = time.perf_counter() - started
    elif step == "evidently_drift":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        df, load_a = _frame(con, "bench")
        ref, load_b = _frame(con, "bench_shifted")
        load_s = load_a + load_b
        started = time.perf_counter()
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            current_data=Dataset.from_pandas(df, data_definition=DataDefinition()),
            reference_data=Dataset.from_pandas(ref, data_definition=DataDefinition()))
        snapshot.get_html_str(as_iframe=False)
        tool_s = time.perf_counter() - started
        rows = 2 * rows
    elif step in ("udb_drift_first", "udb_drift_second"):
        from functions.reports import engines as reports
        from shared.storage.store import LocalStore, TenantStore

        import evidently.presets  # noqa: F401  (imported before the clock starts, as in the other steps)

        store = TenantStore(LocalStore(out / "store"), "bench")
        started = time.perf_counter()
        current, _ = reports.sample_frame(con, "bench", SAMPLE_ROWS)
        current = reports.prepare_frame(current)
        reference, info = reports.reference_frame(con, "bench_shifted", SAMPLE_ROWS, store, cache_name="bench")
        reference_s = time.perf_counter() - started
        _, result = reports.evidently_drift(current, reference)
        verdict = reports.drift_verdict(result)
        tool_s = time.perf_counter() - started
        rows = 2 * min(rows, SAMPLE_ROWS)
        note = (f"reference cache {info['cache']}, reference ready in {info['seconds']:.2f} s "
                f"(with current sample {reference_s:.2f} s); drifted: {', '.join(verdict['drifted_columns']) or 'none'}")
    else:
        raise SystemExit(f"unknown step {step!r}; known: {', '.join(STEPS)}")
    con.close()
    return {"rows": rows, "load_s": round(load_s, 3), "tool_s": round(tool_s, 3), "note": note}


def run_child(step: str, db: Path, out: Path, timeout: float) -> dict:
    """Run one step in a fresh interpreter (bench/common.run_child: its own peak RSS)."""
    result_file = out / f"{step}.result.json"
    result_file.unlink(missing_ok=True)
    run = common.run_child([sys.executable, __file__, "--child", step, "--db", str(db), "--out", str(out)],
                           log=out / f"{step}.log", timeout=timeout)
    if "error" in run or not result_file.exists():
        return {"step": step, "error": run.get("error", "no result written"), "rss_mb": run["peak_rss_mb"]}
    result = json.loads(result_file.read_text())
    return {"step": step, **result, "process_s": round(run["process_s"], 2), "rss_mb": run["peak_rss_mb"]}


def print_table(results: list[dict], rows: int, columns: int) -> None:
    print(f"\nanalysis benchmark: {rows:,} rows x {columns} columns, {os.cpu_count()} cores, "
          f"one process per step\n")
    head = f"{'step':<20} {'rows seen':>11} {'load s':>8} {'tool s':>8} {'peak RSS MB':>12}  note"
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['step']:<20} {'':>11} {'':>8} {'':>8} {r.get('rss_mb', 0):>12,.0f}  ERROR {r['error']}")
            continue
        print(f"{r['step']:<20} {r['rows']:>11,} {r['load_s']:>8.2f} {r['tool_s']:>8.2f} {r['rss_mb']:>12,}  {r['note']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--out", type=Path, default=REPO / ".udb" / "bench-analysis")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per step")
    parser.add_argument("--child")
    parser.add_argument("--db", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        result = run_step(args.child, args.db, args.out)
        (args.out / f"{args.child}.result.json").write_text(json.dumps(result))
        return 0
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "store"
    if store.exists():
        import shutil
        shutil.rmtree(store)  # the first drift check must start with an empty cache
    db = args.out / "bench.duckdb"
    started = time.perf_counter()
    make_table(db, args.rows)
    print(f"generated {args.rows:,} rows x 10 columns (+ a shifted copy) in {time.perf_counter() - started:.1f} s: {db}")
    results = []
    for step in steps:
        result = run_child(step, db, args.out, args.timeout)
        results.append(result)
        print(f"  {step}: " + (result.get("error") or f"{result['tool_s']:.2f} s, {result['rss_mb']:,} MB"),
              flush=True)
    print_table(results, args.rows, 10)
    (args.out / "results.json").write_text(json.dumps({"rows": args.rows, "columns": 10, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())

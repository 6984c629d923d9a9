"""UDB beside the tools users would glue together instead: dlt, ydata-profiling, Evidently.

    python -m bench.run [--quick] [--runs N] [--cases csv,postgres,...] [--out FILE]

Cases (one module each, bench/case_<name>.py):
  csv        CSV file -> warehouse: UDB vs dlt (pyarrow batches into duckdb)
  postgres   PostgreSQL table -> warehouse: UDB vs dlt sql_database (pyarrow backend)
  rest       REST API over 2,000 pages from a local server -> warehouse: UDB vs dlt rest_api
  profile    profile of a 10-column table: UDB vs ydata-profiling minimal and full
  quality    quality and drift, table vs shifted table: UDB vs Evidently DataSummaryPreset + DataDriftPreset
  drift      drift over every row, table vs its previous snapshot: UDB (DuckDB) vs Evidently DataDriftPreset
  discover   discover -> analysis.completed for a CSV: UDB embedded and through the running stack
  firstanswer  `udb run` on a 1,461-row weather CSV: wall to the core answer and to every report
  core1m     `udb run --no-reports` on 1M rows x 10 columns: wall to the core answer, embedded
  growth     N 1M-row tables into one tenant (BENCH_GROWTH_TABLES, default 20): each load, a 1,000-row
             load and an analysis big vs empty tenant, the bytes a re-sync adds

Each case runs its tools alternately (the order rotates every round), RUNS times each (default
3; --quick: 2), every run in a fresh Python process, so its peak RSS (os.wait4) and its imports are its own.
A run's seconds are measured inside the child, from before the tool's imports to the end of
its work (interpreter start-up excluded; counting the loaded rows afterwards excluded). The
table shows medians; the JSON (bench/results/latest.json, or quick.json with --quick) holds
every row plus the machine. The sync cases assert that every tool loaded the same rows.

Sizes: 1,000,000 rows (REST: 200,000 records over 2,000 pages); --quick: 10,000 rows (REST:
10,000 records over 100 pages). Generated data is kept under .udb/bench/data between runs.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402

CASES = ["csv", "postgres", "rest", "profile", "quality", "drift", "discover", "firstanswer", "core1m", "growth"]
RESULTS = REPO / "bench" / "results"
WORK = REPO / ".udb" / "bench"


def case_module(name: str):
    return importlib.import_module(f"bench.case_{name}")


# ---------------------------------------------------------------- one run, in the child


def child(case: str, tool: str, params_file: Path, run_dir: Path, result_file: Path) -> int:
    params = json.loads(params_file.read_text())
    result = case_module(case).run(tool, params, run_dir)
    result_file.write_text(json.dumps(result))
    return 0


def one_run(case: str, tool: str, params: dict, run_dir: Path, timeout: float) -> dict:
    """One tool's run of a case in a fresh process: {seconds, rows, peak_rss_mb, process_s, note?}
    or {error}."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    params_file, result_file = run_dir / "params.json", run_dir / "result.json"
    params_file.write_text(json.dumps(params))
    argv = [sys.executable, "-m", "bench.run", "--child", case, tool, "--params", str(params_file),
            "--run-dir", str(run_dir), "--result", str(result_file)]
    env = {**common.child_env(run_dir), **params.get("env", {})}
    proc = common.run_child(argv, log=run_dir.parent / f"{run_dir.name}.log", timeout=timeout, env=env)
    if "error" in proc or not result_file.exists():
        return {"error": proc.get("error", "no result written"), "peak_rss_mb": proc["peak_rss_mb"]}
    result = json.loads(result_file.read_text())
    # A tool that does its work in other processes (the stack) reports no RSS of its own.
    rss = proc["peak_rss_mb"] if result.pop("rss_is_own", True) else None
    return {**result, "peak_rss_mb": rss, "process_s": proc["process_s"]}


# ---------------------------------------------------------------- a case, in the parent


def run_case(name: str, *, quick: bool, runs: int, timeout: float, data: Path) -> tuple[list[dict], list[str]]:
    """Every tool of one case, alternately; returns (result rows, failures)."""
    module = case_module(name)
    print(f"\n## {name}: {module.TITLE}", flush=True)
    started = time.perf_counter()
    try:
        params = module.prepare(data, quick)
    except Exception as exc:  # noqa: BLE001 (a case that cannot start fails alone; the others still run)
        print(f"   cannot prepare: {type(exc).__name__}: {exc}", flush=True)
        rows = [{"case": module.CASE, "tool": tool, "seconds": None, "peak_rss_mb": None, "rows": None, "runs": 0,
                 "errors": [f"prepare: {exc}"]} for tool in module.TOOLS]
        return rows, [f"{module.CASE}: cannot prepare: {type(exc).__name__}: {exc}"]
    print(f"   prepared in {time.perf_counter() - started:.1f} s: {params.get('described', '')}", flush=True)
    skipped = params.get("skip", {})
    tools = [t for t in module.TOOLS if t not in skipped]
    for tool, reason in skipped.items():
        print(f"   {tool}: SKIPPED ({reason})", flush=True)
    measured: dict[str, list[dict]] = {t: [] for t in tools}
    try:
        for i in range(runs):
            order = tools[i % len(tools):] + tools[:i % len(tools)] if tools else []
            for tool in order:
                run_dir = WORK / "runs" / name / f"{tool}-{i}"
                result = one_run(name, tool, params, run_dir, timeout)
                measured[tool].append(result)
                if "error" in result:
                    print(f"   {tool} run {i + 1}: ERROR {result['error']}", flush=True)
                else:
                    rss = "—" if result["peak_rss_mb"] is None else f"{result['peak_rss_mb']:,} MB"
                    print(f"   {tool} run {i + 1}: {result['seconds']:.2f} s, {rss}, {result['rows']:,} rows",
                          flush=True)
                    # Kept only when the run failed.
                    shutil.rmtree(run_dir, ignore_errors=True)
                    (run_dir.parent / f"{run_dir.name}.log").unlink(missing_ok=True)
    finally:
        finish = getattr(module, "finish", None)
        if finish is not None:
            finish(params)
    report = getattr(module, "report", None)  # a case's own figures beyond seconds and rows (growth)
    if report is not None:
        report(measured)
    rows = [common.summarise(module.CASE, tool, measured[tool]) for tool in tools]
    for row in rows:  # a case's own figures per run (growth) are kept in the results JSON
        extra = [run[module.CASE] for run in measured[row["tool"]] if module.CASE in run]
        if extra:
            row[module.CASE] = extra
    rows += [{"case": module.CASE, "tool": tool, "seconds": None, "peak_rss_mb": None, "rows": None, "runs": 0,
              "skipped": reason} for tool, reason in skipped.items()]
    failures = check_rows(module, params, measured)
    check = getattr(module, "check", None)  # a case's own agreement check (drift: the same columns)
    return rows, failures + (check(measured) if check is not None else [])


def check_rows(module, params: dict, measured: dict[str, list[dict]]) -> list[str]:
    """Every run of every tool saw the case's rows (the sync cases: loaded them all)."""
    failures = []
    expected = params["rows"]
    for tool, runs in measured.items():
        for i, run in enumerate(runs):
            if "error" in run:
                failures.append(f"{module.CASE} / {tool} run {i + 1}: {run['error']}")
            elif run["rows"] != expected:
                failures.append(f"{module.CASE} / {tool} run {i + 1}: {run['rows']:,} rows, expected {expected:,}")
    seen = {run["rows"] for runs in measured.values() for run in runs if "error" not in run}
    try:
        assert len(seen) <= 1, f"{module.CASE}: the tools loaded different row counts {sorted(seen)}"
    except AssertionError as exc:
        failures.append(str(exc))
    return failures


# ---------------------------------------------------------------- goals


def goals(results: list[dict], quick: bool) -> list[dict]:
    """The issue's goals, measured (reported, never asserted)."""
    by = {(r["case"], r["tool"]): r for r in results}

    def ratio(case, peer, base="udb"):
        a, b = by.get((case, peer)), by.get((case, base))
        if a and b and a["seconds"] and b["seconds"]:
            return a["seconds"] / b["seconds"]
        return None

    out = []
    for case in ("csv", "postgres", "rest"):
        r = ratio(case, "dlt")
        out.append({"case": case, "goal": f"{case}: at least 2× faster than dlt", "ratio": r,
                    "measured": "—" if r is None else f"{r:.1f}×", "met": None if r is None else r >= 2})
    r = ratio("profile", "ydata-full")
    out.append({"case": "profile", "goal": "profile: at least 5× faster than ydata-profiling full", "ratio": r,
                "measured": "—" if r is None else f"{r:.1f}×", "met": None if r is None else r >= 5})
    r = ratio("quality", "evidently")
    out.append({"case": "quality", "goal": "quality + drift: at least 2× faster than Evidently", "ratio": r,
                "measured": "—" if r is None else f"{r:.1f}×", "met": None if r is None else r >= 2})
    drift = by.get(("drift", "udb"))
    s = drift["seconds"] if drift else None
    out.append({"case": "drift", "goal": "drift of 1M vs 1M rows over every row within 2 s, the same drifted "
                                         "columns as Evidently" + (" (quick size)" if quick else ""),
                "ratio": None, "measured": "—" if s is None else f"{s:.2f} s",
                "met": None if s is None else s <= 2 and not drift.get("errors")})
    embedded = by.get(("discover", "udb-embedded"))
    s = embedded["seconds"] if embedded else None
    out.append({"case": "discover", "goal": "discover → analysis.completed, embedded, under 20 s" + (" (quick size)" if quick else ""),
                "ratio": None, "measured": "—" if s is None else f"{s:.1f} s", "met": None if s is None else s < 20})
    for case, tool, limit, what in (("firstanswer", "udb-core", 2, "small file: udb run to the core answer"),
                                     ("firstanswer", "udb-reports", 10, "small file: every report rendered"),
                                     ("core1m", "udb-core", 5, "1M rows x 10 columns: core answer, embedded")):
        row = by.get((case, tool))
        s = row["seconds"] if row else None
        out.append({"case": case, "goal": f"{what} <= {limit} s wall (process start included)"
                    + (" (quick size)" if quick and case == "core1m" else ""), "ratio": None,
                    "measured": "—" if s is None else f"{s:.2f} s", "met": None if s is None else s <= limit})
    measured = {r["case"] for r in results}
    return [g for g in out if g["case"] in measured]


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 2 minutes in all)")
    parser.add_argument("--runs", type=int, help="runs per tool (default 3; 2 with --quick, which checks "
                                                 "the harness rather than measures)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/latest.json, "
                                                 "quick.json with --quick)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per run (default 1200, quick 300)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "TOOL"), help=argparse.SUPPRESS)
    parser.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child, args.params, args.run_dir, args.result)

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    args.runs = args.runs or (2 if args.quick else 3)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    timeout = args.timeout or (300 if args.quick else 1200)
    data = WORK / "data"
    machine = common.machine()
    print(f"UDB benchmarks{' (quick sizes)' if args.quick else ''}: {args.runs} runs per tool, "
          f"{common.machine_line(machine)}; load average {machine['load_average']}", flush=True)
    started = time.perf_counter()
    results, failures = [], []
    for name in cases:
        rows, failed = run_case(name, quick=args.quick, runs=args.runs, timeout=timeout, data=data)
        results += rows
        failures += failed
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    reached = goals(results, args.quick)
    baselines = {case_module(n).CASE: case_module(n).TOOLS[0] for n in cases}
    table = common.markdown_table(results, baselines)
    print(f"\n{table}\n\n{common.goals_table(reached)}\n")
    print(f"{common.machine_line(machine)}; load average {machine['load_average']} at the start, "
          f"{machine['load_average_end']} at the end; {time.perf_counter() - started:.0f} s in all")
    common.write_results(out, {"quick": args.quick, "runs_per_tool": args.runs, "machine": machine,
                               "results": results, "goals": reached, "failures": failures,
                               "seconds": round(time.perf_counter() - started, 1)})
    print(f"results: {out}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

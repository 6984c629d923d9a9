"""The first answer: `udb run FILE` on a small real-world-like file, timed as a user sees it.

The file is daily weather, as a new user would try first: 1,461 days x 6 columns (date, two
temperatures, precipitation, wind, a weather word), made with DuckDB. Each run starts
`udb run FILE` as a new process (interpreter start-up and imports included, a fresh UDB_HOME)
and timestamps its output lines as they arrive:

  udb-core     `udb run FILE --no-reports`: seconds from the process start to the core answer
               (the "completed in" line: tables, rows, the summary's top facts, the report page)
  udb-reports  `udb run FILE`: seconds from the process start until every report has landed
               (ydata-profiling, Evidently, PNG charts, by the reports function); the note
               gives the core answer and each report's landing time of the same run

  udb-stack    the same file from the stack's MinIO: seconds from the discover event posted to
               the running stack's broker until `GET /status/{job}` says completed (the core
               answer; the stack's function processes are warm, as a served function is)

The goals (issue 17): core answer <= 2 s wall, every report rendered <= 10 s; through the stack,
event posted -> completed <= 1.5 s.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from bench import common

CASE = "firstanswer"
TITLE = "udb run on a 1,461-row weather CSV: wall to the core answer and to every report (process start included)"
TOOLS = ["udb-core", "udb-reports", "udb-stack"]
ROWS = 1_461

WEATHER_SQL = """COPY (SELECT (DATE '2020-01-01' + i::INTEGER) AS date,
    round(10 + 12 * sin(2 * pi() * i / 365.25) + (hash(i) % 100) / 20.0, 1) AS temp_max,
    round(2 + 10 * sin(2 * pi() * i / 365.25) + (hash(i + 7) % 100) / 25.0, 1) AS temp_min,
    round(greatest(0, (hash(i * 3) % 200) / 10.0 - 12), 1) AS precipitation,
    round(3 + (hash(i * 5) % 80) / 10.0, 1) AS wind,
    CASE WHEN hash(i * 3) % 200 > 150 THEN 'rain' WHEN hash(i * 11) % 10 < 2 THEN 'fog'
         WHEN hash(i * 13) % 10 < 5 THEN 'sun' ELSE 'drizzle' END AS weather
    FROM range({rows}) t(i)) TO '{path}' (HEADER)"""


def make_weather(path: Path, rows: int = ROWS) -> Path:
    import duckdb

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        duckdb.execute(WEATHER_SQL.format(rows=int(rows), path=str(path).replace("'", "''")))
    return path


def prepare(data: Path, quick: bool) -> dict:
    from bench import case_discover

    path = make_weather(data / "weather" / "weather.csv")
    params = {"rows": ROWS, "csv": str(path), "skip": {},
              "described": f"{ROWS:,} rows x 6 columns, {path.stat().st_size / 1e3:.0f} KB"}
    reason = case_discover._stack_down_reason()
    if reason:
        params["skip"]["udb-stack"] = reason
        return params
    s3 = case_discover._s3()
    try:
        s3.create_bucket(Bucket=case_discover.SOURCE_BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.upload_file(str(path), case_discover.SOURCE_BUCKET, "weather.csv")
    params["hint"] = f"s3://{case_discover.SOURCE_BUCKET}/weather.csv"
    return params


def timed_run(argv: list[str], env: dict, timeout: float = 600) -> tuple[list[tuple[float, str]], int]:
    """Start argv and return ([(seconds since the start, line)], exit code)."""
    import os

    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=common.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env={**os.environ, **env}, text=True, bufsize=1)
    lines = []
    for line in child.stdout:
        lines.append((time.perf_counter() - started, line.rstrip("\n")))
        if time.perf_counter() - started > timeout:
            child.kill()
            break
    return lines, child.wait()


def rows_of(lines: list[tuple[float, str]]) -> int:
    return sum(int(m.group(1).replace(",", "")) for _, line in lines
               if (m := re.match(r"table \S+: ([\d,]+) rows", line)))


def run(tool: str, params: dict, run_dir: Path) -> dict:
    if tool == "udb-stack":
        from bench import case_discover

        result = case_discover._through_stack(params, timeout=120, settle_reports=True)
        return {**result, "note": "event posted -> completed (core answer); " + result["note"]}
    argv = [sys.executable, "-m", "frontends.cli", "run", params["csv"], "--tenant", "bench"]
    if tool == "udb-core":
        argv.append("--no-reports")
    lines, code = timed_run(argv, common.child_env(run_dir))
    if code != 0:
        raise SystemExit(f"udb run failed with exit code {code}: {[line for _, line in lines][-3:]}")
    core = next(t for t, line in lines if line.startswith("completed in "))
    result = {"rows": rows_of(lines), "rss_is_own": False}
    if tool == "udb-core":
        return {**result, "seconds": core, "note": "wall to the core answer, process start included"}
    landed = [(t, line.split()[1]) for t, line in lines if line.startswith("report ") and " at " in line]
    done = next(t for t, line in lines if line.startswith("reports "))
    failed = [line for _, line in lines if line.startswith("report ") and " failed at " in line]
    if failed:
        raise SystemExit(f"reports failed: {failed}")
    note = f"core answer at {core:.2f} s; " + ", ".join(f"{name} at {t:.1f} s" for t, name in landed)
    return {**result, "seconds": done, "note": note}

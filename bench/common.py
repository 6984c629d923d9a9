"""What every benchmark shares: a step in a fresh process with its own peak RSS, the generated
data, the machine description, and the results as a markdown table and JSON.

Peak RSS comes from os.wait4 on the child (ru_maxrss is the child's own high-water mark, in KiB
on Linux), so one run's imports and caches never inflate another's.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The generated table of bench/analysis.py and the sync cases: 10 columns of a sales table,
# every value a function of the row number, so a size always gives the same data.
TABLE_SQL = """
CREATE OR REPLACE TABLE {name} AS SELECT
    i AS order_id,
    TIMESTAMP '2024-01-01' + to_seconds((i * 104729) % 31536000) AS ordered_at,
    ['north', 'south', 'east', 'west', 'central'][(i * 31) % 5 + 1] AS region,
    ['web', 'store', 'phone'][(i * 17) % 3 + 1] AS channel,
    'SKU-' || lpad(((i * 13) % 500)::VARCHAR, 4, '0') AS product,
    (i * 37) % 9 + 1 AS quantity,
    round(4.99 + ((i * 53) % 9500) / 100.0, 2) AS unit_price,
    round(((i * 37) % 9 + 1) * (4.99 + ((i * 53) % 9500) / 100.0), 2) AS amount,
    CASE WHEN i % 13 = 0 THEN NULL ELSE ((i * 11) % 30) / 100.0 END AS discount,
    'customer' || ((i * 7919) % 50000) || '@example.com' AS email
FROM range({rows}) t(i)
"""
# The drift reference: the same rows with amount scaled up by 25% (a real shift), the rest as is.
SHIFTED_SQL = "CREATE OR REPLACE TABLE bench_shifted AS SELECT * REPLACE (round(amount * 1.25, 2) AS amount) FROM bench"
COLUMNS = 10
# Rows per case (the REST case: records, 100 a page). Quick sizes keep `--quick` near two
# minutes: at 10,000 rows the tools' imports, not the data, take most of each run.
FULL_ROWS = 1_000_000
QUICK_ROWS = 10_000
PEERS = ("duckdb", "dlt", "ydata-profiling", "evidently", "pandas", "pyarrow", "sqlalchemy", "psycopg")


def make_table(path: Path, rows: int) -> Path:
    """A DuckDB file with `bench` (rows x 10) and `bench_shifted`; kept when already made."""
    return make_pair(path, rows, "bench_shifted", SHIFTED_SQL)


def make_pair(path: Path, rows: int, second: str, second_sql: str) -> Path:
    """A DuckDB file with `bench` (rows x 10) and `second`, made by `second_sql` from it;
    kept when both already hold `rows` rows. Written under another name and renamed, so an
    interrupted run never leaves a half-made file to be kept."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                if all(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows
                       for table in ("bench", second)):
                    return path
        except duckdb.Error:
            pass
        path.unlink()
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    con = duckdb.connect(str(partial))
    con.execute(TABLE_SQL.format(name="bench", rows=int(rows)))
    con.execute(second_sql)
    con.execute("CHECKPOINT")
    con.close()
    partial.rename(path)
    return path


def make_csv(path: Path, rows: int) -> Path:
    """The same table as a CSV file with a header; kept when already made."""
    import duckdb

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    con = duckdb.connect()
    con.execute(TABLE_SQL.format(name="bench", rows=int(rows)))
    con.execute(f"COPY bench TO '{partial}' (FORMAT csv, HEADER)")
    con.close()
    partial.rename(path)
    return path


# ---------------------------------------------------------------- one run in a fresh process


def run_child(argv: list[str], *, log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run argv in a fresh process (stdout discarded, stderr to `log`); returns
    {returncode, process_s, peak_rss_mb, error?}. The child is killed after `timeout` s."""
    started = time.perf_counter()
    with open(log, "wb") as err:
        child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                 env={**os.environ, **(env or {})})
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                _, status, usage = os.wait4(child.pid, 0)
                return {"returncode": None, "process_s": round(time.perf_counter() - started, 3),
                        "peak_rss_mb": round(usage.ru_maxrss / 1024), "error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    out = {"returncode": code, "process_s": round(time.perf_counter() - started, 3),
           "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    if code != 0:
        out["error"] = f"exit code {code} (see {log})"
    return out


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    from importlib import metadata

    versions = {}
    for name in PEERS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu_count": os.cpu_count(), "cpu_model": _cpu_model(), "memory_gb": _memory_gb(),
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def machine_line(m: dict) -> str:
    v = m["versions"]
    return (f"{m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB RAM, Python {m['python']}; "
            f"duckdb {v.get('duckdb')}, dlt {v.get('dlt')}, ydata-profiling {v.get('ydata-profiling')}, "
            f"evidently {v.get('evidently')}")


# ---------------------------------------------------------------- results


def summarise(case: str, tool: str, runs: list[dict]) -> dict:
    """One row of the results: the median seconds and peak RSS of the runs that succeeded."""
    ok = [r for r in runs if "error" not in r]
    rss = [r["peak_rss_mb"] for r in ok if r.get("peak_rss_mb") is not None]
    row = {"case": case, "tool": tool,
           "seconds": round(statistics.median(r["seconds"] for r in ok), 2) if ok else None,
           "peak_rss_mb": round(statistics.median(rss)) if rss else None,
           "rows": ok[0]["rows"] if ok else None,
           "runs": len(ok), "run_seconds": [round(r["seconds"], 2) for r in ok]}
    notes = [r["note"] for r in ok if r.get("note")]
    if notes:
        row["note"] = notes[-1]
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        row["errors"] = errors
    return row


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown_table(results: list[dict], baselines: dict[str, str]) -> str:
    """| case | tool | rows | median s | peak RSS MB | time vs UDB | RSS vs UDB |; the ratios
    are the tool's over the case's UDB row (`baselines`: case -> UDB tool name)."""
    lines = ["| case | tool | rows | median s | peak RSS MB | time ÷ UDB | RSS ÷ UDB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    by_key = {(r["case"], r["tool"]): r for r in results}
    for r in results:
        base = by_key.get((r["case"], baselines.get(r["case"])))
        t_ratio = m_ratio = "—"
        if base is not None and base is not r:
            if r["seconds"] and base["seconds"]:
                t_ratio = f"{r['seconds'] / base['seconds']:.1f}×"
            if r["peak_rss_mb"] and base["peak_rss_mb"]:
                m_ratio = f"{r['peak_rss_mb'] / base['peak_rss_mb']:.1f}×"
        seconds = _num(r["seconds"], ".2f") if not r.get("errors") or r["seconds"] is not None else "failed"
        lines.append(f"| {r['case']} | {r['tool']} | {_num(r['rows'], ',')} | {seconds} | "
                     f"{_num(r['peak_rss_mb'], ',')} | {t_ratio} | {m_ratio} |")
    return "\n".join(lines)


def goals_table(goals: list[dict]) -> str:
    lines = ["| goal | measured | met |", "|---|---:|---|"]
    for g in goals:
        lines.append(f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else ('no' if g['met'] is False else '—')} |")
    return "\n".join(lines)


def write_results(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.rename(path)


# ---------------------------------------------------------------- loading into a warehouse


def udb_load(hint: str, run_dir: Path, *, tenant: str = "bench") -> dict:
    """`udb run HINT --no-analyze` in this process with a fresh UDB_HOME (discover, sync, load:
    the embedded pipeline up to the warehouse); returns {seconds, rows} with rows counted in
    the warehouse it wrote."""
    started = time.perf_counter()
    from frontends import cli

    code = cli.main(["run", hint, "--no-analyze", "--tenant", tenant])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"udb run {hint} failed with exit code {code}")
    return {"seconds": seconds, "rows": warehouse_rows(udb_warehouse(run_dir, tenant))}


def udb_warehouse(run_dir: Path, tenant: str = "bench"):
    """The tenant's lake in the run's embedded store (a TenantStore; warehouse_rows reads it)."""
    from shared.storage.store import LocalStore, TenantStore
    return TenantStore(LocalStore(run_dir / "udb" / "store" / "udb"), tenant)


def warehouse_rows(path, schema: str = "main", table: str | None = None) -> int:
    """Rows of `table` (or of the only table) in `schema` of a DuckDB file, or of a tenant's
    lake when `path` is its TenantStore."""
    import duckdb

    if isinstance(path, Path):
        opened = duckdb.connect(str(path), read_only=True)
    else:
        from shared.storage import lake
        opened = lake.reader(path, references=False)
    with opened as con:
        if table is None:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [schema]).fetchall()]
            if len(tables) != 1:
                raise SystemExit(f"{path}: expected one table in {schema}, found {tables}")
            table = tables[0]
        return con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]


def dlt_pipeline(run_dir: Path):
    """A dlt pipeline into a fresh DuckDB file under run_dir, dataset `bench`."""
    import dlt

    return dlt.pipeline(pipeline_name="bench", destination=dlt.destinations.duckdb(str(run_dir / "dlt.duckdb")),
                        dataset_name="bench", pipelines_dir=str(run_dir / "dlt-pipelines"))


def dlt_rows(run_dir: Path, table: str) -> int:
    return warehouse_rows(run_dir / "dlt.duckdb", "bench", table)


# What each child process of a sync case gets: a fresh UDB home, no dlt usage ping.
def child_env(run_dir: Path, **extra: str) -> dict:
    return {"UDB_HOME": str(run_dir / "udb"), "RUNTIME__DLTHUB_TELEMETRY": "false", **extra}

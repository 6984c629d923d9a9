"""The wide-table case of issue 23: a CSV of 4,000 integer columns x 20 rows through the whole
embedded pipeline (`udb run`), in a fresh process, with its wall time and peak RSS.

    .venv/bin/python bench/wide_table.py [--columns 1000,4000] [--rows 20] [--png]

Before issue 23 the 4,000-column case grew to 22.9 GB in 9 minutes until the kernel killed it;
now every analysis runs under UDB_ANALYZE_MEMORY_MB (2048) and UDB_ANALYZE_DEADLINE_S (540).

Peak RSS is the largest sum of the resident memory of the `udb` process and its children
(Chromium for PNG charts), sampled every 20 ms with psutil, and, beside it, the process's own
high-water mark from os.wait4 (ru_maxrss). The job's own figures come from its documents:
`stage_seconds.analyze` and the index's `bounds` (peak RSS the analysis saw, its seconds).
PNG charts are off unless --png (Chromium adds its own start-up to the wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def value(row: int, column: int) -> int:
    """The cell at (row, column), 0-based: every column has 20 distinct values, exact answers."""
    return (row + 1) * (column % 97 + 1) + column


def write_wide_csv(path: Path, columns: int = 4000, rows: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(",".join(f"c{c}" for c in range(columns)) + "\n")
        for r in range(rows):
            fh.write(",".join(str(value(r, c)) for c in range(columns)) + "\n")
    return path


def measure(cmd: list[str], env: dict, timeout: float, interval: float = 0.02) -> dict:
    """Run `cmd`; its exit code, output, wall seconds and peak RSS (process tree, and wait4)."""
    started = time.monotonic()
    out_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=out_file, stderr=subprocess.STDOUT)
    handle = psutil.Process(proc.pid)
    peak = 0
    rusage = None
    while True:
        try:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            total = handle.memory_info().rss
            for child in handle.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        if time.monotonic() - started > timeout:
            for child in handle.children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
            break
        time.sleep(interval)
    wall = time.monotonic() - started
    out_file.seek(0)
    return {"returncode": proc.returncode, "output": out_file.read().decode(errors="replace"),
            "wall_s": round(wall, 2), "peak_rss_mb": peak // 2 ** 20,
            "cpu_s": round(rusage.ru_utime + rusage.ru_stime, 2) if rusage is not None else None,
            "maxrss_mb": (rusage.ru_maxrss // 1024) if rusage is not None else None}


def run_pipeline(csv: Path, home: Path, *, env: dict | None = None, timeout: float = 300,
                 args: tuple[str, ...] = ()) -> dict:
    """`udb run csv [args]` in a fresh process under UDB_HOME=home: the measurement, the job
    document and (when it completed) the artifact index."""
    child_env = {**os.environ, "UDB_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
    result = measure([sys.executable, "-m", "frontends.cli", "run", str(csv), *args], child_env, timeout)
    job = next((line.split()[1] for line in result["output"].splitlines() if line.startswith("job ")), None)
    result["job"] = job
    tenant_dir = home / "store" / "udb" / "tenants" / "demo"
    if job and (tenant_dir / "jobs" / f"{job}.json").exists():
        result["doc"] = json.loads((tenant_dir / "jobs" / f"{job}.json").read_text())
        index = tenant_dir / "artifacts" / job / "index.json"
        result["index"] = json.loads(index.read_text()) if index.exists() else None
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--columns", default="1000,4000", help="comma-separated column counts")
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--png", action="store_true", help="render PNG charts too (Chromium)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="udb-bench-wide-") as tmp:
        for columns in [int(c) for c in args.columns.split(",")]:
            csv = write_wide_csv(Path(tmp) / f"wide{columns}" / "wide.csv", columns, args.rows)
            result = run_pipeline(csv, Path(tmp) / f"home{columns}",
                                  env={"UDB_CHART_PNG": "1" if args.png else "0"})
            doc = result.get("doc") or {}
            bounds = (result.get("index") or {}).get("bounds") or {}
            outcome = doc.get("state", f"exit {result['returncode']}")
            if outcome == "failed":
                outcome += f": {doc['error']['reason']}"
            rows.append((f"{columns:,} x {args.rows}", f"{csv.stat().st_size / 1024:,.0f} KB", outcome,
                         result["wall_s"], result["cpu_s"], doc.get("stage_seconds", {}).get("analyze"),
                         result["peak_rss_mb"], result["maxrss_mb"], bounds.get("peak_rss_mb")))
    print("| table | CSV | outcome | wall s (whole `udb run`) | CPU s | analyze s (wall) | peak RSS MB (tree) "
          "| ru_maxrss MB | analysis peak MB (index) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join("–" if v is None else str(v) for v in row) + " |")
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

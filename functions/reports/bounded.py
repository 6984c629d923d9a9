"""Run one report renderer in a child process under a deadline and a memory bound.

The engines are third-party code over tenant data: a wide or odd table can make them run for
minutes or grow without limit (issue 23: 22.9 GB for a 4,000-column CSV). A child process is
the one bound that holds whatever the engine does: its resident memory (with its children's,
Chromium included) is polled and the whole process group is killed past the bound or the
deadline, and the reason is returned instead of raised.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from functions.reports.render import RESULT

POLL_SECONDS = 0.1
# The child imports functions.reports.render from this very tree, wherever the caller's cwd is.
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    ok: bool
    seconds: float
    result: dict
    reason: str | None = None
    peak_rss_mb: float = 0.0


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        for p in [proc] + proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def run(spec: dict, workdir: Path, *, deadline: float, memory_mb: int, log=None) -> Outcome:
    """Render `spec` in `python -m functions.reports.render`; never raises for the engine's sake."""
    import psutil

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"spec-{out.name}.json"
    spec_path.write_text(json.dumps(spec, default=str))
    started = time.perf_counter()
    # Its own session: a kill reaches Chromium and any helper the engine started.
    # stderr to a file: a chatty engine must not block on a full pipe.
    err_path = workdir / f"stderr-{out.name}.txt"
    with open(err_path, "wb") as err:
        child = subprocess.Popen([sys.executable, "-m", "functions.reports.render", str(spec_path)],
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                 env=_child_env())
    proc = psutil.Process(child.pid)
    peak, reason = 0, None
    limit = memory_mb * 1024 * 1024
    while child.poll() is None:
        rss = _tree_rss(proc)
        peak = max(peak, rss)
        elapsed = time.perf_counter() - started
        if memory_mb and rss > limit:
            reason = (f"stopped: used {rss / 2**20:,.0f} MB, above the memory bound of {memory_mb:,} MB "
                      f"(UDB_REPORTS_MEMORY_MB)")
        elif deadline and elapsed > deadline:
            reason = f"stopped: still running after the deadline of {deadline:g} s (UDB_REPORTS_DEADLINE_SECONDS)"
        if reason:
            _kill(child)
            break
        time.sleep(POLL_SECONDS)
    child.wait()
    stderr = err_path.read_text(errors="replace")
    err_path.unlink(missing_ok=True)
    seconds = round(time.perf_counter() - started, 3)
    result_path = out / RESULT
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    result_path.unlink(missing_ok=True)
    spec_path.unlink(missing_ok=True)
    peak_mb = round(peak / 2**20, 1)
    if reason:
        return Outcome(False, seconds, result, reason, peak_mb)
    if result.get("ok"):
        return Outcome(True, seconds, result, None, peak_mb)
    if result.get("error"):
        if log is not None:
            log.warning("report %s failed: %s", spec["kind"], result.get("traceback") or result["error"])
        return Outcome(False, seconds, result, result["error"], peak_mb)
    code = child.returncode
    what = f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit code {code}"
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return Outcome(False, seconds, result, f"the renderer process died: {what}" + (f": {tail[0]}" if tail else ""),
                   peak_mb)


def _child_env() -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

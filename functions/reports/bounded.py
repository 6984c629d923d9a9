"""Run one report renderer in a child process under a deadline and a memory bound.

The engines are third-party code over tenant data: a wide or odd table can make them run for
minutes or grow without limit (issue 23: 22.9 GB for a 4,000-column CSV). A child process is
the one bound that holds whatever the engine does: its resident memory (with its children's,
Chromium included) is polled and the whole process group is killed past the bound or the
deadline, and the reason is returned instead of raised.

The engines take seconds to import, more than most reports take to render, so children are
started ahead (`warm_up`): each imports its engine and waits for one spec
(`render.py --warm`), renders it and exits. A child renders one report only, so no tenant's data
outlives it. `udb run` starts one per engine, all at once, when the core answer is out; the
reports function keeps one per engine ready between jobs. Warm children run at a lower CPU
priority (nice 10): the reports are the side path, and core work goes first.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from functions.reports.render import ENGINE_OF, ENGINE_MODULES, RESULT
from shared.core.settings import Settings, child_env

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


def run(spec: dict, workdir: Path, *, deadline: float, memory_mb: int, settings: Settings, log=None) -> Outcome:
    """Render `spec` in `python -m functions.reports.render` under the caller's `settings` (handed
    to the child in its environment); never raises for the engine's sake."""
    import psutil

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"spec-{out.name}.json"
    spec_path.write_text(json.dumps(spec, default=str))
    engine = ENGINE_OF[spec["kind"]]
    child, err_path = POOL.take(engine)
    started = time.perf_counter()
    stdin = child.stdin
    assert stdin is not None  # the pool starts every child with stdin=PIPE
    try:
        stdin.write((json.dumps({"spec": str(spec_path), "env": _child_env(settings)}) + "\n").encode())
        stdin.close()
    except BrokenPipeError:
        pass  # it died while waiting: reported below from its exit code
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
        try:  # wakes as soon as the child exits, instead of sleeping the whole poll out
            child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    child.wait()
    POOL.finished(engine)
    stderr = err_path.read_text(errors="replace") if err_path.is_file() else ""
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


def _child_env(settings: Settings | None = None) -> dict:
    """The renderer's environment: this process's, with `settings` as UDB_* variables (a warm
    child is started before any job, without them, and gets them with its spec)."""
    return child_env(settings, pythonpath=str(ROOT), PYTHONWARNINGS="ignore")


def _start(engine: str, folder: Path, nice: int) -> tuple[subprocess.Popen, Path]:
    """A child that imports `engine` and waits for its spec on stdin. Its own session: a kill
    reaches Chromium and any helper the engine started. stderr to a file: a chatty engine must
    not block on a full pipe."""
    fd, name = tempfile.mkstemp(prefix=f"stderr-{engine}-", suffix=".txt", dir=folder)
    with os.fdopen(fd, "wb") as err:
        child = subprocess.Popen([sys.executable, "-m", "functions.reports.render", "--warm", engine, str(nice)],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True, env=_child_env())
    return child, Path(name)


class WarmPool:
    """Children started ahead, at most one idle per engine. `take` hands out the idle one (or
    starts one now); with `keep` on, a finished report's engine gets a new idle child."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: dict[str, tuple[subprocess.Popen, Path]] = {}
        self._keep = False
        self._nice = 0
        self._folder: Path | None = None

    def _dir(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="udb-reports-warm-"))
        return self._folder

    def warm_up(self, engines=tuple(ENGINE_MODULES), *, keep: bool = False, nice: int = 10) -> None:
        with self._lock:
            self._keep, self._nice = self._keep or keep, nice
            for engine in engines:
                child = self._idle.get(engine)
                if child is None or child[0].poll() is not None:
                    self._idle[engine] = _start(engine, self._dir(), nice)

    def take(self, engine: str) -> tuple[subprocess.Popen, Path]:
        with self._lock:
            child = self._idle.pop(engine, None)
            if child is not None and child[0].poll() is None:
                return child
            return _start(engine, self._dir(), self._nice)

    def finished(self, engine: str) -> None:
        if self._keep:
            self.warm_up((engine,), keep=True, nice=self._nice)

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._keep = list(self._idle.values()), {}, False
        for child, err_path in idle:
            _kill(child)
            child.wait()
            err_path.unlink(missing_ok=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


POOL = WarmPool()
atexit.register(POOL.close)


def warm_up(*, keep: bool = False) -> None:
    """Start one child per engine now (their imports run beside whatever comes next); with
    `keep`, a new one is started after each report, for the next job."""
    POOL.warm_up(keep=keep)


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

"""The reports function's process keeps one renderer per engine waiting, with its engine
imported, in the process that serves (gunicorn's worker), not in the master that imported it."""
from __future__ import annotations

import json
import time

import psutil
import pytest

from tests.function_server import serve

pytestmark = pytest.mark.integration


def _warm_children(pid: int) -> dict[str, psutil.Process]:
    found = {}
    for child in psutil.Process(pid).children():
        argv = child.cmdline()
        if "functions.reports.render" in argv and "--warm" in argv:
            found[argv[argv.index("--warm") + 1]] = child
    return found


def test_the_serving_worker_keeps_one_warm_renderer_per_engine(tmp_path):
    with serve("reports", tmp_path / "home") as server:
        worker = server.worker_pid()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            warm = _warm_children(worker)
            # Each lowers its own priority first thing (after the interpreter's start).
            if len(warm) == 3 and {child.nice() for child in warm.values()} == {10}:
                break
            time.sleep(0.2)
        assert sorted(warm) == ["evidently", "png", "ydata"]
        assert {child.nice() for child in warm.values()} == {10}
        assert _warm_children(server.process.pid) == {}  # none in gunicorn's master
        # More requests start no more of them.
        for _ in range(3):
            assert server.get("/healthz")[0] == 200
        assert {e: c.pid for e, c in _warm_children(worker).items()} == {e: c.pid for e, c in warm.items()}
    # The worker stopped: its waiting renderers stop too (killed, or at the end of their input).
    for child in warm.values():
        try:
            child.wait(timeout=60)
        except psutil.NoSuchProcess:
            pass
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_stopping_the_server_ends_its_warm_renderers(tmp_path):
    """SIGTERM: gunicorn's worker exits through SystemExit, its lifecycle stops, and the stop
    hook ends the renderer children, which live in sessions of their own (no signal to the
    server's process group reaches them)."""
    with serve("reports", tmp_path / "home", UDB_LOG_LEVEL="INFO") as server:
        worker = server.worker_pid()
        deadline = time.monotonic() + 30
        while len(warm := _warm_children(worker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(warm) == ["evidently", "png", "ydata"]
    assert server.process.returncode == 0
    gone, alive = psutil.wait_procs(list(warm.values()), timeout=10)
    assert alive == [] and len(gone) == 3
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    lifecycle = [(line["message"], line["pid"]) for line in lines if line["message"] in ("started", "stopped")]
    # gunicorn's master started at import; the worker took its context over after the fork
    # and stopped it at exit (the master had closed its own copy at the fork: no second stop).
    assert lifecycle == [("started", server.process.pid), ("started", worker), ("stopped", worker)]
    assert [line["hooks"] for line in lines if line["message"] == "stopped"] == [1]

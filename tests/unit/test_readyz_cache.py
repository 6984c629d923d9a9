"""/readyz answers from a cached dependency report (Knative's queue-proxy probes every 50 ms with
a 100 ms timeout: a store HEAD or a Kafka metadata call per probe would not fit); /startupz, the
startupProbe, checks afresh."""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from shared.serving.lifecycle import Lifecycle

pytestmark = pytest.mark.unit


def _app(settings, ttl: float, state: dict):
    calls = []

    def probe(ctx):
        calls.append(time.monotonic())
        if state.get("slow"):
            time.sleep(state["slow"])
        if state.get("down"):
            raise ConnectionError("peer away")

    lifecycle = Lifecycle("analyze", checks={"probe": probe})
    lifecycle.start(dataclasses.replace(settings, ready_cache_seconds=ttl))
    return lifecycle, calls


def test_readyz_probes_within_the_ttl_reuse_one_report(settings):
    app, calls = _app(settings, ttl=60, state={})
    reports = [app.ready() for _ in range(200)]
    assert len(calls) == 1 and all(r["probe"] == "up" for r in reports)
    app.ready(fresh=True)  # what /startupz runs: a fresh check, every time
    assert len(calls) == 2


def test_a_stale_report_is_answered_at_once_and_refreshed_in_the_background(settings):
    state = {}
    app, calls = _app(settings, ttl=0.05, state=state)
    assert app.ready()["probe"] == "up"
    state.update(down=True, slow=0.5)
    time.sleep(0.06)
    started = time.monotonic()
    answers = [app.ready()["probe"] for _ in range(50)]
    took = time.monotonic() - started
    # The probe never waits for the 0.5 s check: the last report answers while one thread refreshes.
    assert answers == ["up"] * 50 and took < 0.1, took
    assert len(calls) <= 2  # at most one refresh under way, not one per stale probe
    deadline = time.monotonic() + 5
    while app.ready()["probe"] == "up" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.ready()["probe"] == "down: peer away"
    assert [t.name for t in threading.enumerate()].count("udb-readyz-refresh") <= 1

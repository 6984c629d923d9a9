"""What the core path costs the object store per job, in job-document requests: each function's
invocation reads its job once (the redelivery check) and then only writes it, from the version
it last read or wrote (shared/storage/jobs.remembered), where it read the document before every
change (issue 17: the stack's first answer)."""
from __future__ import annotations

import collections

import pytest

from shared.core import events
from shared.core.tenancy import new_job_id
from shared.serving.embedded import Dispatcher
from tests.conftest import write_sales

pytestmark = pytest.mark.unit


class Counting:
    """The deployment's store, counting requests on job documents by (function, operation)."""

    def __init__(self, store):
        self._store = store
        self.function = "?"
        self.calls: collections.Counter = collections.Counter()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def get(self, key):
        if "/jobs/" in key:
            self.calls[(self.function, "get")] += 1
        return self._store.get(key)

    def put(self, key, data, **kw):
        if "/jobs/" in key:
            self.calls[(self.function, "put")] += 1
        return self._store.put(key, data, **kw)


def test_each_function_reads_its_job_once_and_writes_it_per_state(settings, tmp_path):
    csv = write_sales(tmp_path / "data" / "sales.csv", 1_461)
    with Dispatcher(settings, skip=("udb-reports",)) as dispatcher:
        counting = Counting(dispatcher._base.store)
        dispatcher._base.store = counting  # before any function's context is made from it
        seen = []

        def on_event(event):
            seen.append(event["type"])
            counting.function = {events.DISCOVER_REQUESTED: "discover", events.SOURCE_DISCOVERED: "sync",
                                 events.SYNC_STAGED: "writer", events.WAREHOUSE_LOADED: "analyze"}.get(event["type"], "-")
        dispatcher.on_event = on_event
        job_id = new_job_id()
        dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, {"hint": str(csv)}, tenant="acme",
                                             job_id=job_id, function="test"))
        calls = dict(counting.calls)
        doc = dispatcher.context("artifacts").jobs("acme").get(job_id)
    assert seen[-1] == events.ANALYSIS_COMPLETED and doc["state"] == "completed"
    assert doc["tables"] == {"data__sales": {"rows": 1_461}}
    # discover: one read of a job not there yet (the redelivery check), the new job written,
    # then discovering and discovered; sync, writer, analyze: one read, two writes.
    assert calls == {
        ("discover", "get"): 1, ("discover", "put"): 3,
        ("sync", "get"): 1, ("sync", "put"): 2,
        ("writer", "get"): 1, ("writer", "put"): 2,
        ("analyze", "get"): 1, ("analyze", "put"): 2,
    }
    # Before: every ensure and every move read the document again: 16 reads per job, now 4.

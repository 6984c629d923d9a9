import pytest

pytestmark = pytest.mark.unit

import json
import threading

import jsonschema

from shared.core.errors import InputError, NotFound, PreconditionFailed
from shared.core.events import SCHEMA_DIR
from shared.storage.jobs import STATES, Jobs, apply_state, can_move, new_job, remembered, stage_seconds
from shared.storage.store import LocalStore, TenantStore

JOB = "job-0123456789abcdef"
PIPELINE = ["requested", "discovering", "discovered", "syncing", "staged", "loading", "loaded",
            "analyzing", "completed"]
VALIDATOR = jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / "job.json").read_text()))


def assert_valid(doc: dict) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(doc)]
    assert errors == []


# --- the state machine ------------------------------------------------------------------------

def test_states_order():
    assert list(STATES) == PIPELINE + ["failed"]


@pytest.mark.parametrize("current,new", [
    ("requested", "discovering"), ("discovering", "discovered"), ("discovered", "syncing"),
    ("syncing", "staged"), ("staged", "loading"), ("loading", "loaded"), ("loaded", "analyzing"),
    ("analyzing", "completed"),
    ("requested", "analyzing"),  # a job may start mid-pipeline (analyze.requested)
    ("requested", "completed"), ("discovered", "loaded"),
])
def test_forward_moves_allowed(current, new):
    assert can_move(current, new)


@pytest.mark.parametrize("state", STATES)
def test_staying_put_allowed(state):
    assert can_move(state, state)


@pytest.mark.parametrize("state", PIPELINE[:-1])
def test_failed_from_every_live_state(state):
    assert can_move(state, "failed")


@pytest.mark.parametrize("terminal", ["completed", "failed"])
@pytest.mark.parametrize("new", [s for s in STATES])
def test_nothing_out_of_a_terminal_state(terminal, new):
    assert can_move(terminal, new) is (new == terminal)


@pytest.mark.parametrize("current,new", [
    ("discovered", "discovering"), ("loaded", "syncing"), ("analyzing", "requested"), ("staged", "discovered"),
])
def test_backward_refused(current, new):
    assert not can_move(current, new)


def test_unknown_state_refused():
    assert not can_move("requested", "exploded")


def test_apply_state_refuses_illegal_move():
    doc = new_job(JOB, "acme")
    apply_state(doc, "completed")
    with pytest.raises(InputError):
        apply_state(doc, "failed")


def test_stage_seconds_known_answer():
    history = [{"state": "requested", "at": "2025-01-01T00:00:00.000+00:00"},
               {"state": "discovering", "at": "2025-01-01T00:00:01.000+00:00"},
               {"state": "discovered", "at": "2025-01-01T00:00:03.500+00:00"},
               {"state": "syncing", "at": "2025-01-01T00:00:04.000+00:00"},
               {"state": "staged", "at": "2025-01-01T00:01:04.250+00:00"},
               {"state": "loading", "at": "2025-01-01T00:01:05.000+00:00"}]
    assert stage_seconds(history) == {"discover": 2.5, "sync": 60.25}


def test_new_job_document():
    doc = new_job(JOB, "acme", hint="sales.csv", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert doc["state"] == "requested"
    assert doc["version"] == 1
    assert doc["history"] == [{"state": "requested", "at": doc["created_at"]}]
    assert doc["created_at"] == doc["updated_at"]
    assert (doc["stage_seconds"], doc["error"], doc["tables"]) == ({}, None, {})
    assert_valid(doc)


# --- Jobs over a store ------------------------------------------------------------------------

@pytest.fixture
def changes():
    return []


@pytest.fixture
def jobs(tmp_path, changes):
    return Jobs(TenantStore(LocalStore(tmp_path / "store"), "acme"), on_change=lambda doc: changes.append(
        (doc["state"], doc["version"])))


def test_create_stores_the_document(jobs, tmp_path, changes):
    doc = jobs.create(JOB, hint="sales.csv")
    stored = json.loads((tmp_path / "store" / "tenants" / "acme" / "jobs" / f"{JOB}.json").read_bytes())
    assert stored == doc == jobs.get(JOB)
    assert doc["tenant"] == "acme" and doc["hint"] == "sales.csv"
    assert changes == [("requested", 1)]
    assert_valid(doc)


def test_create_is_idempotent(jobs, changes):
    first = jobs.create(JOB, hint="first")
    jobs.move(JOB, "discovering")
    second = jobs.create(JOB, hint="second")
    assert second["hint"] == "first"
    assert second["state"] == "discovering"
    assert second["created_at"] == first["created_at"]
    assert changes == [("requested", 1), ("discovering", 2)]  # the redelivered create told nobody


def test_ensure(jobs, changes):
    created = jobs.ensure(JOB, hint="h")
    assert jobs.ensure(JOB, hint="other") == created
    assert len(changes) == 1


def test_get_missing_and_invalid(jobs):
    with pytest.raises(NotFound):
        jobs.get(JOB)
    with pytest.raises(InputError):
        jobs.get("../../beta/jobs/x")
    with pytest.raises(InputError):
        jobs.create("job-XYZ")


def test_move_records_history_and_stage_seconds(jobs):
    jobs.create(JOB)
    doc = jobs.move(JOB, "discovering")
    assert doc["stage_seconds"] == {}
    doc = jobs.move(JOB, "discovered", source_id="src-1")
    assert set(doc["stage_seconds"]) == {"discover"}
    assert doc["source_id"] == "src-1"
    doc = jobs.move(JOB, "syncing")
    doc = jobs.move(JOB, "staged", tables={"demo__sales": {"rows": 10}})
    assert set(doc["stage_seconds"]) == {"discover", "sync"}
    doc = jobs.move(JOB, "loading")
    doc = jobs.move(JOB, "loaded", tables={"demo__regions": {"rows": 4}})
    assert set(doc["stage_seconds"]) == {"discover", "sync", "load"}
    assert doc["tables"] == {"demo__sales": {"rows": 10}, "demo__regions": {"rows": 4}}
    doc = jobs.move(JOB, "analyzing")
    doc = jobs.move(JOB, "completed", artifacts_index="artifacts/job-0123456789abcdef/index.json")
    assert set(doc["stage_seconds"]) == {"discover", "sync", "load", "analyze"}
    assert all(v >= 0 for v in doc["stage_seconds"].values())
    assert [h["state"] for h in doc["history"]] == PIPELINE
    assert doc["version"] == 9
    assert doc == jobs.get(JOB)
    assert_valid(doc)


def test_move_to_the_same_state_is_a_noop(jobs, changes):
    jobs.create(JOB)
    first = jobs.move(JOB, "discovering")
    again = jobs.move(JOB, "discovering")
    assert again == first
    assert changes == [("requested", 1), ("discovering", 2)]


def test_same_state_with_fields_updates_without_new_history(jobs, changes):
    jobs.create(JOB)
    jobs.move(JOB, "loading")
    doc = jobs.move(JOB, "loading", tables={"t": {"rows": 1}})
    assert [h["state"] for h in doc["history"]] == ["requested", "loading"]
    assert doc["tables"] == {"t": {"rows": 1}}
    assert doc["version"] == 3
    assert len(changes) == 3


def test_late_backward_move_is_ignored(jobs, changes):
    jobs.create(JOB)
    jobs.move(JOB, "loaded")
    before = jobs.get(JOB)
    after = jobs.move(JOB, "syncing")
    assert after == before
    assert jobs.get(JOB)["state"] == "loaded"
    assert [h["state"] for h in jobs.get(JOB)["history"]] == ["requested", "loaded"]
    assert changes == [("requested", 1), ("loaded", 2)]


def test_unknown_state_is_ignored(jobs):
    jobs.create(JOB)
    assert jobs.move(JOB, "exploded")["state"] == "requested"


def test_move_of_a_missing_job(jobs):
    with pytest.raises(NotFound):
        jobs.move(JOB, "discovering")


def test_fail_sets_error(jobs, changes):
    jobs.create(JOB)
    jobs.move(JOB, "syncing")
    doc = jobs.fail(JOB, stage="sync", function="udb-sync", reason="ragged CSV at line 3")
    assert doc["state"] == "failed"
    assert doc["error"] == {"stage": "sync", "function": "udb-sync", "reason": "ragged CSV at line 3"}
    assert [h["state"] for h in doc["history"]] == ["requested", "syncing", "failed"]
    assert doc == jobs.get(JOB)
    assert changes[-1] == ("failed", 3)
    assert_valid(doc)


def test_fail_creates_an_unknown_job(jobs):
    doc = jobs.fail(JOB, stage="discover", function="udb-discover", reason="bad hint")
    assert doc["state"] == "failed"
    assert [h["state"] for h in doc["history"]] == ["requested", "failed"]


def test_fail_after_completion_changes_nothing(jobs, changes):
    jobs.create(JOB)
    jobs.move(JOB, "completed")
    doc = jobs.fail(JOB, stage="analyze", function="udb-analyze", reason="late")
    assert doc["state"] == "completed"
    assert doc["error"] is None
    assert len(changes) == 2


def test_every_document_validates(jobs):
    docs = [jobs.create(JOB, hint="x")]
    for state in PIPELINE[1:5]:
        docs.append(jobs.move(JOB, state, tables={state: {"rows": 1}}))
    docs.append(jobs.fail(JOB, stage="load", function="udb-writer", reason="boom"))
    for doc in docs:
        assert_valid(doc)


def test_on_change_once_per_real_change(jobs, changes):
    jobs.create(JOB)
    jobs.create(JOB)
    jobs.move(JOB, "discovering")
    jobs.move(JOB, "discovering")
    jobs.move(JOB, "requested")
    jobs.move(JOB, "discovered")
    jobs.fail(JOB, stage="sync", function="udb-sync", reason="x")
    jobs.move(JOB, "completed")
    jobs.move(JOB, "failed")
    assert changes == [("requested", 1), ("discovering", 2), ("discovered", 3), ("failed", 4)]


def test_a_failed_job_keeps_its_first_error(jobs, changes):
    jobs.create(JOB)
    first = jobs.fail(JOB, stage="sync", function="udb-sync", reason="ragged CSV")
    again = jobs.fail(JOB, stage="load", function="udb-writer", reason="late redelivery")
    assert again == first == jobs.get(JOB)
    assert jobs.get(JOB)["error"] == {"stage": "sync", "function": "udb-sync", "reason": "ragged CSV"}
    assert changes == [("requested", 1), ("failed", 2)]


def test_jobs_are_tenant_scoped(tmp_path):
    base = LocalStore(tmp_path / "store")
    acme, beta = Jobs(TenantStore(base, "acme")), Jobs(TenantStore(base, "beta"))
    acme.create(JOB)
    with pytest.raises(NotFound):
        beta.get(JOB)


# --- concurrency ------------------------------------------------------------------------------

def _run(n, target):
    barrier = threading.Barrier(n)
    errors = []

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []


def test_two_threads_racing_through_the_pipeline_lose_no_history(jobs, changes):
    jobs.create(JOB)

    def walker(_):
        for state in PIPELINE[1:]:
            jobs.move(JOB, state)

    _run(2, walker)
    doc = jobs.get(JOB)
    # Each state is recorded exactly once, in order, whoever recorded it.
    assert [h["state"] for h in doc["history"]] == PIPELINE
    assert doc["version"] == len(PIPELINE)
    # One notification per recorded state; two threads may deliver them out of order, the
    # version says which came first.
    assert sorted(changes, key=lambda c: c[1]) == [(s, v) for v, s in enumerate(PIPELINE, start=1)]


def test_concurrent_field_updates_lose_nothing(jobs, changes):
    jobs.create(JOB)

    def loader(i):
        jobs.move(JOB, "loading", tables={f"t{i}": {"rows": i}})

    _run(8, loader)
    doc = jobs.get(JOB)
    assert doc["tables"] == {f"t{i}": {"rows": i} for i in range(8)}
    assert [h["state"] for h in doc["history"]] == ["requested", "loading"]
    assert doc["version"] == 9
    assert sorted(v for _, v in changes) == list(range(1, 10))


# --- one invocation's memory of its job (jobs.remembered) ---------------------------------------

class CountingStore(LocalStore):
    """The local store, counting the requests a job document costs (GET / PUT by outcome)."""

    def __init__(self, root):
        super().__init__(root)
        self.calls: list[str] = []

    def get(self, key):
        self.calls.append("get")
        return super().get(key)

    def put(self, key, data, **kw):
        try:
            etag = super().put(key, data, **kw)
        except PreconditionFailed:
            self.calls.append("put-refused")
            raise
        self.calls.append("put")
        return etag


@pytest.fixture
def counting(tmp_path):
    return CountingStore(tmp_path / "store")


def _handler_work(jobs: Jobs) -> None:
    """What a function's invocation does with its job: the redelivery check (runtime._finished),
    ensure, the -ing state, the done state."""
    jobs.get(JOB)
    jobs.ensure(JOB)
    jobs.move(JOB, "syncing", source_id="src-1")
    jobs.move(JOB, "staged", tables={"demo__sales": {"rows": 10}})


def test_an_invocation_reads_its_job_once_then_only_writes(counting, changes):
    Jobs(TenantStore(counting, "acme")).create(JOB)
    counting.calls.clear()
    with remembered():
        _handler_work(Jobs(TenantStore(counting, "acme"), on_change=lambda d: changes.append(d["state"])))
    assert counting.calls == ["get", "put", "put"]  # was 4 GETs and 2 PUTs
    doc = Jobs(TenantStore(counting, "acme")).get(JOB)
    assert [h["state"] for h in doc["history"]] == ["requested", "syncing", "staged"]
    assert (doc["source_id"], doc["tables"], doc["version"]) == ("src-1", {"demo__sales": {"rows": 10}}, 3)
    assert changes == ["syncing", "staged"]
    # Outside an invocation nothing is remembered: every change reads the document first.
    counting.calls.clear()
    jobs = Jobs(TenantStore(counting, "acme"))
    jobs.move(JOB, "loading")
    jobs.move(JOB, "loaded")
    assert counting.calls == ["get", "put", "get", "put"]


def test_a_change_made_by_another_writer_meanwhile_is_kept(counting):
    """The remembered version is stale once someone else wrote the document: the write from it
    is refused (If-Match) and the change is made again on the stored version, losing nothing."""
    Jobs(TenantStore(counting, "acme")).create(JOB)
    counting.calls.clear()
    with remembered():
        jobs = Jobs(TenantStore(counting, "acme"))
        jobs.get(JOB)

        def other_writer():  # another process: a thread has a context (and a memory) of its own
            Jobs(TenantStore(counting, "acme")).annotate(JOB, accepted=True)
        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join()
        assert counting.calls == ["get", "get", "put"]  # ours, then the other writer's read and write
        counting.calls.clear()
        jobs.move(JOB, "discovering")
        assert counting.calls == ["put-refused", "get", "put"]
        counting.calls.clear()
        jobs.move(JOB, "discovered")  # from the version it wrote itself again
        assert counting.calls == ["put"]
    doc = Jobs(TenantStore(counting, "acme")).get(JOB)
    assert doc["accepted"] is True and doc["state"] == "discovered" and doc["version"] == 4
    assert [h["state"] for h in doc["history"]] == ["requested", "discovering", "discovered"]


def test_a_remembered_version_never_moves_a_job_another_writer_finished(counting, changes):
    Jobs(TenantStore(counting, "acme")).create(JOB)
    with remembered():
        jobs = Jobs(TenantStore(counting, "acme"), on_change=lambda d: changes.append(d["state"]))
        jobs.move(JOB, "loading")
        thread = threading.Thread(target=lambda: Jobs(TenantStore(counting, "acme")).fail(
            JOB, stage="load", function="writer", reason="cancelled"))
        thread.start()
        thread.join()
        doc = jobs.move(JOB, "loaded")
    assert doc["state"] == "failed" and doc["error"]["reason"] == "cancelled"
    assert Jobs(TenantStore(counting, "acme")).get(JOB)["state"] == "failed"
    assert changes == ["loading"]


def test_the_memory_lasts_one_invocation_and_one_tenant(counting):
    base = TenantStore(counting, "acme")
    Jobs(base).create(JOB)
    Jobs(TenantStore(counting, "beta")).create(JOB)
    with remembered():
        Jobs(base).move(JOB, "discovering")
    counting.calls.clear()
    with remembered():  # the next invocation starts from the stored document
        Jobs(base).move(JOB, "discovered")
        assert counting.calls == ["get", "put"]
        counting.calls.clear()
        # Another tenant's job of the same id is its own document, read on its own.
        Jobs(TenantStore(counting, "beta")).move(JOB, "syncing")
        assert counting.calls == ["get", "put"]
    assert Jobs(TenantStore(counting, "beta")).get(JOB)["history"][-1]["state"] == "syncing"
    assert Jobs(base).get(JOB)["state"] == "discovered"


def test_invocations_racing_through_the_pipeline_lose_no_history(jobs, changes):
    jobs.create(JOB)

    def walker(_):
        with remembered():
            for state in PIPELINE[1:]:
                jobs.move(JOB, state, tables={f"t-{state}": {"rows": 1}})

    _run(2, walker)
    doc = jobs.get(JOB)
    assert [h["state"] for h in doc["history"]] == PIPELINE
    assert set(doc["tables"]) == {f"t-{s}" for s in PIPELINE[1:]}


def test_a_job_found_missing_is_created_without_reading_again_and_one_made_meanwhile_is_kept(counting):
    with remembered():
        jobs = Jobs(TenantStore(counting, "acme"))
        with pytest.raises(NotFound):
            jobs.get(JOB)
        jobs.ensure(JOB, hint="sales.csv")
        assert counting.calls == ["get", "put"]  # the redelivery check's read, then the new job
    counting.calls.clear()
    with remembered():
        jobs = Jobs(TenantStore(counting, "acme"))
        with pytest.raises(NotFound):
            jobs.get("job-00000000000000b2")
        # Made by someone else meanwhile: put-if-absent refuses, the stored job is read and kept.
        thread = threading.Thread(target=lambda: Jobs(TenantStore(counting, "acme")).create(
            "job-00000000000000b2", hint="theirs"))  # another process: its own context
        thread.start()
        thread.join()
        assert jobs.ensure("job-00000000000000b2", hint="ours")["hint"] == "theirs"
        # A move never trusts the absence it remembers: it reads the job made meanwhile.
        assert jobs.move("job-00000000000000b2", "discovering")["state"] == "discovering"
    assert counting.calls == ["get", "put", "put-refused", "get", "put"]

"""shared/storage/jobindex.py: a job's index.json, its report page index.html, and the reports' state."""
from __future__ import annotations

import hashlib
import json
import threading

import pytest

from shared.core.errors import PreconditionFailed
from shared.storage import jobindex
from shared.storage.store import LocalStore, TenantStore

pytestmark = pytest.mark.unit

JOB = "job-00000000000000c1"


@pytest.fixture
def store(tmp_path):
    return TenantStore(LocalStore(tmp_path / "store"), "acme")


def test_plan_reports():
    plan = jobindex.plan_reports(["sales", "stock"], snapshots={"stock"}, charts=3)
    assert [i["id"] for i in plan] == ["ydata:sales", "evidently-summary:sales", "ydata:stock",
                                       "evidently-summary:stock", "evidently-drift:stock", "png-charts"]
    assert all(i["state"] == "pending" and i["reason"] is None for i in plan)
    assert plan[1]["artifacts"] == ["quality-sales.html", "quality-sales.json"]
    assert plan[4]["artifacts"] == ["evidently-drift-stock.html", "evidently-drift-stock.json"]
    assert plan[5]["title"] == "PNG images of the 3 chart(s)" and plan[5]["table"] is None
    off = jobindex.plan_reports(["t"], charts=1, chart_png=False)[-1]
    assert (off["state"], off["reason"]) == ("skipped", "PNG charts are turned off (UDB_CHART_PNG=0)")
    assert jobindex.plan_reports(["t"], charts=0)[-1]["id"] == "evidently-summary:t"
    assert jobindex.plan_reports([]) == []


@pytest.mark.parametrize("states,overall", [
    (["pending", "failed", "ready"], "pending"),
    (["ready", "failed", "skipped"], "failed"),
    (["skipped", "skipped"], "skipped"),
    (["ready", "skipped"], "ready"),
    ([], "ready"),
])
def test_overall_state(states, overall):
    assert jobindex.overall_state([{"state": s} for s in states]) == overall


def test_job_reports_counts_every_state():
    items = [{"id": "a", "state": "ready", "reason": None}, {"id": "b", "state": "failed", "reason": "oom"},
             {"id": "c", "state": "failed", "reason": "deadline"}, {"id": "d", "state": "skipped", "reason": "off"}]
    doc = jobindex.job_reports(items, reason="two failed", seconds=1.5)
    assert doc["state"] == "failed"
    assert doc["counts"] == {"pending": 0, "ready": 1, "failed": 2, "skipped": 1}
    assert (doc["reason"], doc["seconds"]) == ("two failed", 1.5)
    assert doc["items"] == [{"id": "a", "state": "ready", "reason": None}, {"id": "b", "state": "failed", "reason": "oom"},
                            {"id": "c", "state": "failed", "reason": "deadline"},
                            {"id": "d", "state": "skipped", "reason": "off"}]
    assert doc["updated_at"].endswith("+00:00")


def test_fail_pending_only_touches_pending():
    index = {"reports": [{"state": "pending", "reason": None}, {"state": "ready", "reason": None},
                         {"state": "skipped", "reason": "off"}]}
    jobindex.fail_pending(index, "dead-lettered")
    assert [(i["state"], i["reason"]) for i in index["reports"]] == \
        [("failed", "dead-lettered"), ("ready", None), ("skipped", "off")]
    jobindex.fail_pending({}, "nothing to do")


def test_artifacts_record_size_and_sha(store):
    for parallel in (False, True):
        artifacts = jobindex.Artifacts(store, JOB, parallel=parallel)
        artifacts.put("a.txt", "héllo", "text/plain", "a greeting", table="sales", rows=1)
        artifacts.put_json("b.json", {"x": [1, 2]}, "numbers")
        artifacts.flush()
        artifacts.close()
        assert store.get(store.artifact_key(JOB, "a.txt")).data == "héllo".encode()
        body = json.dumps({"x": [1, 2]}, indent=2).encode()
        assert store.get(store.artifact_key(JOB, "b.json")).data == body
        assert artifacts.entries == [
            {"name": "a.txt", "media_type": "text/plain", "bytes": 6, "sha256": hashlib.sha256("héllo".encode()).hexdigest(),
             "description": "a greeting", "table": "sales", "rows": 1},
            {"name": "b.json", "media_type": "application/json", "bytes": len(body),
             "sha256": hashlib.sha256(body).hexdigest(), "description": "numbers", "table": None}]


def test_parallel_uploads_raise_the_first_failure_at_flush(store):
    artifacts = jobindex.Artifacts(store, JOB, parallel=True)
    try:
        artifacts.put("ok.txt", b"1", "text/plain", "fine")
        with pytest.raises(Exception, match="invalid artifact name"):
            artifacts.put("../escape", b"1", "text/plain", "bad")   # refused before it is queued
    finally:
        artifacts.flush()
        artifacts.close()
    assert [e["name"] for e in artifacts.entries] == ["ok.txt"]


def _index(store) -> dict:
    artifacts = jobindex.Artifacts(store, JOB)
    artifacts.put("profile-sales.html", "<p>x</p>", "text/html", "Profile of `sales`", table="sales")
    artifacts.put("chart-1.png", b"\x89PNG", "image/png", "Revenue by month", table="sales")
    artifacts.put("summary.json", b"{}", "application/json", "Summary")
    return {"job_id": JOB, "tenant": "acme", "tables": ["sales"], "artifacts": artifacts.entries,
            "notes": [{"kind": "row_cap", "message": "only 10 rows <profiled>"}],
            "reports": jobindex.plan_reports(["sales"], charts=1)}


def test_save_writes_the_page_then_the_index_describing_it(store):
    index = _index(store)
    jobindex.save(store, index, facts=[{"text": "`sales` has 10 rows"}])
    written, etag = jobindex.load(store, JOB)
    page = store.get(store.artifact_key(JOB, "index.html")).data
    assert [e["name"] for e in written["artifacts"]] == ["profile-sales.html", "chart-1.png", "summary.json",
                                                          "index.html"]
    assert written["artifacts"][-1]["bytes"] == len(page)
    assert written["artifacts"][-1]["sha256"] == hashlib.sha256(page).hexdigest()
    html = page.decode()
    assert f'<meta http-equiv="refresh" content="{jobindex.REFRESH_SECONDS}"' in html   # reports pending
    assert "<code>sales</code> has 10 rows" in html
    assert "only 10 rows &lt;profiled&gt;" in html and "<profiled>" not in html
    assert 'href="profile-sales.html"' in html and 'src="chart-1.png"' in html
    assert "<script" not in html
    # Saving again keeps one index.html entry.
    jobindex.save(store, written, facts=[])
    assert [e["name"] for e in jobindex.load(store, JOB)[0]["artifacts"]].count("index.html") == 1


def test_save_is_conditional_on_if_match(store):
    jobindex.save(store, _index(store), facts=[])
    index, etag = jobindex.load(store, JOB)
    index["notes"].append({"kind": "note", "message": "first writer"})
    jobindex.save(store, index, facts=[], if_match=etag)
    index["notes"].append({"kind": "note", "message": "second writer, stale etag"})
    with pytest.raises(PreconditionFailed):
        jobindex.save(store, index, facts=[], if_match=etag)
    assert [n["message"] for n in jobindex.load(store, JOB)[0]["notes"]][-1] == "first writer"


def test_update_marks_reports_and_the_page_stops_refreshing(store):
    jobindex.save(store, _index(store), facts=[])

    def all_ready(index):
        for item in index["reports"]:
            item["state"] = "ready"

    index = jobindex.update(store, JOB, all_ready)
    assert jobindex.overall_state(index["reports"]) == "ready"
    html = store.get(store.artifact_key(JOB, "index.html")).data.decode()
    assert 'http-equiv="refresh"' not in html


def test_concurrent_updates_all_land(store):
    jobindex.save(store, _index(store), facts=[])

    def add_note(n):
        return lambda index: index["notes"].append({"kind": "note", "message": f"n{n}"})

    threads = [threading.Thread(target=jobindex.update, args=(store, JOB, add_note(n))) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    notes = {n["message"] for n in jobindex.load(store, JOB)[0]["notes"]}
    assert notes == {"only 10 rows <profiled>"} | {f"n{n}" for n in range(6)}


def test_facts_of_reads_the_summary_or_nothing(store):
    assert jobindex.facts_of(store, JOB) == []
    store.put(store.artifact_key(JOB, "summary.json"), json.dumps({"facts": [{"text": "a"}]}).encode())
    assert jobindex.facts_of(store, JOB) == [{"text": "a"}]
    store.put(store.artifact_key(JOB, "summary.json"), b"not json")
    assert jobindex.facts_of(store, JOB) == []


@pytest.mark.parametrize("n,text", [(None, ""), (0, "0 B"), (1023, "1,023 B"), (1024, "1.0 KB"),
                                    (1536 * 1024, "1.5 MB"), (5 * 1024 ** 4, "5,120.0 GB")])
def test_sizes_on_the_page(n, text):
    assert jobindex._size(n) == text


def test_jobs_share_the_processs_upload_threads(store):
    """Two jobs' parallel uploads run on one pool made once per process; each job's flush waits
    for its own uploads only, and closing a job leaves the pool to the next."""
    import threading
    pool = jobindex.upload_pool()
    before = {t.ident for t in threading.enumerate() if t.name.startswith("udb-artifacts")}
    for job in ("job-00000000000000a1", "job-00000000000000a2"):
        artifacts = jobindex.Artifacts(store, job, parallel=True)
        for i in range(20):
            artifacts.put(f"part-{i}.txt", str(i), "text/plain", f"part {i}")
        artifacts.flush()
        artifacts.close()
        assert [store.get(store.artifact_key(job, f"part-{i}.txt")).data for i in range(20)] == \
            [str(i).encode() for i in range(20)]
    assert jobindex.upload_pool() is pool
    after = {t.ident for t in threading.enumerate() if t.name.startswith("udb-artifacts")}
    assert len(after) <= jobindex.UPLOAD_THREADS and before <= after

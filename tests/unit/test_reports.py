"""The split of the analysis: analyze answers from DuckDB alone, the reports function renders the
heavy reports on the side (its plan, its page, its bounds, its escaping)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from functions.reports import bounded, engines
from shared.storage import jobindex

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
HEAVY = ("ydata_profiling", "evidently", "kaleido", "choreographer", "plotly.io._kaleido", "matplotlib")


def test_analyze_path_imports_no_heavy_library(tmp_path):
    """In a fresh interpreter: import analyze's handler and run a whole analysis (profile, KPIs,
    HTML charts, summary, the index with its pending reports); none of the report engines, nor
    kaleido or plotly's image export, nor pandas, is imported on the way."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import functions.analyze.handler as analyze
        from shared.storage import duck, lake
        from shared.core import events
        from shared.serving import runtime
        from shared.core.settings import Settings

        home = Path({str(tmp_path)!r})
        settings = Settings.from_env(home=home, log_level="ERROR")
        ctx = runtime.start("analyze", settings)
        wh = home / "legacy.duckdb"  # built with plain DuckDB, then made the tenant's lake
        con = duck.connect(wh)
        con.execute("CREATE TABLE weather AS SELECT DATE '2020-01-01' + i::INTEGER AS day, "
                    "(i % 30)::DOUBLE AS temp, ['sun','rain','fog'][i % 3 + 1] AS sky FROM range(1461) t(i)")
        con.execute("CREATE SCHEMA udb_snapshots; CREATE TABLE udb_snapshots.weather AS SELECT * FROM weather")
        con.close()
        lake.create_from_warehouse(ctx.tenant_store("acme"), wh)
        event = events.make_event(events.ANALYZE_REQUESTED, {{}}, tenant="acme", job_id="job-00000000000000a1", function="test")
        reply = runtime.invoke(analyze.handle, event, ctx)
        doc = ctx.jobs("acme").get("job-00000000000000a1")
        print(json.dumps({{"reply": reply["type"], "state": doc["state"], "reports": doc["reports"]["state"],
                          "items": [i["id"] for i in doc["reports"]["items"]],
                          "heavy": sorted(m for m in {HEAVY!r} + ("pandas",) if m in sys.modules)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"reply": "dev.udb.analysis.completed", "state": "completed", "reports": "pending",
                      "items": ["ydata:weather", "evidently-summary:weather", "evidently-drift:weather",
                                "png-charts"],
                      "heavy": []}


def test_reports_plan_and_overall_state():
    plan = jobindex.plan_reports(["a", "b"], snapshots={"b"}, charts=3)
    assert [(i["id"], i["artifacts"]) for i in plan] == [
        ("ydata:a", ["ydata-a.html"]), ("evidently-summary:a", ["quality-a.html", "quality-a.json"]),
        ("ydata:b", ["ydata-b.html"]), ("evidently-summary:b", ["quality-b.html", "quality-b.json"]),
        ("evidently-drift:b", ["evidently-drift-b.html", "evidently-drift-b.json"]), ("png-charts", [])]
    assert jobindex.overall_state(plan) == "pending"
    off = jobindex.plan_reports(["a"], charts=1, chart_png=False)
    assert off[-1]["state"] == "skipped" and "UDB_CHART_PNG=0" in off[-1]["reason"]
    for item in plan:
        item["state"] = "ready"
    assert jobindex.overall_state(plan) == "ready"
    plan[0].update(state="failed", reason="ValueError: Too many bins for data range.")
    doc = jobindex.job_reports(plan)
    assert doc["state"] == "failed" and doc["counts"] == {"pending": 0, "ready": 5, "failed": 1, "skipped": 0}
    assert doc["items"][0] == {"id": "ydata:a", "state": "failed", "reason": "ValueError: Too many bins for data range."}
    assert jobindex.overall_state([dict(i, state="skipped") for i in plan]) == "skipped"


def test_report_page_shows_pending_then_rendered_reports():
    plan = jobindex.plan_reports(["t<b>"], charts=1)
    index = {"job_id": "job-00000000000000a1", "tenant": "acme", "tables": ["t<b>"], "artifacts": [], "notes": [], "reports": plan}
    pending = jobindex.render_index_html(index, [])
    assert '<meta http-equiv="refresh" content="3">' in pending  # reloads itself while pending
    assert pending.count("class='state pending'") == 3 and "3 report(s) are rendering" in pending
    assert "t<b>" not in pending and "t&lt;b&gt;" in pending
    plan[0].update(state="ready", seconds=4.25, artifacts=["ydata-t<b>.html"])
    plan[1].update(state="failed", reason="stopped: still running after the deadline of 120 s <x>")
    plan[2].update(state="ready", seconds=2.0)
    entries = [{"name": "ydata-t<b>.html", "media_type": "text/html", "bytes": 10, "description": "ydata", "table": "t<b>"}]
    done = jobindex.render_index_html(index, entries)
    assert "http-equiv" not in done and "rendering" not in done
    assert '<a href="ydata-t&lt;b&gt;.html">ydata-t&lt;b&gt;.html</a> <span class=\'muted\'>in 4.2 s</span>' in done
    assert "deadline of 120 s &lt;x&gt;" in done and "class='state failed'" in done


def test_engines_see_escaped_names_and_values_and_at_most_max_columns():
    con = duckdb.connect()
    columns = ", ".join(f"i + {n} AS c{n}" for n in range(250))
    con.execute(f"""CREATE TABLE wide AS SELECT '</script><script>alert(1)</script>' || (i % 3) AS "<script>x</script>",
                    'a & b' AS amp, {columns} FROM range(20) t(i)""")
    frame, note = engines.sample_frame(con, "wide", 1000, max_columns=200)
    assert (note["columns"], note["reported_columns"], note["total_rows"]) == (252, 200, 20)
    assert list(frame.columns)[:3] == ["<script>x</script>", "amp", "c0"] and len(frame.columns) == 200
    prepared = engines.prepare_frame(frame)
    assert list(prepared.columns)[:2] == ["&lt;script&gt;x&lt;/script&gt;", "amp"]
    assert sorted(prepared.iloc[:, 0].unique()) == [
        f"&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;{k}" for k in range(3)]
    assert set(prepared["amp"]) == {"a &amp; b"} and prepared["c197"].tolist() == [i + 197 for i in range(20)]
    assert engines.columns_text(note) == ("Reported on the first 200 of 252 columns (UDB_REPORTS_MAX_COLUMNS); "
                                          "the DuckDB profile covers every column.")
    assert engines.sample_frame(con, "wide", 1000)[1]["reported_columns"] == 252  # 0: no cap


def _spec(tmp_path, kind="ydata", **extra) -> dict:
    warehouse = tmp_path / "w.duckdb"
    if not warehouse.exists():
        con = duckdb.connect(str(warehouse))
        con.execute("CREATE TABLE t AS SELECT i AS a, (i % 7)::VARCHAR AS b FROM range(200) t(i)")
        con.close()
    return {"kind": kind, "table": "t", "warehouse": str(warehouse), "out": str(tmp_path / f"out-{kind}"),
            "sample_rows": 1000, "max_columns": 200, "faults": "", **extra}


def test_bounded_render_records_a_crash_a_deadline_and_a_memory_bound(tmp_path, settings):
    killed = bounded.run(_spec(tmp_path, faults="reports.ydata"), tmp_path, deadline=120, memory_mb=0,
                         settings=settings)
    assert not killed.ok and killed.reason.startswith("the renderer process died: killed by signal 9 (SIGKILL)")
    raised = bounded.run(_spec(tmp_path, faults="reports.ydata:raise"), tmp_path, deadline=120, memory_mb=0,
                         settings=settings)
    assert not raised.ok and raised.reason == "RuntimeError: fault injected at reports.ydata"
    late = bounded.run(_spec(tmp_path), tmp_path, deadline=0.5, memory_mb=0, settings=settings)
    assert not late.ok and late.reason == ("stopped: still running after the deadline of 0.5 s "
                                           "(UDB_REPORTS_DEADLINE_SECONDS)") and late.seconds < 5
    big = bounded.run(_spec(tmp_path), tmp_path, deadline=120, memory_mb=40, settings=settings)
    assert not big.ok and big.reason.startswith("stopped: used ") and "above the memory bound of 40 MB" in big.reason
    assert big.peak_rss_mb > 40
    assert not list(tmp_path.glob("spec-*.json")) and not list(tmp_path.glob("stderr-*.txt"))  # cleaned up


def test_warm_children_are_handed_out_render_once_and_are_replaced_or_stopped(tmp_path, settings):
    """A child started ahead has imported its engine when its report comes: the pool hands out
    that very process, which renders the report (with the deadline counted from the hand-out)
    and exits; with `keep` a new one waits for the next report; `close` stops the idle ones."""
    import psutil

    pool, saved = bounded.WarmPool(), bounded.POOL
    bounded.POOL = pool
    try:
        pool.warm_up(("ydata",), keep=True, nice=5)
        waiting = pool._idle["ydata"][0]
        # It imports ydata-profiling and then waits: its memory grows past what a bare
        # interpreter holds (about 10 MB) while nothing is asked of it.
        process = psutil.Process(waiting.pid)
        for _ in range(600):
            if process.memory_info().rss > 150 * 2**20:
                break
            time.sleep(0.1)
        assert process.nice() == 5 and waiting.poll() is None
        outcome = bounded.run(_spec(tmp_path), tmp_path, deadline=120, memory_mb=0, settings=settings)
        assert outcome.ok, outcome.reason
        assert [a["name"] for a in outcome.result["artifacts"]] == ["ydata-t.html"]
        assert waiting.poll() == 0  # that child rendered it and exited
        replacement = pool._idle["ydata"][0]
        assert replacement.pid != waiting.pid and replacement.poll() is None
        pool.close()
        assert replacement.wait(timeout=10) == -9 and pool._idle == {}
    finally:
        pool.close()
        bounded.POOL = saved


def test_a_warm_child_without_a_spec_exits_having_rendered_nothing(tmp_path):
    child = subprocess.run([sys.executable, "-m", "functions.reports.render", "--warm", "png"], cwd=REPO,
                           input=b"", capture_output=True, timeout=120)
    assert child.returncode == 0 and not list(tmp_path.iterdir())

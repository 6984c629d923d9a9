"""The report engines on the issue-23 table: 4,000 integer columns x 20 rows (a 250 KB CSV that
grew a worker to 22.9 GB). The reports function alone, called as the Broker would on a
completed job: each engine sees the first UDB_REPORTS_MAX_COLUMNS columns and runs in its
bounded child process; within about a minute and far below the memory bound each report is
either rendered (the index says it was capped) or stopped at its deadline (the index says so),
and the job stays completed. On this shared 2-CPU machine ydata-profiling on 200 columns did not
finish in 120 s (peak 400 MB): the deadline stopped it, as it should."""
from __future__ import annotations

import json
import time

import pytest

from functions.reports import handler as reports
from shared.storage import duck, jobindex
from shared.core import events
from shared.serving import runtime
from shared.core.settings import Settings
from shared.storage import lake

pytestmark = [pytest.mark.reliability]
TENANT, JOB = "wide", "job-00000000000000e4"


def test_a_4000_column_table_is_reported_on_its_first_columns_within_bounds(tmp_path):
    settings = Settings.from_env(home=tmp_path, log_level="ERROR", reports_max_columns=200,
                                 reports_memory_mb=1536, reports_deadline_seconds=50, chart_png=False)
    ctx = runtime.start("reports", settings)
    store = ctx.tenant_store(TENANT)
    warehouse = tmp_path / "legacy.duckdb"  # built with plain DuckDB, then made the tenant's lake
    con = duck.connect(warehouse)
    con.execute("CREATE TABLE w AS SELECT " + ", ".join(f"(i * {n + 1}) % 97 AS c{n}" for n in range(4000))
                + " FROM range(20) t(i)")
    con.close()
    lake.create_from_warehouse(store, warehouse)
    jobs = ctx.jobs(TENANT)
    jobs.create(JOB, hint="wide.csv")
    for state in ("analyzing", "completed"):
        jobs.move(JOB, state)
    plan = jobindex.plan_reports(["w"], charts=0)
    jobindex.save(store, {"job_id": JOB, "tenant": TENANT, "tables": ["w"], "artifacts": [], "notes": [],
                          "reports": plan}, facts=[])

    started = time.perf_counter()
    event = events.make_event(events.ANALYSIS_COMPLETED, {"index": f"artifacts/{JOB}/index.json", "artifacts": 1,
                                                          "tables": ["w"]}, tenant=TENANT, job_id=JOB, function="test")
    reply = runtime.invoke(reports.handle, event, ctx)
    seconds = time.perf_counter() - started

    assert reply["type"] == events.REPORTS_RENDERED
    index = json.loads(store.get(store.artifact_key(JOB, "index.json")).data)
    by_id = {r["id"]: r for r in index["reports"]}
    for report in ("ydata:w", "evidently-summary:w"):
        item = by_id[report]
        assert item["state"] in ("ready", "failed"), json.dumps(item)
        if item["state"] == "ready":
            assert item["note"] == ("Reported on the first 200 of 4,000 columns (UDB_REPORTS_MAX_COLUMNS); "
                                    "the DuckDB profile covers every column.")
        else:
            assert item["reason"] == "stopped: still running after the deadline of 50 s (UDB_REPORTS_DEADLINE_SECONDS)"
            assert item["seconds"] < 60
        assert item["peak_rss_mb"] < 1536
        print(f"{report}: {item['state']} in {item['seconds']:.1f} s, peak {item['peak_rss_mb']:.0f} MB")
    if by_id["evidently-summary:w"]["state"] == "ready":
        summary = json.dumps(json.loads(store.get(store.artifact_key(JOB, "quality-w.json")).data))
        assert '"c199"' in summary and '"c200"' not in summary
    doc = jobs.get(JOB)
    assert doc["state"] == "completed" and doc["reports"]["state"] in ("ready", "failed")
    assert seconds < 75, seconds  # two reports at once, each stopped by 50 s at the latest
    print(f"reports of the 4,000-column table: {seconds:.1f} s")

"""The whole pipeline in one process, from a folder of files to analysed artifacts."""
from __future__ import annotations

import hashlib
import json

import duckdb
import pytest

from frontends import cli
from tests.conftest import write_sales

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "udb"
    monkeypatch.setenv("UDB_HOME", str(home))
    monkeypatch.setenv("UDB_REPORT_SAMPLE_ROWS", "4000")
    return home


def test_udb_run_loads_exact_rows_and_writes_every_artifact(home, tmp_path, capsys):
    folder = tmp_path / "shop"
    write_sales(folder / "sales.csv", 10_000)
    duckdb.execute(f"COPY (SELECT i AS customer_id, 'c' || i AS name FROM range(1, 501) t(i)) "
                   f"TO '{folder / 'customers.parquet'}' (FORMAT parquet)")

    assert cli.main(["run", str(folder), "--tenant", "shop-a"]) == 0
    out = capsys.readouterr().out.splitlines()
    job_id = out[0].split()[1]
    assert out[1:3] == ["table shop__customers: 500 rows", "table shop__sales: 10,000 rows"]
    base = home / "store" / "udb" / "tenants" / "shop-a" / "artifacts" / job_id
    # The core answer first (tables, top facts, the report page), then each report as it lands.
    facts = [line for line in out if line.startswith("fact ")]
    assert facts[0].startswith("fact Table `shop__customers` has 500 rows and 2 columns")
    assert 1 <= len(facts) <= cli.TOP_FACTS
    page_line = out.index(f"report page {base / 'index.html'}")
    core = next(i for i, line in enumerate(out) if line.startswith("completed in "))
    assert page_line < core and out[core].endswith("; 5 report(s) rendering")  # 2 tables x 2, PNG charts
    landed = [line for line in out[core + 1:] if line.startswith("report ")]
    assert sorted(line.split()[1] for line in landed) == [
        "evidently-summary:shop__customers", "evidently-summary:shop__sales", "png-charts",
        "ydata:shop__customers", "ydata:shop__sales"]
    assert all(" ready at " in line for line in landed), landed
    assert out[-1].startswith("reports ready in ") and out[-1].endswith("(5 of 5)")

    index = json.loads((base / "index.json").read_text())
    names = {a["name"] for a in index["artifacts"]}
    for table in ("shop__sales", "shop__customers"):
        for name in (f"profile-{table}.json", f"profile-{table}.html", f"ydata-{table}.html",
                     f"quality-{table}.html", f"quality-{table}.json", f"kpis-{table}.json"):
            assert name in names
    assert {"summary.md", "summary.json"} <= names
    assert any(n.startswith("chart-shop__sales-") for n in names)
    assert {r["id"]: r["state"] for r in index["reports"]} == {
        "ydata:shop__sales": "ready", "evidently-summary:shop__sales": "ready", "ydata:shop__customers": "ready",
        "evidently-summary:shop__customers": "ready", "png-charts": "ready"}
    for entry in index["artifacts"]:  # the index tells the truth about every file
        data = (base / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()

    profile = json.loads((base / "profile-shop__sales.json").read_text())
    assert profile["rows"] == 10_000 and profile["duplicate_rows"] == 0
    cols = {c["name"]: c for c in profile["column_profiles"]}
    amount = cols["amount"]  # (i % 100) for i in 0..9999
    assert (amount["min"], amount["max"], amount["mean"]) == (0, 99, 49.5)
    assert amount["quantiles"]["p50"] == pytest.approx(49.5, abs=0.5)
    assert amount["zeros"] == 100
    assert cols["discount"]["nulls"] == 1_000 and cols["discount"]["count"] == 9_000
    assert cols["region"]["distinct"] == 4
    assert sorted((t["value"], t["count"]) for t in cols["region"]["top_k"]) == [
        ("east", 2500), ("north", 2500), ("south", 2500), ("west", 2500)]
    assert cols["order_id"]["distinct"] == 10_000

    ydata = (base / "ydata-shop__sales.html").read_text()
    assert "4,000" in ydata and "10,000" in ydata  # says it is a sample, and of what

    summary = (base / "summary.md").read_text()
    assert "`shop__sales` has 10,000 rows" in summary

    assert cli.main(["status", job_id, "--tenant", "shop-a"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "completed"
    assert [h["state"] for h in status["history"]] == [
        "requested", "discovering", "discovered", "syncing", "staged", "loading", "loaded", "analyzing",
        "completed"]
    assert set(status["stage_seconds"]) == {"discover", "sync", "load", "analyze"}
    assert status["reports"]["state"] == "ready" and status["reports"]["counts"]["ready"] == 5
    assert status["tables"] == {"shop__customers": {"rows": 500}, "shop__sales": {"rows": 10_000}}
    events = [json.loads(line) for line in (home / "job-events.jsonl").read_text().splitlines()]
    assert [e["state"] for e in events if e["job"] == job_id] == [h["state"] for h in status["history"]]

    assert cli.main(["artifacts", job_id, "--tenant", "shop-a"]) == 0
    artifact_lines = capsys.readouterr().out.splitlines()
    assert len(artifact_lines) == len(index["artifacts"]) + 1  # and index.json itself
    for entry in index["artifacts"]:
        assert str(base / entry["name"]) in "\n".join(artifact_lines)


def test_second_run_reports_drift_on_the_shifted_column_only(home, tmp_path, capsys):
    path = write_sales(tmp_path / "shop" / "sales.csv", 6_000)
    assert cli.main(["run", str(path)]) == 0
    write_sales(path, 6_000, offset=60.0)  # amount shifts by +60; region and discount do not
    assert cli.main(["run", str(path)]) == 0
    jobs = sorted((home / "store" / "udb" / "tenants" / "demo" / "artifacts").iterdir(),
                  key=lambda p: p.stat().st_mtime)
    drift = json.loads((jobs[-1] / "drift-shop__sales.json").read_text())
    assert "amount" in drift["drifted_columns"]
    assert "region" not in drift["drifted_columns"] and "discount" not in drift["drifted_columns"]
    # nothing to compare the first load with: not even planned
    assert not (jobs[0] / "evidently-drift-shop__sales.json").exists()
    assert "evidently-drift:shop__sales" not in {r["id"] for r in
                                                 json.loads((jobs[0] / "index.json").read_text())["reports"]}


def _report_states(home, tenant: str, job_id: str) -> tuple[dict, dict, str]:
    base = home / "store" / "udb" / "tenants" / tenant / "artifacts" / job_id
    index = json.loads((base / "index.json").read_text())
    return {r["id"]: r for r in index["reports"]}, index, (base / "index.html").read_text()


def test_a_failing_report_leaves_the_job_completed_with_the_reason_in_the_index(home, tmp_path, capsys, monkeypatch):
    path = write_sales(tmp_path / "shop" / "sales.csv", 300)
    monkeypatch.setenv("UDB_CHART_PNG", "0")
    monkeypatch.setenv("UDB_FAULTS", "reports.ydata:raise")  # the engine raises (functions/reports/render.py)
    assert cli.main(["run", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    job_id = out[0].split()[1]
    assert any(line.startswith("report ydata:shop__sales failed at ") and
               line.endswith(": RuntimeError: fault injected at reports.ydata") for line in out), out
    assert out[-1].startswith("reports failed in ") and out[-1].endswith("1 of 3 ready, 1 failed (reasons on the report page)")
    reports, index, page = _report_states(home, "demo", job_id)
    assert reports["ydata:shop__sales"]["state"] == "failed"
    assert reports["ydata:shop__sales"]["reason"] == "RuntimeError: fault injected at reports.ydata"
    assert reports["evidently-summary:shop__sales"]["state"] == "ready"
    assert reports["png-charts"] == {**reports["png-charts"], "state": "skipped",
                                     "reason": "PNG charts are turned off (UDB_CHART_PNG=0)"}
    assert "ydata-shop__sales.html" not in {a["name"] for a in index["artifacts"]}
    assert "RuntimeError: fault injected at reports.ydata" in page and "http-equiv" not in page
    assert cli.main(["status", job_id]) == 0  # the job is fine: exit 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "completed" and status["error"] is None
    assert status["reports"]["state"] == "failed" and status["reports"]["counts"] == {
        "pending": 0, "ready": 1, "failed": 1, "skipped": 1}

    # The whole delivery fails (the function crashes before rendering): dead-lettered as the Broker
    # does (eventing/triggers.yaml's sink), and the dead letter marks every pending report failed.
    monkeypatch.setenv("UDB_FAULTS", "reports.before_render:raise")
    assert cli.main(["run", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    job_id = out[0].split()[1]
    reason = ("delivery of dev.udb.analysis.completed to embedded:udb-reports failed after all retries "
              "(HTTP 500): RuntimeError: fault injected at reports.before_render")
    reports, index, page = _report_states(home, "demo", job_id)
    assert {k: (r["state"], r["reason"]) for k, r in reports.items()} == {
        "ydata:shop__sales": ("failed", reason), "evidently-summary:shop__sales": ("failed", reason),
        "evidently-drift:shop__sales": ("failed", reason),  # the second load has a snapshot to compare with
        "png-charts": ("skipped", "PNG charts are turned off (UDB_CHART_PNG=0)")}
    assert reason in page
    assert cli.main(["status", job_id]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "completed" and status["reports"]["state"] == "failed"
    assert status["reports"]["reason"] == reason


def test_an_engine_error_is_the_reports_reason(home, tmp_path, capsys, monkeypatch):
    """A column whose values differ by one unit in the last place: numpy cannot make finite
    histogram bins for it, and the report that needs them says so."""
    folder = tmp_path / "odd"
    folder.mkdir()
    duckdb.execute(f"COPY (SELECT i AS id, CASE WHEN i % 2 = 0 THEN 1.0 ELSE 1.0000000000000002 END AS x "
                   f"FROM range(200) t(i)) TO '{folder / 'tiny.csv'}' (HEADER)")
    monkeypatch.setenv("UDB_CHART_PNG", "0")
    assert cli.main(["run", str(folder / "tiny.csv")]) == 0
    job_id = capsys.readouterr().out.splitlines()[0].split()[1]
    reports, _, page = _report_states(home, "demo", job_id)
    failed = {k: r["reason"] for k, r in reports.items() if r["state"] == "failed"}
    assert failed and all("Too many bins for data range" in reason for reason in failed.values()), reports
    assert "Too many bins for data range" in page


def test_no_reports_stops_after_the_core_answer(home, tmp_path, capsys):
    path = write_sales(tmp_path / "shop" / "sales.csv", 300)
    assert cli.main(["run", str(path), "--no-reports"]) == 0
    out = capsys.readouterr().out.splitlines()
    job_id = out[0].split()[1]
    assert out[-1].startswith("completed in ") and not any(line.startswith("report ") and " at " in line
                                                           for line in out)
    reports, index, page = _report_states(home, "demo", job_id)
    assert {r["state"] for r in reports.values()} == {"skipped"}
    assert all(r["reason"] == "not rendered: udb run --no-reports" for r in reports.values())
    assert not [a for a in index["artifacts"] if a["name"].startswith(("ydata-", "quality-"))]
    assert "http-equiv" not in page
    assert cli.main(["status", job_id]) == 0
    assert json.loads(capsys.readouterr().out)["reports"]["state"] == "skipped"


def test_hostile_names_and_values_reach_the_report_engines_escaped(home, tmp_path, capsys, monkeypatch):
    """Issue 16, finding 4: a column named like a script and cells that close a script element
    are HTML-escaped before ydata-profiling and Evidently see them, so their pages hold no raw
    markup of the data."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    name, cell = "<script>window.pwned=1</script>", "</script><script>window.pwned=2</script>"
    duckdb.execute(f"""COPY (SELECT i AS id, '{cell}' || (i % 3) AS "{name}" FROM range(60) t(i))
                       TO '{folder / 'h.csv'}' (HEADER)""")
    monkeypatch.setenv("UDB_CHART_PNG", "0")
    assert cli.main(["run", str(folder / "h.csv")]) == 0
    job_id = capsys.readouterr().out.splitlines()[0].split()[1]
    reports, index, _ = _report_states(home, "demo", job_id)
    base = home / "store" / "udb" / "tenants" / "demo" / "artifacts" / job_id
    table = index["tables"][0]
    for page in (f"ydata-{table}.html", f"quality-{table}.html"):
        text = (base / page).read_text()
        assert "window.pwned" in text  # the data is there ...
        scripts = _script_texts(text)
        assert scripts and not [s for s in scripts if "window.pwned=" in s and "&lt;" not in s
                                and "\\u003c" not in s.lower()], page  # ... but never as a script of its own


def _script_texts(page: str) -> list[str]:
    """The text of every <script> element an HTML parser finds in the page (quoted attribute
    values, where a minifier may leave `<` unescaped, are not elements)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Scripts(HTMLParser):
        inside = False

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                self.inside = True
                found.append("")

        def handle_endtag(self, tag):
            if tag == "script":
                self.inside = False

        def handle_data(self, data):
            if self.inside:
                found[-1] += data

    Scripts().feed(page)
    return found

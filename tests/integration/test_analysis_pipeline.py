"""The analysis with its pieces together, in one process: a real warehouse, the local object
store, the KPI routes called without a server, the tenant's KPIs guarded and run, PNG charts
rendered by the real Chromium (or skipped, and said so), the drift reference cache, the text
statistics of document fragments, and the metrics analyze observes.
"""
from __future__ import annotations

import json
import math

import duckdb
import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from shared.analysis.charts import find_chromium
from functions.artifacts.routes import ROUTES
from frontends import cli
from shared.core import events
from shared.observability import metrics
from shared.serving.embedded import Dispatcher
from shared.serving.httpfn import FunctionApp
from shared.core.settings import Settings
from shared.core.tenancy import new_job_id
from tests.conftest import write_sales

pytestmark = pytest.mark.integration
TENANT = "shop-kpi"


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "udb"
    for name, value in {"UDB_HOME": str(home), "UDB_REPORT_SAMPLE_ROWS": "500", "UDB_KPI_TIMEOUT_MS": "300",
                        "UDB_KPI_MAX_ROWS": "50"}.items():
        monkeypatch.setenv(name, value)
    return home


def write_fragments(path):
    """30 elements of 3 documents: every 3rd a Title, the rest NarrativeText."""
    duckdb.execute(f"""COPY (SELECT 'report-' || (i % 3) || '.pdf' AS document, 'el' || i AS element_id,
        CASE WHEN i % 3 = 0 THEN 'Title' ELSE 'NarrativeText' END AS element_type,
        CASE WHEN i % 3 = 0 THEN 'Revenue overview' ELSE 'Revenue grew in the northern region' END AS text,
        (i // 10 + 1)::INTEGER AS page, 'Overview' AS section, '{{}}' AS metadata FROM range(30) t(i))
        TO '{path}' (FORMAT parquet)""")


def call(app, method: str, path: str, body=None) -> tuple[int, dict | None]:
    request = Request(EnvironBuilder(method=method, path=path, json=body,
                                     headers={"X-UDB-Tenant": TENANT}).get_environ())
    payload, status, _ = app(request)
    return status, json.loads(payload) if payload else None


def artifacts_dir(home, job_id):
    return home / "store" / "udb" / "tenants" / TENANT / "artifacts" / job_id


def sample(name: str, labels: dict | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_tenant_kpis_charts_text_stats_and_metrics(home, tmp_path, capsys):
    folder = tmp_path / "shop"
    write_sales(folder / "sales.csv", 2_000)
    write_fragments(folder / "fragments.parquet")
    assert cli.main(["run", str(folder), "--tenant", TENANT, "--no-analyze"]) == 0
    capsys.readouterr()

    settings = Settings.from_env()
    dispatcher = Dispatcher(settings)
    app = FunctionApp("artifacts", routes=ROUTES).use(dispatcher.context("artifacts"))
    good = {"sql": "SELECT region, sum(amount) AS total FROM shop__sales GROUP BY region ORDER BY region",
            "chart": {"type": "bar", "x": "region", "y": "total"}, "title": "Amount by region"}
    assert call(app, "PUT", "/kpis/amount_by_region", good)[0] == 201
    assert call(app, "PUT", "/kpis/every_order", {"sql": "SELECT order_id, amount FROM shop__sales ORDER BY order_id",
                                                  "chart": {"type": "line", "x": "order_id", "y": "amount"}})[0] == 201
    assert call(app, "PUT", "/kpis/runaway", {"sql": "SELECT count(*) AS n FROM shop__sales a, shop__sales b, shop__sales c",
                                              "chart": {"type": "indicator", "y": "n"}})[0] == 201
    assert call(app, "PUT", "/kpis/wrong_column", {"sql": "SELECT count(*) AS n FROM shop__sales",
                                                   "chart": {"type": "indicator", "y": "total"}})[0] == 201
    status, body = call(app, "PUT", "/kpis/sneaky", {"sql": "SELECT * FROM read_csv('/etc/passwd')",
                                                     "chart": {"type": "indicator", "y": "x"}})
    assert status == 400 and "read_csv() is not allowed" in body["problems"]["sql"]
    # A definition changed behind the API's back is guarded again when it runs.
    store = dispatcher.context("analyze").tenant_store(TENANT)
    store.put("kpis/tampered.json", json.dumps({
        "name": "tampered", "title": "Tampered", "sql": "SELECT * FROM read_text('/etc/passwd')",
        "chart": {"type": "indicator", "y": "content"}}).encode())
    assert [k["name"] for k in call(app, "GET", "/kpis/")[1]["kpis"]] == [
        "amount_by_region", "every_order", "runaway", "tampered", "wrong_column"]

    before = {"kpi": sample("udb_kpi_duration_seconds_count"), "profile": sample("udb_profile_duration_seconds_count"),
              "jobs": sample("udb_artifacts_per_job_count"), "per_job_sum": sample("udb_artifacts_per_job_sum"),
              "bytes": sample("udb_artifact_bytes_total", {"tenant": TENANT})}
    job_id = new_job_id()
    core = Dispatcher(settings, skip=("udb-reports",))  # analyze alone first: its metrics, then the reports
    seen = core.publish(events.make_event(events.ANALYZE_REQUESTED, {}, tenant=TENANT, job_id=job_id, function="test"))
    doc = dispatcher.context("cli").jobs(TENANT).get(job_id)
    assert doc["state"] == "completed", doc.get("error")
    assert doc["reports"]["state"] == "pending"

    base = artifacts_dir(home, job_id)
    index = json.loads((base / "index.json").read_text())
    names = {a["name"] for a in index["artifacts"]}
    custom = {k["name"]: k for k in json.loads((base / "kpis-custom.json").read_text())}
    assert custom["amount_by_region"]["result"]["rows"] == [  # amount = i % 100 over 2,000 rows
        ["east", 25000.0], ["north", 24000.0], ["south", 24500.0], ["west", 25500.0]]
    every = custom["every_order"]["result"]
    assert every["row_count"] == 50 and every["truncated"] is True and every["rows"][-1] == [50, 49.0]
    assert "time limit of 0.3 s" in custom["runaway"]["error"]
    assert "read_text() is not allowed" in custom["tampered"]["error"]
    assert "does not return: ['total']" in custom["wrong_column"]["error"]
    assert {"chart-kpi-amount_by_region.html", "chart-kpi-every_order.html"} <= names
    assert "chart-kpi-runaway.html" not in names
    note_kinds = {n["kind"] for n in index["notes"]}
    assert "kpi_failed" in note_kinds


    stats = json.loads((base / "text-stats-shop__fragments.json").read_text())
    assert (stats["documents"], stats["elements"], stats["pages"]) == (3, 30, 9)
    assert stats["elements_by_type"] == [{"element_type": "NarrativeText", "count": 20},
                                         {"element_type": "Title", "count": 10}]
    assert stats["top_terms"][0] == {"term": "revenue", "count": 30, "documents": 3}
    assert "text-stats-shop__fragments.html" in names
    assert "text-stats-shop__sales.json" not in names

    summary = json.loads((base / "summary.json").read_text())
    facts = {f["id"]: f["text"] for f in summary["facts"]}
    assert facts["kpi:amount_by_region"] == "Amount by region: highest is `west` with 25,500 (4 groups shown)."
    assert facts["text:shop__fragments:documents"] == (
        "Table `shop__fragments` holds 3 documents in 30 elements of 2 types.")

    # Metrics: every KPI timed, every profile timed, one job counted, every byte counted.
    default_kpis = sum(len(json.loads((base / f"kpis-{t}.json").read_text())) for t in index["tables"])
    assert sample("udb_kpi_duration_seconds_count") - before["kpi"] == default_kpis + 4  # 4 custom ran (1 refused)
    assert sample("udb_profile_duration_seconds_count") - before["profile"] == 2
    assert sample("udb_artifacts_per_job_count") - before["jobs"] == 1
    assert sample("udb_artifacts_per_job_sum") - before["per_job_sum"] == len(index["artifacts"]) + 1
    written = sum(a["bytes"] for a in index["artifacts"]) + (base / "index.json").stat().st_size
    assert sample("udb_artifact_bytes_total", {"tenant": TENANT}) - before["bytes"] == written

    # Then the reports function on the same analysis.completed: the PNG of every chart, made
    # offline by the real Chromium, added to the index; the job stays completed.
    completed = next(e for e in seen if e["type"] == events.ANALYSIS_COMPLETED)
    rendered = Dispatcher(settings).publish(completed)
    assert [e["type"] for e in rendered] == [events.ANALYSIS_COMPLETED, events.REPORTS_RENDERED]
    chromium, _ = find_chromium(settings.chromium_path)
    assert chromium, "the PNG charts need Chromium (scripts/ensure-chromium.sh)"
    index = json.loads((base / "index.json").read_text())
    pngs = [a for a in index["artifacts"] if a["media_type"] == "image/png"]
    htmls = [a for a in index["artifacts"] if a["name"].startswith("chart-") and a["name"].endswith(".html")]
    assert len(pngs) == len(htmls) > 0 and all(a["report"] == "png-charts" for a in pngs)
    assert (base / "chart-kpi-amount_by_region.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = dispatcher.context("cli").jobs(TENANT).get(job_id)
    assert doc["state"] == "completed" and doc["reports"]["state"] == "ready", doc["reports"]

    status, _ = call(app, "DELETE", "/kpis/runaway")
    assert status == 204 and call(app, "GET", "/kpis/runaway")[0] == 404


def test_drift_reference_is_cached_and_png_failure_is_reported(home, tmp_path, monkeypatch, capsys):
    """Two loads, then the same analysis again: the second load's Evidently drift report (the
    reports function) compares with the first (reference cache miss); analysing again meets the
    same snapshot (cache hit) and gives the same verdict. Without Chromium every job still
    completes, its PNG charts report is `failed` with the reason, on the page and in the job."""
    monkeypatch.setenv("UDB_CHROMIUM_PATH", str(tmp_path / "no-chromium"))
    path = write_sales(tmp_path / "shop" / "sales.csv", 1_000)
    jobs = []
    for offset in (0.0, 60.0):  # amount shifts by +60; region and discount do not
        write_sales(path, 1_000, offset=offset)
        assert cli.main(["run", str(path), "--tenant", TENANT]) == 0
        jobs.append(capsys.readouterr().out.splitlines()[0].split()[1])
    dispatcher = Dispatcher(Settings.from_env())
    jobs.append(new_job_id())
    dispatcher.publish(events.make_event(events.ANALYZE_REQUESTED, {"tables": ["shop__sales"]}, tenant=TENANT,
                                         job_id=jobs[-1], function="test"))
    first, second, third = (artifacts_dir(home, j) for j in jobs)
    for job_id, base in zip(jobs, (first, second, third)):
        index = json.loads((base / "index.json").read_text())
        png = next(r for r in index["reports"] if r["id"] == "png-charts")
        assert png["state"] == "failed" and f"no Chromium at {tmp_path / 'no-chromium'}" in png["reason"]
        assert not [a for a in index["artifacts"] if a["media_type"] == "image/png"]
        page = (base / "index.html").read_text()
        assert "no Chromium at" in page and "http-equiv=\"refresh\"" not in page  # nothing pending any more
        doc = dispatcher.context("cli").jobs(TENANT).get(job_id)
        assert doc["state"] == "completed" and doc["reports"]["state"] == "failed"
        assert {i["id"]: i["state"] for i in doc["reports"]["items"]}["png-charts"] == "failed"
        kpis = json.loads((base / "kpis-shop__sales.json").read_text())
        assert [k for k in kpis if "chart_html" in k]
    assert not (first / "drift-shop__sales.json").exists()
    # The DuckDB verdict is analyze's (every row); Evidently's page and its sampled, cached
    # reference are the reports function's.
    assert "amount" in json.loads((second / "drift-shop__sales.json").read_text())["drifted_columns"]
    assert not (first / "evidently-drift-shop__sales.json").exists()
    miss = json.loads((second / "evidently-drift-shop__sales.json").read_text())["verdict"]
    hit = json.loads((third / "evidently-drift-shop__sales.json").read_text())["verdict"]
    assert (miss["reference"]["cache"], hit["reference"]["cache"]) == ("miss", "hit")
    assert miss["reference"]["cache_key"] == hit["reference"]["cache_key"]
    assert "amount" in miss["drifted_columns"] and "region" not in miss["drifted_columns"]
    assert "discount" not in miss["drifted_columns"]
    assert hit["drifted_columns"] == miss["drifted_columns"] and hit["share"] == miss["share"]
    assert math.isclose(miss["share"], len(miss["drifted_columns"]) / len(miss["columns"]))
    cache = home / "store" / "udb" / "tenants" / TENANT / "cache" / "drift-reference" / "shop__sales"
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".parquet"]  # one reference kept

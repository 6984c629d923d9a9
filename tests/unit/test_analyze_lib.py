"""Known-answer tests for functions.analyze on data generated in DuckDB with range()."""

from __future__ import annotations

import json

import duckdb
import pytest

from functions.analyze.kpis import chart_html, default_kpis, run_kpi
from functions.analyze.profile import profile_table, render_profile_html
from functions.reports.engines import drift_verdict, mask_pii, mask_text, sample_frame
from functions.analyze.summary import summarize

pytestmark = pytest.mark.unit

N = 10_000
WEIRD = 'odd "col" name'


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    con.execute(f"""
        CREATE TABLE known AS
        SELECT
            i AS x,
            CASE WHEN i % 10 = 0 THEN NULL ELSE i END AS y,
            'same' AS c,
            'user' || i || '@example.com' AS email,
            ['a', 'b', 'c', 'd'][1 + (i % 4)::INTEGER] AS cat,
            CASE WHEN i % 4 = 0 THEN 1.5 ELSE 0 END AS z,
            CASE WHEN i % 2 = 0 THEN NULL ELSE 'v' END AS mostly_null,
            TIMESTAMP '2024-01-01' + to_hours(i) AS ts,
            i % 2 = 0 AS flag,
            (i % 3)::INTEGER AS "{WEIRD.replace('"', '""')}",
            exp(i / 1000.0) AS growth
        FROM range({N}) t(i)
    """)
    con.execute("""
        CREATE TABLE "dup table" AS
        SELECT i AS k, 'v' || i AS v FROM range(100) t(i)
        UNION ALL SELECT i, 'v' || i FROM range(30) t(i)
    """)
    con.execute("""
        CREATE TABLE sales AS
        SELECT
            i AS order_id,
            ['north', 'south', 'east', 'west'][1 + (i % 4)::INTEGER] AS region,
            (i % 50)::DECIMAL(10, 2) AS amount,
            (i % 5 + 1)::INTEGER AS quantity,
            TIMESTAMP '2024-01-01' + to_hours(i % 2000) AS order_ts,
            CASE WHEN i % 10 = 0 THEN NULL ELSE 'n' END AS note
        FROM range(10000) t(i)
    """)
    yield con
    con.close()


@pytest.fixture(scope="module")
def profile(con):
    return profile_table(con, "known")


def _col(profile, name):
    return next(c for c in profile["column_profiles"] if c["name"] == name)


def _alert_kinds(profile, column):
    return {a["kind"] for a in profile["alerts"] if a["column"] == column}


def test_table_level(profile):
    assert profile["table"] == "known"
    assert profile["rows"] == N
    assert profile["columns"] == 11
    assert profile["duplicate_rows"] == 0
    assert profile["size_bytes"] > 0
    json.dumps(profile, allow_nan=False)  # fully JSON-serialisable, no NaN


def test_numeric_known_answers(profile):
    x = _col(profile, "x")
    assert x["kind"] == "numeric" and x["type"] == "BIGINT"
    assert x["min"] == 0 and x["max"] == N - 1
    assert x["mean"] == pytest.approx(4999.5)
    assert x["count"] == N and x["nulls"] == 0
    assert x["distinct"] == N and x["distinct_method"] == "exact"
    # Exact path (rows <= 200k) uses quantile_cont: tolerance is float rounding only.
    assert x["quantile_method"] == "quantile_cont"
    assert x["quantiles"]["p50"] == pytest.approx(4999.5, abs=1e-9)
    assert x["quantiles"]["p05"] == pytest.approx(499.95, abs=1e-9)
    assert x["zeros"] == 1
    assert [b["count"] for b in x["histogram"]] == [500] * 20
    assert x["histogram"][0]["lo"] == 0 and x["histogram"][-1]["hi"] == pytest.approx(N - 1)


def test_nulls_counted_exactly(profile):
    y = _col(profile, "y")
    assert y["nulls"] == 1000
    assert y["count"] == 9000
    assert y["null_share"] == pytest.approx(0.1)
    assert "many_nulls" not in _alert_kinds(profile, "y")
    assert _col(profile, "mostly_null")["nulls"] == N // 2
    assert "many_nulls" in _alert_kinds(profile, "mostly_null")


def test_alerts(profile):
    assert "constant" in _alert_kinds(profile, "c")
    assert "pii" in _alert_kinds(profile, "email")
    assert "unique" in _alert_kinds(profile, "x")
    assert "unique" in _alert_kinds(profile, "email")
    assert "many_zeros" in _alert_kinds(profile, "z")
    assert "skewed" in _alert_kinds(profile, "growth")
    assert "skewed" not in _alert_kinds(profile, "x")
    assert not _alert_kinds(profile, "cat")
    for alert in profile["alerts"]:
        assert set(alert) == {"column", "kind", "message", "value"}


def test_strings_and_patterns(profile):
    cat = _col(profile, "cat")
    assert cat["kind"] == "categorical"
    assert cat["distinct"] == 4
    assert cat["top_k"] == [{"value": v, "count": 2500} for v in ("a", "b", "c", "d")]
    assert cat["min_length"] == cat["max_length"] == 1
    email = _col(profile, "email")
    assert email["patterns"]["email"] == N
    assert email["patterns"]["phone"] == 0
    assert email["distinct"] == N
    # High-cardinality column: top_k comes from a GROUP BY, every value once.
    assert len(email["top_k"]) == 10 and all(t["count"] == 1 for t in email["top_k"])
    # Shown values are masked; counts are not.
    assert all(t["value"] == "u***@example.com" for t in email["top_k"])
    assert email["min"] == "u***@example.com"


def test_other_kinds(profile):
    ts = _col(profile, "ts")
    assert ts["kind"] == "temporal"
    assert ts["min"] == "2024-01-01T00:00:00"
    assert ts["max"] == "2025-02-20T15:00:00"
    assert ts["histogram_unit"] == "week"
    assert sum(b["count"] for b in ts["histogram"]) == N
    flag = _col(profile, "flag")
    assert flag["kind"] == "boolean" and flag["trues"] == N // 2
    weird = _col(profile, WEIRD)
    assert weird["distinct"] == 3
    assert [b["count"] for b in weird["histogram"]] == [3334, 3333, 3333]


def test_correlations(profile):
    pairs = {(p["a"], p["b"]): p["r"] for p in profile["correlations"]["pairs"]}
    assert pairs[("x", "y")] == pytest.approx(1.0)
    assert "c" not in profile["correlations"]["columns"]  # constant: no correlation


def test_approximate_path(con):
    approx = profile_table(con, "known", exact_max_rows=0)
    x = _col(approx, "x")
    assert x["quantile_method"] == "approx_quantile"
    # approx_quantile (t-digest): tolerance 1% of the value range.
    assert x["quantiles"]["p50"] == pytest.approx(4999.5, abs=0.01 * N)
    # Near-unique columns get an exact recount, so the unique alert stays exact.
    assert x["distinct"] == N and x["distinct_method"] == "exact"
    assert "unique" in _alert_kinds(approx, "x")
    assert _col(approx, "cat")["distinct_method"] == "approx"


def test_duplicate_rows_exact(con):
    p = profile_table(con, "dup table")
    assert p["rows"] == 130
    assert p["duplicate_rows"] == 30


def test_html_is_self_contained_and_escaped(con):
    con.execute("""CREATE OR REPLACE TABLE tricky AS SELECT '<b>bold</b>' AS "<i>col</i>" FROM range(3)""")
    page = render_profile_html(profile_table(con, "tricky"))
    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;i&gt;col&lt;/i&gt;" in page and "<i>col</i>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script" not in page and "<link" not in page


def test_default_kpis_and_run(con):
    p = profile_table(con, "sales")
    kpis = default_kpis(con, "sales", p)
    names = [k["name"] for k in kpis]
    assert names == [
        "row_count", "freshness", "null_rate",
        "sum_amount_by_region", "avg_amount_by_region", "sum_amount_by_day", "avg_amount_by_day",
        "sum_quantity_by_region", "avg_quantity_by_region", "sum_quantity_by_day", "avg_quantity_by_day",
    ]
    assert "order_id" not in " ".join(names)
    for k in kpis:
        assert set(k) >= {"name", "title", "sql", "chart"}
        assert k["chart"]["type"] in ("bar", "line", "indicator")
    results = {k["name"]: run_kpi(con, k) for k in kpis}
    assert results["row_count"]["rows"] == [[10000]]
    assert results["row_count"]["row_count"] == 1
    assert results["null_rate"]["rows"] == [["note", pytest.approx(0.1)]]
    by_region = {r[0]: r[1] for r in results["sum_amount_by_region"]["rows"]}
    expected = {
        region: float(sum(i % 50 for i in range(10000) if i % 4 == k))
        for k, region in enumerate(["north", "south", "east", "west"])
    }
    assert by_region == expected
    assert results["sum_amount_by_day"]["row_count"] == 84
    assert results["freshness"]["rows"][0][0] == "2024-03-24T07:00:00"
    json.dumps(results, allow_nan=False)


def test_summarize_facts(con):
    p = profile_table(con, "sales")
    results = [run_kpi(con, k) for k in default_kpis(con, "sales", p)]
    drift = {"dataset_drift": False, "drifted_columns": ["amount"], "share": 0.2, "threshold": 0.5,
             "columns": [{"column": c} for c in ("amount", "b", "c", "d", "e")]}
    markdown, data = summarize([p], results, drift)
    facts = {f["id"]: f for f in data["facts"]}
    assert facts["table:sales:rows"]["value"] == 10000
    assert "10,000 rows" in facts["table:sales:rows"]["text"]
    assert facts["kpi:sales:row_count"]["value"] == 10000
    assert facts["drift:dataset"]["value"] == 0.2
    assert facts["drift:columns"]["value"] == ["amount"]
    from functions.analyze.summary import markdown_text

    for fact in data["facts"]:
        assert set(fact) >= {"id", "text", "value", "source"}
        assert f"- {markdown_text(fact['text'])}" in markdown
    json.dumps(data, allow_nan=False)


def test_summarize_accepts_nested_results_and_drift_per_table(con):
    p = profile_table(con, "sales")
    items = [{**k, "result": run_kpi(con, k)} for k in default_kpis(con, "sales", p)]
    verdict = {"dataset_drift": True, "drifted_columns": ["amount", "region"], "share": 0.6, "threshold": 0.5}
    markdown, data = summarize([p], items, {"sales": verdict})
    facts = {f["id"]: f for f in data["facts"]}
    assert facts["kpi:sales:row_count"]["value"] == 10000
    assert facts["drift:sales:dataset"]["value"] == 0.6
    assert facts["drift:sales:columns"]["value"] == ["amount", "region"]
    assert data["drift"]["sales"]["dataset_drift"] is True
    assert "`amount`, `region`" in markdown


def test_qualified_table_names(con):
    con.execute("CREATE SCHEMA IF NOT EXISTS snap")
    con.execute('CREATE OR REPLACE TABLE snap."my sales" AS SELECT * FROM sales')
    for ref in ('snap."my sales"', ("snap", "my sales")):
        p = profile_table(con, ref)
        assert p["table"] == "snap.my sales" and p["rows"] == 10000
        df, note = sample_frame(con, ref, max_rows=100)
        assert len(df) == 100 and note["table"] == "snap.my sales"


def test_sample_frame(con):
    df, note = sample_frame(con, "sales", max_rows=20_000)
    assert len(df) == 10_000 and note["method"] == "full" and note["sampled_rows"] == 10_000
    df1, note1 = sample_frame(con, "sales", max_rows=500, seed=7)
    df2, _ = sample_frame(con, "sales", max_rows=500, seed=7)
    assert note1 == {"table": "sales", "total_rows": 10_000, "sampled_rows": 500, "method": "reservoir", "seed": 7,
                     "columns": 6, "reported_columns": 6}
    assert sorted(df1["order_id"]) == sorted(df2["order_id"])


def test_mask_pii():
    import pandas as pd

    assert mask_text("john.doe@example.com") == "j***@example.com"
    assert mask_text("call +1 555 123 4567 now") == "call *** now"
    assert mask_text("(555) 123-4567") == "***"
    assert mask_text("2024-01-15") == "2024-01-15"
    assert mask_text("1234.5678") == "1234.5678"
    df = pd.DataFrame({"e": ["a@b.com", None], "n": [5551234567, 1]})
    masked = mask_pii(df)
    assert masked["e"].tolist() == ["a***@b.com", None]
    assert masked["n"].tolist() == [5551234567, 1]
    assert df["e"][0] == "a@b.com"  # input untouched
    assert mask_pii(masked)["e"].tolist() == masked["e"].tolist()  # idempotent


def test_drift_verdict_parses_result():
    result = {
        "metrics": [
            {"config": {"type": "evidently:metric_v2:DriftedColumnsCount", "drift_share": 0.5},
             "value": {"count": 1.0, "share": 0.5}},
            {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "a",
                        "method": "Wasserstein distance (normed)", "threshold": 0.1}, "value": 0.9},
            {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "b",
                        "method": "K-S p_value", "threshold": 0.05}, "value": 0.4},
        ],
        "tests": [],
    }
    verdict = drift_verdict(result)
    assert verdict["dataset_drift"] is True
    assert verdict["drifted_columns"] == ["a"]
    assert verdict["share"] == 0.5


def test_chart_html_inlines_plotly(con):
    p = profile_table(con, "sales")
    kpi = next(k for k in default_kpis(con, "sales", p) if k["chart"]["type"] == "bar")
    page = chart_html(kpi, run_kpi(con, kpi))
    assert "<html>" in page and "Plotly.newPlot" in page
    assert '<script src="http' not in page


# Slow-ish (library import ~3 s each): kept on tiny frames.
def test_ydata_report_small(con):
    from functions.reports.engines import ydata_report_html

    df, note = sample_frame(con, "sales", max_rows=300)
    page = ydata_report_html(df, "sales", note)
    assert len(page) > 10_000
    assert "udb-sampling-note" in page and "300 of 10,000 rows" in page
    assert "reservoir" in page


def test_evidently_small(con):
    from functions.reports.engines import evidently_drift, evidently_summary

    df, _ = sample_frame(con, "sales", max_rows=400)
    page, result = evidently_summary(df)
    assert "<html" in page and len(page) > 10_000
    assert result["metrics"] and result["tests"]
    json.dumps(result, allow_nan=False)
    current = df.copy()
    current["amount"] = current["amount"].astype(float) * 3 + 100
    page, result = evidently_drift(current, df)
    assert "<html" in page
    verdict = drift_verdict(result)
    assert "amount" in verdict["drifted_columns"]


# ---------------------------------------------------------------- more known answers


def test_every_numeric_statistic_known(profile):
    """x = 0..9999: exact moments and quantiles (quantile_cont interpolates: p = q * (N - 1))."""
    x = _col(profile, "x")
    # Sample standard deviation of 0..N-1 is sqrt(N (N + 1) / 12).
    assert x["std"] == pytest.approx((N * (N + 1) / 12) ** 0.5, rel=1e-12)
    assert x["skewness"] == pytest.approx(0.0, abs=1e-9)
    expected = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
    for key, q in expected.items():
        assert x["quantiles"][key] == pytest.approx(q * (N - 1), abs=1e-9)
    assert x["top_k"] is None  # 10,000 distinct values: no frequent-value list
    z = _col(profile, "z")  # 1.5 on every 4th row, else 0
    assert z["mean"] == pytest.approx(0.375)
    assert z["zeros"] == 7500 and z["zero_share"] == pytest.approx(0.75)
    assert z["top_k"] == [{"value": 0.0, "count": 7500}, {"value": 1.5, "count": 2500}]


def test_top_values_of_non_text_columns(profile):
    weird = _col(profile, WEIRD)
    assert weird["top_k"] == [{"value": 0, "count": 3334}, {"value": 1, "count": 3333}, {"value": 2, "count": 3333}]
    flag = _col(profile, "flag")
    assert flag["top_k"] == [{"value": False, "count": 5000}, {"value": True, "count": 5000}]


def test_string_lengths_known(profile):
    email = _col(profile, "email")  # 'user' || i || '@example.com'
    assert email["min_length"] == len("user0@example.com")
    assert email["max_length"] == len("user9999@example.com")
    digits = sum(len(str(i)) for i in range(N))
    assert email["total_length"] == N * len("user@example.com") + digits
    assert email["mean_length"] == pytest.approx(email["total_length"] / N)


def test_patterns_and_pii_by_name(con):
    con.execute("""CREATE OR REPLACE TABLE people AS SELECT
        'Person ' || i AS customer_name,
        '+1 555 ' || lpad((i % 1000)::VARCHAR, 3, '0') || ' ' || lpad(i::VARCHAR, 4, '0') AS contact,
        'https://example.org/p/' || i AS homepage,
        uuid()::VARCHAR AS ref,
        strftime(DATE '2024-01-01' + (i % 30)::INTEGER, '%Y-%m-%d') AS day_text
        FROM range(200) t(i)""")
    p = profile_table(con, "people")
    name, contact = _col(p, "customer_name"), _col(p, "contact")
    assert name["patterns"] == {"email": 0, "phone": 0, "url": 0, "uuid": 0, "date_like": 0}
    assert contact["patterns"]["phone"] == 200
    assert _col(p, "homepage")["patterns"]["url"] == 200
    assert _col(p, "ref")["patterns"]["uuid"] == 200
    assert _col(p, "day_text")["patterns"]["date_like"] == 200 and _col(p, "day_text")["patterns"]["phone"] == 0
    # Values shown from a personal-data column are masked whole; counts are exact.
    assert name["masked"] == "person_name" and name["distinct"] == 200
    assert {t["value"] for t in name["top_k"]} == {"P***"} and name["min"] == "P***"
    assert all(t["value"] == "***" for t in contact["top_k"])
    kinds = {(a["column"], a["kind"]) for a in p["alerts"]}
    assert ("customer_name", "pii") in kinds and ("contact", "pii") in kinds


def test_approximate_distinct_within_stated_tolerance(con):
    """Above exact_max_rows distinct counts come from HyperLogLog: within 35% (see
    UNIQUE_RECHECK_SHARE), while near-unique columns are recounted exactly."""
    approx = profile_table(con, "known", exact_max_rows=0)
    growth = _col(approx, "growth")  # exp(i / 1000): all distinct -> exact recount
    assert growth["distinct"] == N and growth["distinct_method"] == "exact"
    y = _col(approx, "y")  # 9000 distinct non-null values -> recount too (>= 70% of count)
    assert y["distinct"] == 9000
    ts_hours = _col(approx, "mostly_null")
    assert ts_hours["distinct"] == 1


def test_text_stats_known_answers():
    from functions.analyze.textstats import is_document_table, render_text_stats_html, text_stats

    con = duckdb.connect()
    con.execute("""CREATE TABLE frags AS SELECT 'doc' || (i % 3) AS document, 'e' || i AS element_id,
        ['Title', 'NarrativeText', 'NarrativeText', 'ListItem'][i % 4 + 1] AS element_type,
        CASE WHEN i % 4 = 0 THEN 'Chapter ' || i ELSE repeat('data quality matters ', i % 5 + 1) END AS text,
        (i // 10 + 1)::INTEGER AS page, 'Chapter ' || (i // 8) AS section, '{}' AS metadata
        FROM range(40) t(i)""")
    assert is_document_table(profile_table(con, "frags")["column_profiles"])
    assert not is_document_table(["document", "text"])
    s = text_stats(con, "frags")
    assert (s["documents"], s["elements"], s["pages"], s["sections"]) == (3, 40, 12, 15)
    assert s["elements_by_type"] == [{"element_type": "NarrativeText", "count": 20},
                                     {"element_type": "ListItem", "count": 10}, {"element_type": "Title", "count": 10}]
    assert s["elements_per_document"]["top"][0] == {"document": "doc0", "elements": 14}
    texts = [f"Chapter {i}" if i % 4 == 0 else "data quality matters " * (i % 5 + 1) for i in range(40)]
    lengths = sorted(len(t) for t in texts)
    assert s["text_length"]["min"] == lengths[0] and s["text_length"]["max"] == lengths[-1]
    assert s["text_length"]["mean"] == pytest.approx(sum(lengths) / 40)
    assert s["text_length"]["characters"] == sum(lengths)
    assert sum(b["count"] for b in s["text_length"]["histogram"]) == 40
    repeats = sum(i % 5 + 1 for i in range(40) if i % 4)
    assert s["top_terms"][:3] == [{"term": t, "count": repeats, "documents": 3} for t in ("data", "matters", "quality")]
    assert {"term": "chapter", "count": 10, "documents": 3} in s["top_terms"]
    page = render_text_stats_html(s)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page


def test_summary_every_sentence_is_traceable(con):
    """Each bullet of summary.md is one fact; its text is its template rendered with its data,
    and templates hold no digits: every number shown is a value in summary.json."""
    import re

    from functions.analyze.summary import markdown_text, render

    p = profile_table(con, "sales")
    results = [run_kpi(con, k) for k in default_kpis(con, "sales", p)]
    drift = {"dataset_drift": True, "drifted_columns": ["amount"], "share": 0.5, "threshold": 0.5,
             "columns": [{"column": "amount", "method": "Wasserstein distance (normed)", "score": 0.92,
                          "threshold": 0.1, "drifted": True},
                         {"column": "region", "method": "Jensen-Shannon distance", "score": 0.01,
                          "threshold": 0.1, "drifted": False}]}
    custom = [{"name": "big_orders", "title": "Orders over 40", "result": {
        "name": "big_orders", "columns": ["n"], "rows": [[1800]], "chart": {"type": "indicator", "y": "n"}}},
        {"name": "broken", "title": "Broken", "error": "query rejected: unknown table 'gone'"}]
    markdown, data = summarize([p], results, {"sales": drift}, custom_kpis=custom)
    bullets = [line[2:] for line in markdown.splitlines() if line.startswith("- ")]
    texts = [f["text"] for f in data["facts"]]
    assert bullets == [markdown_text(t) for t in texts]
    for fact in data["facts"]:
        assert not re.search(r"\d", fact["template"]), fact["template"]
        assert render(fact["template"], fact["data"]) == fact["text"]
    facts = {f["id"]: f for f in data["facts"]}
    assert facts["drift:sales:score:amount"]["text"] == (
        "Column `amount` drift score 0.92 by Wasserstein distance (normed) (threshold 0.1).")
    assert facts["kpi:big_orders"]["text"] == "Orders over 40: n = 1,800."
    assert facts["kpi:broken"]["text"] == "Broken: not computed (query rejected: unknown table 'gone')."
    assert data["custom_kpis"][0]["value"] == 1800
    assert "## Drift" in markdown and "## Tenant KPIs" in markdown


def test_kpis_run_on_the_locked_connection(tmp_path):
    from functions.analyze.kpis import open_kpi_connection

    path = tmp_path / "w.duckdb"
    w = duckdb.connect(str(path))
    w.execute("CREATE TABLE sales AS SELECT i AS order_id, ['a', 'b'][i % 2 + 1] AS region, "
              "(i % 10)::DOUBLE AS amount, TIMESTAMP '2024-01-01' + to_hours(i) AS ts FROM range(1000) t(i)")
    w.close()
    reader = duckdb.connect(str(path), read_only=True)
    kcon = open_kpi_connection(path)
    try:
        p = profile_table(reader, "sales")
        results = {k["name"]: run_kpi(kcon, k) for k in default_kpis(reader, "sales", p)}
        assert results["row_count"]["rows"] == [[1000]]
        assert {r[0]: r[1] for r in results["sum_amount_by_region"]["rows"]} == {"a": 2000.0, "b": 2500.0}
    finally:
        kcon.close()
        reader.close()


def test_custom_chart_types_and_png_without_chromium():
    from functions.reports.pngs import chart_figure, render_pngs
    from shared.analysis.charts import find_chromium

    result = {"columns": ["region", "a", "b"], "rows": [["x", 1, 2], ["y", 3, 4]], "row_count": 2, "truncated": True}
    for kind in ("bar", "line", "scatter", "pie"):
        fig = chart_figure({"title": "t", "chart": {"type": kind, "x": "region", "y": ["a", "b"]}}, result)
        assert len(fig.data) == (1 if kind == "pie" else 2)
    fig = chart_figure({"title": "t", "chart": {"type": "indicator", "y": "a"}}, result)
    assert fig.data[0].value == 1
    assert find_chromium("/nonexistent/chromium") == (None, "no Chromium at /nonexistent/chromium (UDB_CHROMIUM_PATH)")
    rendered, why = render_pngs([("c", fig)], None)
    assert rendered == {} and "no Chromium" in why
    rendered, why = render_pngs([("c", fig)], "/nonexistent/chromium")
    assert rendered == {} and "/nonexistent/chromium" in why


def test_drift_reference_cache(tmp_path, con):
    from functions.reports.engines import reference_frame
    from shared.storage.store import LocalStore, TenantStore

    store = TenantStore(LocalStore(tmp_path / "store"), "acme")
    con.execute("CREATE OR REPLACE TABLE ref AS SELECT * FROM sales")
    first, info1 = reference_frame(con, "ref", 500, store, cache_name="sales")
    second, info2 = reference_frame(con, "ref", 500, store, cache_name="sales")
    assert (info1["cache"], info2["cache"]) == ("miss", "hit")
    assert info1["key"] == info2["key"] and info1["key"].startswith("cache/drift-reference/sales/")
    assert info1["sampling"] == info2["sampling"] and info1["sampling"]["sampled_rows"] == 500
    assert first.equals(second)  # the cached reference is the one computed
    assert store.head(info1["key"]) is not None
    con.execute("UPDATE ref SET amount = amount + 1 WHERE order_id = 0")  # a new snapshot...
    _, info3 = reference_frame(con, "ref", 500, store, cache_name="sales")
    assert info3["cache"] == "miss" and info3["key"] != info1["key"]  # ...a new key
    assert store.head(info1["key"]) is None  # and the stale entry is gone
    _, off = reference_frame(con, "ref", 500, None)
    assert off["cache"] == "off"


def test_kpi_results_are_pii_masked(con):
    result = run_kpi(con, {"name": "emails", "title": "t", "sql": "SELECT email, x FROM known ORDER BY x LIMIT 2"})
    assert result["rows"] == [["u***@example.com", 0], ["u***@example.com", 1]]
    assert result["pii_masked"] is True
    assert run_kpi(con, {"name": "n", "title": "t", "sql": "SELECT count(*) FROM known"})["pii_masked"] is False

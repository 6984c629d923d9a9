"""Known-answer tests for functions.analyze on data generated in DuckDB with range()."""

from __future__ import annotations

import json

import duckdb
import pytest

from functions.analyze.kpis import chart_html, default_kpis, run_kpi
from functions.analyze.profile import profile_table, render_profile_html
from functions.analyze.reports import drift_verdict, mask_pii, mask_text, sample_frame
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
    for fact in data["facts"]:
        assert set(fact) >= {"id", "text", "value", "source"}
        assert f"- {fact['text']}" in markdown
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
    assert note1 == {"table": "sales", "total_rows": 10_000, "sampled_rows": 500, "method": "reservoir", "seed": 7}
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
    from functions.analyze.reports import ydata_report_html

    df, note = sample_frame(con, "sales", max_rows=300)
    page = ydata_report_html(df, "sales", note)
    assert len(page) > 10_000
    assert "udb-sampling-note" in page and "300 of 10,000 rows" in page
    assert "reservoir" in page


def test_evidently_small(con):
    from functions.analyze.reports import evidently_drift, evidently_summary

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

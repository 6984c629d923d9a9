"""functions/analyze/profile/quality.py: alerts on column profiles, correlations, duplicate rows
and the size estimate."""
from __future__ import annotations

import duckdb
import pytest

from functions.analyze.profile import quality

pytestmark = pytest.mark.unit


def _col(name, type_="INTEGER", kind="numeric", **kw):
    base = {"name": name, "type": type_, "kind": kind, "count": 100, "distinct": 50, "unique": False}
    return {**base, **kw}


def test_each_alert_kind_with_its_message():
    profiles = [
        _col("sparse", null_share=0.25),
        _col("fine", null_share=0.2, zero_share=0.5, skewness=2.0),      # exactly at the thresholds: no alert
        _col("flag", distinct=1, min=7),
        _col("status", "VARCHAR", "categorical", distinct=1, top_k=[{"value": "ok", "count": 100}]),
        _col("id", unique=True, distinct=100),
        _col("code", "VARCHAR", "categorical", distinct=60),
        _col("amount", "DOUBLE", skewness=-3.25, zero_share=0.75),
        _col("email", "VARCHAR", "categorical", patterns={"email": 90}),
        _col("contact", "VARCHAR", "categorical", pii={"kind": "phone_number", "found_by": "name"}),
        _col("card", "BIGINT", pii={"kind": "card_number", "found_by": "content", "share": 0.875}),
        _col("ids", "INTEGER[]", "text", unique=True, distinct=100),   # a list being distinct says nothing
    ]
    found = [(a["column"], a["kind"], a["message"], a["value"]) for a in quality.alerts(profiles, rows=100)]
    assert found == [
        ("sparse", "many_nulls", "25.0% of values are null", 0.25),
        ("flag", "constant", "every non-null value is 7", 7),
        ("status", "constant", "every non-null value is 'ok'", "ok"),
        ("id", "unique", "every value is distinct: looks like an identifier", 100),
        ("code", "high_cardinality", "60 distinct values for 100 rows", 60),
        ("amount", "skewed", "skewness -3.25", -3.25),
        ("amount", "many_zeros", "75.0% of values are zero", 0.75),
        ("email", "pii", "90.0% of values look like email addresses", 0.9),
        ("contact", "pii", "the column name suggests personal data (phone number)", "phone_number"),
        ("card", "pii", "87.5% of sampled values look like payment card numbers (Luhn)", 0.875),
    ]


def test_an_empty_column_is_not_constant_nor_personal():
    col = _col("empty", count=0, distinct=0, pii={"kind": "email", "found_by": "name"})
    assert quality.alerts([col], rows=10) == []


def test_correlation_columns_skip_constant_and_personal_columns():
    cols = [_col("a", i=0), _col("b", i=1), _col("c", "VARCHAR", "categorical", i=2), _col("d", i=3),
            _col("salary", i=4, pii={"kind": "salary"})]
    first = {"c0_std": 1.5, "c1_std": 0.0, "c3_std": 2.0, "c4_std": 9.0}
    chosen, eligible = quality.correlation_columns(cols, first, rows=10)
    assert [c["name"] for c in chosen] == ["a", "d"] and eligible == 2
    assert quality.correlation_columns(cols, first, rows=0) == ([], 0)
    many = [_col(f"n{i}", i=i) for i in range(25)]
    chosen, eligible = quality.correlation_columns(many, {f"c{i}_std": 1 for i in range(25)}, rows=5)
    assert len(chosen) == quality.MAX_CORRELATION_COLUMNS and eligible == 25


def test_correlations_against_duckdb():
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT i::INTEGER AS x, (2 * i + 1)::DOUBLE AS y, (10 - i)::BIGINT AS z "
                "FROM range(10) r(i)")
    con.execute("INSERT INTO t VALUES (100, 'inf'::DOUBLE, 0)")   # an infinite y is left out of y's pairs
    cols = [{"i": 0, "name": "x", "ident": '"x"', "type": "INTEGER"},
            {"i": 1, "name": "y", "ident": '"y"', "type": "DOUBLE"},
            {"i": 2, "name": "z", "ident": '"z"', "type": "BIGINT"}]
    aggs = quality.correlation_aggregates(cols)
    assert [k for k, _ in aggs] == ["corr_0_1", "corr_0_2", "corr_1_2"]
    assert aggs[0][1] == 'corr("x"::DOUBLE, "y"::DOUBLE) FILTER (WHERE isfinite("y"))'
    assert aggs[1][1] == 'corr("x"::DOUBLE, "z"::DOUBLE)'
    second = dict(zip([k for k, _ in aggs], con.execute("SELECT " + ", ".join(e for _, e in aggs) + " FROM t")
                      .fetchone(), strict=True))
    assert second["corr_0_1"] == pytest.approx(1.0)
    assert second["corr_1_2"] == pytest.approx(-1.0)
    result = quality.correlations(cols, {**second, "corr_0_2": float("nan")}, [0, 1, 2], eligible=5)
    assert result["columns"] == ["x", "y", "z"]
    assert result["matrix"][0][0] == 1.0 and result["matrix"][0][2] is None and result["matrix"][2][0] is None
    assert result["matrix"][1][2] == result["matrix"][2][1] == pytest.approx(-1.0)
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [("x", "y"), ("y", "z")]
    assert result["note"] == "the first 3 of 5 eligible numeric columns are correlated (3 pairs)"
    assert "note" not in quality.correlations(cols, second, [0, 1, 2], eligible=3)


def test_duplicate_rows():
    con = duckdb.connect()
    con.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
    con.execute("INSERT INTO t VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, 'x'), (2, NULL), (2, NULL)")
    assert quality.duplicate_rows(con, "t", 6) == 3
    # A column named like the row alias: counted with SELECT DISTINCT * all the same.
    con.execute(f"CREATE TABLE u AS SELECT a AS {quality.ROW_ALIAS}, b FROM t")
    assert quality.duplicate_rows(con, "u", 6, names=[quality.ROW_ALIAS, "b"]) == 3


def test_size_estimate():
    profiles = [{"type": "INTEGER"}, {"type": "decimal(10,2)"}, {"type": "VARCHAR", "total_length": 500},
                {"type": "VARCHAR", "total_length": None}, {"type": "BLOB"}, {"type": "boolean"}]
    assert quality.size_estimate(profiles, 10) == 4 * 10 + 8 * 10 + (160 + 500) + 160 + 16 * 10 + 1 * 10
    assert quality.size_estimate([], 10) == 0

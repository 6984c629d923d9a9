"""functions/analyze/profile/table.py: profile_table(), the whole-table profile in DuckDB SQL,
batch by batch: known answers computed here in Python from the same generated rows."""
from __future__ import annotations

import contextlib
import statistics

import duckdb
import pytest

from functions.analyze.profile import profile_table

pytestmark = pytest.mark.unit

IDS = list(range(100)) + [0, 1, 2]                       # three duplicate rows at the end
XS = [float(i % 5) for i in IDS]


def _quantile_cont(values, q):
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    con.execute("""CREATE TABLE t AS SELECT i AS id, (i % 5)::DOUBLE AS x,
                   CASE WHEN i % 10 = 0 THEN NULL ELSE ['a', 'b', 'c'][i % 3 + 1] END AS cat, i % 2 = 0 AS flag,
                   DATE '2024-01-01' + INTERVAL (i % 30) DAY AS d FROM range(100) r(i)""")
    con.execute("INSERT INTO t SELECT * FROM t ORDER BY id LIMIT 3")
    yield con
    con.close()


@pytest.fixture(scope="module")
def profile(con):
    return profile_table(con, "t", top_k=3)


def test_table_level_answers(profile):
    assert (profile["table"], profile["rows"], profile["columns"]) == ("t", 103, 5)
    assert (profile["duplicate_rows"], profile["duplicate_share"]) == (3, 3 / 103)
    assert profile["methods"] == {"distinct": "exact count(DISTINCT)", "quantiles": "quantile_cont (exact)",
                                  "exact_max_rows": 200_000}
    assert profile["values_masked"] is True
    # BIGINT 8 + DOUBLE 8 + BOOLEAN 1 + TIMESTAMP 8 bytes a row, VARCHAR 16 a row plus its 92 characters.
    assert profile["size_bytes"] == 103 * (8 + 8 + 1 + 8 + 16) + 92
    assert [c["name"] for c in profile["column_profiles"]] == ["id", "x", "cat", "flag", "d"]
    assert profile["alerts"] == []


def test_numeric_columns(profile):
    id_, x = profile["column_profiles"][:2]
    assert (id_["count"], id_["nulls"], id_["distinct"], id_["unique"], id_["min"], id_["max"]) == \
        (103, 0, 100, False, 0, 99)
    assert id_["mean"] == pytest.approx(statistics.mean(IDS))
    assert id_["std"] == pytest.approx(statistics.stdev(IDS))
    for key, q in (("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95)):
        assert id_["quantiles"][key] == pytest.approx(_quantile_cont(IDS, q))
    assert id_["top_k"] == [{"value": 0, "count": 2}, {"value": 1, "count": 2}, {"value": 2, "count": 2}]
    assert (id_["zeros"], x["zeros"]) == (2, XS.count(0.0))
    assert x["distinct"] == 5 and x["mean"] == pytest.approx(statistics.mean(XS))
    assert len(x["histogram"]) == 20 and sum(b["count"] for b in x["histogram"]) == 103
    assert [b["count"] for b in x["histogram"] if b["count"]] == [XS.count(float(v)) for v in range(5)]


def test_categorical_boolean_and_temporal_columns(profile):
    cat, flag, d = profile["column_profiles"][2:]
    cats = [None if i % 10 == 0 else "abc"[i % 3] for i in IDS]
    assert (cat["count"], cat["nulls"], cat["distinct"]) == (92, cats.count(None), 3)
    assert cat["null_share"] == pytest.approx(11 / 103)
    assert cat["top_k"] == [{"value": v, "count": cats.count(v)} for v in ("b", "c", "a")]
    assert (cat["min_length"], cat["max_length"], cat["total_length"]) == (1, 1, 92)
    assert (flag["trues"], flag["true_share"]) == (52, 52 / 103)
    assert (d["min"], d["max"], d["distinct"], d["histogram_unit"]) == ("2024-01-01T00:00:00", "2024-01-30T00:00:00",
                                                                       30, "day")
    assert sum(b["count"] for b in d["histogram"]) == 103


def test_correlations(profile):
    corr = profile["correlations"]
    assert corr["columns"] == ["id", "x"]      # numeric with a non-zero spread
    r = statistics.correlation([float(i) for i in IDS], XS)
    assert corr["matrix"][0][1] == pytest.approx(r) and corr["pairs"] == [{"a": "id", "b": "x", "r": corr["matrix"][0][1]}]


def test_one_column_per_batch_gives_the_same_profile(con, profile):
    batches = []

    @contextlib.contextmanager
    def step(first, end, total):
        batches.append((first, end, total))
        yield

    batched = profile_table(con, "t", top_k=3, batch_columns=1, step=step)
    assert batches == [(0, 1, 5), (1, 2, 5), (2, 3, 5), (3, 4, 5), (4, 5, 5)]
    drop = {"elapsed_ms"}
    assert {k: v for k, v in batched.items() if k not in drop} == {k: v for k, v in profile.items() if k not in drop}


def test_above_the_exact_limit_the_methods_are_approximate_and_say_so(con):
    approx = profile_table(con, "t", exact_max_rows=50)
    assert approx["methods"]["quantiles"] == "approx_quantile (t-digest)"
    assert approx["methods"]["distinct"] == ("approx_count_distinct (HyperLogLog), exact recount for near-unique "
                                             "columns")
    id_, x = approx["column_profiles"][:2]
    # The near-unique column gets an exact recount; the other keeps the estimate (5 is exact enough).
    assert (id_["distinct"], id_["distinct_method"], id_["quantile_method"]) == (100, "exact", "approx_quantile")
    assert (x["distinct"], x["distinct_method"]) == (5, "approx")


def test_an_empty_table():
    con = duckdb.connect()
    con.execute("CREATE TABLE e (a INTEGER, b VARCHAR)")
    empty = profile_table(con, "e")
    assert (empty["rows"], empty["duplicate_rows"], empty["size_bytes"]) == (0, 0, 0)
    assert [c["count"] for c in empty["column_profiles"]] == [0, 0]
    assert empty["correlations"]["columns"] == []


def test_unmasked_values_when_asked():
    con = duckdb.connect()
    con.execute("CREATE TABLE m AS SELECT 'ada@example.com' AS email")
    assert profile_table(con, "m", mask_values=False)["column_profiles"][0]["min"] == "ada@example.com"
    assert profile_table(con, "m")["column_profiles"][0]["min"] == "a***@example.com"

"""Drift in DuckDB over every row (functions/analyze/drift.py): known answers on generated data,
checked against hand-computed values, scipy, and Evidently's own tests on the same rows."""
from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from functions.analyze import drift

pytestmark = pytest.mark.unit


def _tables(rows: int) -> duckdb.DuckDBPyConnection:
    """`ref` and `cur` of `rows` rows: x on a grid of 1,000 steps of 0.1, shifted by +5 in cur;
    y unchanged; cat a/b/c evenly in ref, a twice as often in cur; i an unchanged id."""
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE ref AS SELECT i, (i * 7919 % 1000) / 10.0 AS x, (i * 31 % 97)::DOUBLE AS y,
                    ['a', 'b', 'c'][i % 3 + 1] AS cat FROM range({rows}) t(i)""")
    con.execute(f"""CREATE TABLE cur AS SELECT i, (i * 7919 % 1000) / 10.0 + 5 AS x, (i * 31 % 97)::DOUBLE AS y,
                    ['a', 'b', 'c', 'a'][i % 4 + 1] AS cat FROM range({rows}) t(i)""")
    return con


def _by_column(result: dict) -> dict[str, dict]:
    return {c["column"]: c for c in result["columns"]}


def test_a_shifted_numeric_column_is_flagged_with_its_exact_distance():
    con = _tables(5_000)
    result = drift.table_drift(con, "cur", "ref")
    x = _by_column(result)["x"]
    ref = con.execute("SELECT x FROM ref").fetchnumpy()["x"]
    # Every value moved by 5: the Wasserstein-1 distance is exactly 5, normed by the reference's
    # population std (Evidently's wasserstein_distance_norm); the ECDFs are 50 grid steps of
    # 1/1000 apart at most: KS statistic 0.05.
    assert x["method"] == "wasserstein" and x["kind"] == "numerical"
    assert x["statistics"]["wasserstein"] == pytest.approx(5.0, rel=1e-12)
    assert x["statistics"]["ks_statistic"] == 0.05
    assert x["score"] == pytest.approx(5.0 / np.std(ref), rel=1e-12)
    assert x["score"] == pytest.approx(0.17320516735949, rel=1e-9)
    cur = con.execute("SELECT x FROM cur").fetchnumpy()["x"]
    assert x["score"] == pytest.approx(stats.wasserstein_distance(ref, cur) / np.std(ref), rel=1e-9)
    assert x["threshold"] == 0.1 and x["drifted"] is True
    assert (x["n_reference"], x["n_current"], x["values"]) == (5_000, 5_000, 1_050)


def test_an_unchanged_column_is_not_flagged():
    result = drift.table_drift(_tables(5_000), "cur", "ref")
    for name in ("y", "i"):
        column = _by_column(result)[name]
        assert column["method"] == "wasserstein"
        assert column["score"] == 0.0 and column["statistics"]["ks_statistic"] == 0.0
        assert column["drifted"] is False
    assert result["drifted_columns"] == ["x", "cat"]
    assert result["share"] == 0.5 and result["dataset_drift"] is True  # 2 of 4 reaches drift_share 0.5


def test_a_categorical_shift_is_flagged_with_its_jensen_shannon_distance():
    result = drift.table_drift(_tables(6_000), "cur", "ref")
    cat = _by_column(result)["cat"]
    # ref: a, b, c 2,000 each; cur: a 3,000, b and c 1,500 each.
    expected = distance.jensenshannon([1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25])
    assert cat["kind"] == "categorical" and cat["method"] == "jensenshannon"
    assert cat["score"] == pytest.approx(expected, rel=1e-12)
    assert cat["score"] == pytest.approx(0.1198440, abs=1e-7)
    assert cat["drifted"] is True and cat["values"] == 3


def test_small_references_use_evidentlys_p_value_tests():
    """<= 1,000 reference rows: KS p-value for numbers, chi-square for categories, the Z-test
    for two values; each p-value equals scipy's / Evidently's on the same rows."""
    con = _tables(800)
    con.execute("ALTER TABLE ref ADD COLUMN flag BOOLEAN")
    con.execute("UPDATE ref SET flag = i % 2 = 0")
    con.execute("ALTER TABLE cur ADD COLUMN flag BOOLEAN")
    con.execute("UPDATE cur SET flag = i % 3 = 0")
    by = _by_column(drift.table_drift(con, "cur", "ref"))
    ref, cur = con.execute("SELECT * FROM ref").df(), con.execute("SELECT * FROM cur").df()

    x = by["x"]
    assert x["method"] == "ks"
    assert x["statistics"]["ks_statistic"] == stats.ks_2samp(ref.x, cur.x).statistic == 0.05125
    assert x["score"] == pytest.approx(stats.ks_2samp(ref.x, cur.x).pvalue, rel=1e-12)
    assert x["score"] == pytest.approx(0.24425996618, rel=1e-9) and x["drifted"] is False  # p > 0.05

    cat = by["cat"]
    counts = cur.cat.value_counts().reindex(["a", "b", "c"]).to_numpy()
    expected = ref.cat.value_counts().reindex(["a", "b", "c"]).to_numpy() * (800 / 800)
    assert cat["method"] == "chisquare"
    assert cat["score"] == pytest.approx(stats.chisquare(counts, expected).pvalue, rel=1e-9)
    assert cat["drifted"] is True

    flag = by["flag"]
    from evidently.legacy.calculations.stattests.z_stattest import _z_stat_test
    from evidently.legacy.core import ColumnType

    p_value, drifted = _z_stat_test(ref.flag, cur.flag, ColumnType.Categorical, 0.05)
    assert flag["method"] == "z" and flag["score"] == pytest.approx(p_value, rel=1e-9)
    assert flag["drifted"] is bool(drifted) is True


def test_kinds_and_skips_follow_evidentlys_inference():
    con = duckdb.connect()
    for name, offset in (("ref", 0), ("cur", 1)):
        con.execute(f"""CREATE TABLE {name} AS SELECT
            i % 7 + {offset} AS level,                       -- an integer of <= 10 values: categorical
            'note ' || i AS note,                            -- every value distinct: free text
            DATE '2024-01-01' + i::INT AS day,               -- dates: not tested
            NULL::DOUBLE AS empty,                           -- no values
            i::DOUBLE AS v
            FROM range(2000) t(i)""")
    con.execute("ALTER TABLE cur ADD COLUMN extra INT")
    con.execute("ALTER TABLE ref ADD COLUMN price DECIMAL(10, 2)")  # DECIMAL then, DOUBLE now: still numbers
    con.execute("UPDATE ref SET price = v")
    con.execute("ALTER TABLE cur ADD COLUMN price DOUBLE")
    con.execute("UPDATE cur SET price = v")
    con.execute("ALTER TABLE ref ADD COLUMN code VARCHAR")  # text then, numbers now: not comparable
    con.execute("UPDATE ref SET code = 'c' || (v % 3)")
    con.execute("ALTER TABLE cur ADD COLUMN code DOUBLE")
    con.execute("UPDATE cur SET code = v % 3")
    result = drift.table_drift(con, "cur", "ref")
    assert [(c["column"], c["kind"], c["method"]) for c in result["columns"]] == [
        ("level", "categorical", "jensenshannon"), ("v", "numerical", "wasserstein"),
        ("price", "numerical", "wasserstein")]
    assert _by_column(result)["price"]["score"] == 0.0
    reasons = {s["column"]: s["reason"] for s in result["skipped"]}
    assert reasons["note"].startswith("free text (more than half of its 2,000 values distinct)")
    assert reasons["day"].startswith("date/time column")
    assert reasons["empty"] == "no values in the current table"
    assert reasons["extra"] == "not in the reference"
    assert reasons["code"] == "type changed from VARCHAR to DOUBLE"


def test_nulls_nan_and_infinities_are_dropped_as_evidently_drops_them():
    con = duckdb.connect()
    con.execute("CREATE TABLE ref AS SELECT i::DOUBLE AS v FROM range(2000) t(i)")
    con.execute("""CREATE TABLE cur AS SELECT CASE WHEN i % 10 = 0 THEN NULL WHEN i % 10 = 1 THEN 'nan'::DOUBLE
                   WHEN i % 10 = 2 THEN 'inf'::DOUBLE ELSE i::DOUBLE END AS v FROM range(2000) t(i)""")
    v = _by_column(drift.table_drift(con, "cur", "ref"))["v"]
    ref = np.arange(2000.0)
    cur = np.array([i for i in range(2000) if i % 10 > 2], dtype=float)
    assert v["n_current"] == 1_400
    assert v["statistics"]["wasserstein"] == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-12)
    assert v["statistics"]["ks_statistic"] == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=1e-15)


def test_snapshot_drift_compares_a_table_with_its_snapshot_and_is_none_on_a_first_load():
    con = _tables(2_000)
    con.execute("CREATE SCHEMA udb_snapshots")
    con.execute("CREATE TABLE sales AS SELECT * FROM cur")
    assert drift.snapshot_drift(con, "sales") is None
    con.execute("CREATE TABLE udb_snapshots.sales AS SELECT * FROM ref")
    result = drift.snapshot_drift(con, "sales")
    assert result["reference"] == {"snapshot": "udb_snapshots.sales", "rows": 2_000}
    assert result["drifted_columns"] == ["x", "cat"] and result["engine"] == "duckdb"


def test_ks_p_value_matches_scipy_in_its_exact_and_asymptotic_ranges():
    rng = np.random.default_rng(7)
    for n1, n2 in ((300, 500), (900, 20_000)):
        a, b = rng.normal(size=n1), rng.normal(0.1, size=n2)
        result = stats.ks_2samp(a, b)
        assert drift.ks_p_value(float(result.statistic), n1, n2) == pytest.approx(result.pvalue, rel=1e-9)


def test_on_the_benchmark_drift_case_it_flags_the_same_columns_as_evidently_on_all_rows(tmp_path):
    """bench/case_drift.py's tables at 20,000 rows (references above 1,000 rows: the distance
    tests the 1M-row case uses): DuckDB and Evidently's DataDriftPreset name the same columns,
    with the same method and score per column."""
    from bench import case_drift

    db = case_drift.make(tmp_path / "drift.duckdb", 20_000)
    con = duckdb.connect(str(db), read_only=True)
    result = drift.table_drift(con, "bench_current", "bench")
    current, reference = con.execute("SELECT * FROM bench_current").df(), con.execute("SELECT * FROM bench").df()
    drifted, scores, _ = case_drift.evidently_drifted(current, reference)
    assert result["drifted_columns"] == drifted == case_drift.EXPECTED
    ours = {c["column"]: (c["method"], c["score"]) for c in result["columns"]}
    # Evidently also tests `email` here (20,000 distinct of 20,000: free text, a classifier);
    # DuckDB lists it as skipped with that reason. Every other column: same test, same score.
    assert set(scores) - set(ours) == {"email"}
    assert {s["column"] for s in result["skipped"]} == {"email", "ordered_at"}
    for column, (method, score) in ours.items():
        assert scores[column][0] == drift.METHODS[method][0], column
        assert score == pytest.approx(scores[column][1], rel=1e-9, abs=1e-12), column
    assert math.isclose(ours["amount"][1], scores["amount"][1], rel_tol=1e-9)
    pd.testing.assert_index_equal(current.columns, reference.columns)

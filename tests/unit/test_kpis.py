"""functions/analyze/kpis.py: default KPIs chosen from a profile, and running KPI SQL under a
time limit, a row cap, a byte cap and PII masking."""
from __future__ import annotations

import duckdb
import pytest

from functions.analyze import kpis
from functions.analyze.profile import profile_table

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    # 400 rows over 400 days: region cycles over 4, amount = i % 10 + 1, one null in note per 4 rows.
    con.execute("""CREATE TABLE sales AS SELECT i AS order_id, ['north', 'south', 'east', 'west'][i % 4 + 1] AS region,
                   (i % 10 + 1)::DOUBLE AS amount, (i % 3 + 1)::INTEGER AS qty,
                   TIMESTAMP '2024-01-01' + INTERVAL (i) DAY AS sold_at,
                   CASE WHEN i % 4 = 0 THEN NULL ELSE 'n' END AS note,
                   'user' || i || '@example.com' AS email
                   FROM range(400) r(i)""")
    yield con
    con.close()


@pytest.fixture(scope="module")
def profile(con):
    return profile_table(con, "sales")


@pytest.mark.parametrize("name,slug_", [("Order Total (€)", "order_total"), ("__", "col"), ("A-b.C", "a_b_c")])
def test_slug(name, slug_):
    assert kpis.slug(name) == slug_


@pytest.mark.parametrize("column,id_like", [
    ({"name": "customer_id", "type": "BIGINT", "kind": "numeric"}, True),
    ({"name": "CustomerId", "type": "BIGINT", "kind": "numeric"}, True),
    ({"name": "zip", "type": "INTEGER", "kind": "numeric"}, True),
    ({"name": "id_card", "type": "VARCHAR", "kind": "categorical"}, True),
    ({"name": "amount", "type": "DOUBLE", "kind": "numeric", "unique": True}, False),
    ({"name": "serial", "type": "BIGINT", "kind": "numeric", "unique": True}, True),
    ({"name": "paid", "type": "BIGINT", "kind": "numeric"}, False),
])
def test_is_id_like(column, id_like):
    assert kpis.is_id_like(column) is id_like


@pytest.mark.parametrize("lo,hi,bucket", [("2024-01-01", "2024-03-31", "day"), ("2024-01-01", "2025-06-01", "week"),
                                          ("2020-01-01", "2024-01-01", "month"), (None, "2024-01-01", "day"),
                                          ("not a date", "2024-01-01", "day")])
def test_time_bucket(lo, hi, bucket):
    assert kpis.time_bucket({"min": lo, "max": hi}) == bucket


def test_default_kpis_from_a_profile(con, profile):
    chosen = kpis.default_kpis(con, "sales", profile)
    assert [k["name"] for k in chosen] == [
        "row_count", "freshness", "null_rate",
        "sum_amount_by_region", "avg_amount_by_region", "sum_amount_by_week", "avg_amount_by_week",
        "sum_qty_by_region", "avg_qty_by_region", "sum_qty_by_week", "avg_qty_by_week"]
    by_name = {k["name"]: k for k in chosen}
    assert by_name["row_count"]["chart"] == {"type": "indicator", "x": None, "y": "row_count"}
    assert by_name["sum_amount_by_region"]["chart"] == {"type": "bar", "x": "region", "y": "sum_amount"}
    assert by_name["sum_amount_by_week"]["chart"] == {"type": "line", "x": "week", "y": "sum_amount"}
    assert "FILTER (WHERE isfinite(\"amount\"))" in by_name["sum_amount_by_region"]["sql"]
    assert "isfinite" not in by_name["sum_qty_by_region"]["sql"]
    assert all(k["table"] == "sales" for k in chosen)
    # The personal-data column (email) is never grouped, summed or dated by.
    assert not any("email" in k["sql"] for k in chosen)


def test_default_kpis_give_known_answers(con, profile):
    results = {k["name"]: kpis.run_kpi(con, k) for k in kpis.default_kpis(con, "sales", profile)}
    assert results["row_count"]["rows"] == [[400]]
    assert results["null_rate"]["rows"] == [["note", 0.25]]
    sums = {r[0]: r[1] for r in results["sum_amount_by_region"]["rows"]}
    # region north holds i = 0, 4, 8, ...: amount i % 10 + 1 cycles 1, 5, 9, 3, 7 -> 25 per 20 rows.
    assert sums == {"north": 500.0, "south": 600.0, "east": 500.0, "west": 600.0}
    assert results["sum_amount_by_region"]["columns"] == ["region", "sum_amount", "row_count"]
    assert results["freshness"]["rows"][0][0] == "2025-02-03T00:00:00"
    weeks = results["sum_amount_by_week"]["rows"]
    assert sum(r[1] for r in weeks) == sum(i % 10 + 1 for i in range(400))


def test_a_table_without_measures_gets_only_row_count():
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT 'a' AS label FROM range(3)")
    assert [k["name"] for k in kpis.default_kpis(con, "t", profile_table(con, "t"))] == ["row_count"]


def test_run_query_caps_rows():
    con = duckdb.connect()
    columns, rows, truncated, elapsed = kpis.run_query(con, "SELECT range AS n FROM range(10)", max_rows=4)
    assert columns == ["n"] and rows == [(0,), (1,), (2,), (3,)] and truncated is True and elapsed >= 0
    assert kpis.run_query(con, "SELECT range AS n FROM range(4)", max_rows=4)[2] is False


def test_run_query_stops_at_its_time_limit():
    con = duckdb.connect()
    with pytest.raises(kpis.KpiError, match=r"ran past its time limit of 0.2 s and was stopped"):
        kpis.run_query(con, "SELECT count(*) FROM range(10000000000) a", timeout_ms=200)
    assert con.execute("SELECT 1").fetchone() == (1,)   # the connection still works


def test_a_failing_query_names_the_error_without_the_values():
    con = duckdb.connect()
    with pytest.raises(kpis.KpiError) as error:
        kpis.run_query(con, "SELECT 'Ada Lovelace'::INTEGER")
    assert str(error.value).startswith("the query failed in DuckDB: Conversion Error: ")
    assert "Ada" not in str(error.value) and "'***'" in str(error.value)


def test_cut_cell():
    assert kpis.cut_cell("abcdef", 3) == "abc" + kpis.CUT_MARK
    assert kpis.cut_cell(b"\x01\x02\x03\x04", 2) == "0102" + kpis.CUT_MARK
    same = "abc"
    assert kpis.cut_cell(same, 3) is same
    assert kpis.cut_cell([1, 2, 3, 4], 1) == [1, 2, 3, 4]


def test_cap_bytes():
    rows = [["a", 1], ["b", 2], ["c", 3]]
    # [["a",1],["b",2]] is 17 bytes.
    assert kpis.cap_bytes(rows, 17, 100) == ([["a", 1], ["b", 2]], True, 0)
    assert kpis.cap_bytes(rows, 25, 100) == (rows, False, 0)
    assert kpis.cap_bytes([[[1, 2, 3]]], 100, 3) == ([["[1," + kpis.CUT_MARK]], False, 1)


def test_run_kpi_masks_personal_data_whatever_the_sql_did(con):
    kpi = {"name": "mails", "sql": "SELECT upper(email) AS who, order_id FROM sales ORDER BY order_id LIMIT 2",
           "chart": {"type": "bar", "x": "who", "y": "order_id"}}
    result = kpis.run_kpi(con, kpi)
    assert result["pii_columns"] == ["who"]
    assert result["pii_masked"] is True
    # An email address keeps its first letter and its domain (shared.security.pii's masking).
    assert result["rows"] == [["U***@EXAMPLE.COM", 0], ["U***@EXAMPLE.COM", 1]]
    assert (result["title"], result["table"], result["chart"]) == ("mails", None, kpi["chart"])
    counted = kpis.run_kpi(con, {"name": "n", "sql": "SELECT count(DISTINCT email) AS n FROM sales"})
    assert counted["rows"] == [[400]] and counted["pii_columns"] == []


def test_run_kpi_caps_by_rows_and_by_bytes(con):
    by_rows = kpis.run_kpi(con, {"name": "ids", "sql": "SELECT order_id FROM sales ORDER BY 1"}, max_rows=5)
    assert (by_rows["row_count"], by_rows["truncated"], by_rows["capped_by"]) == (5, True, "rows")
    by_bytes = kpis.run_kpi(con, {"name": "ids", "sql": "SELECT order_id FROM sales ORDER BY 1"}, max_bytes=20)
    # [[0],[1],[2],[3],[4]] is 21 bytes: four rows fit in 20.
    assert (by_bytes["rows"], by_bytes["truncated"], by_bytes["capped_by"]) == ([[0], [1], [2], [3]], True, "bytes")
    cut = kpis.run_kpi(con, {"name": "long", "sql": "SELECT repeat('x', 50) AS s"}, max_cell_chars=10)
    assert cut["rows"] == [["x" * 10 + kpis.CUT_MARK]] and cut["cells_cut"] == 1


def test_personal_columns_learn_and_classify(con, profile):
    personal = kpis.PersonalColumns(con)
    assert personal.of("sales") == {"email"}          # classified by content over a sample
    known = kpis.PersonalColumns(con, known={"SALES": ["region"]})
    assert known.of("sales") == {"region"}             # the job's own verdict wins
    known.learn(profile)
    assert known.of("sales") == {c["name"] for c in profile["column_profiles"] if c.get("pii")} == {"email"}
    assert personal.outputs("SELECT region FROM sales", ["region"]) == set()
    assert personal.outputs("SELECT lower(email) AS e FROM sales", ["e"]) == {"e"}


def test_open_kpi_connection_is_read_only_and_locked(tmp_path):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as setup:
        setup.execute("CREATE TABLE t AS SELECT 1 AS x")
    con = kpis.open_kpi_connection(path)
    try:
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
        for sql in ("INSERT INTO t VALUES (2)", f"COPY t TO '{tmp_path / 'out.csv'}'",
                    "SET enable_external_access = true", f"SELECT * FROM read_csv('{path}')"):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        assert not (tmp_path / "out.csv").exists()
    finally:
        con.close()

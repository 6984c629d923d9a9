"""The SQL guard for tenant KPIs, and the locked-down connection the KPIs run on.

Every attack below must be refused by the guard; the allowed queries must pass it and give
exact answers on a real warehouse file. The connection tests show the second layer holds
on its own: even SQL that skipped the guard cannot read files, attach databases or change
settings, and runs under a time limit and a row cap.
"""
from __future__ import annotations

import duckdb
import pytest

from functions.analyze.kpis import KpiError, open_kpi_connection, run_kpi, run_query
from shared.security.sqlguard import SQLRejected, check_select

pytestmark = [pytest.mark.unit, pytest.mark.security]

TABLES = ["shop__sales", "shop__customers"]

ATTACKS = [
    # files and URLs
    ("read_csv", "SELECT * FROM read_csv('/etc/passwd')"),
    ("read_csv_auto", "SELECT * FROM read_csv_auto(['a.csv', 'b.csv'])"),
    ("read_parquet s3", "SELECT * FROM shop__sales, read_parquet('s3://bucket/x.parquet')"),
    ("read_json in a CTE", "WITH a AS (SELECT * FROM read_json_auto('x.json')) SELECT * FROM a"),
    ("read_text in a scalar subquery", "SELECT (SELECT count(*) FROM read_text('/etc/passwd'))"),
    ("read_blob in a lateral join", "SELECT * FROM shop__sales s, LATERAL (SELECT * FROM read_blob('/etc/shadow'))"),
    ("glob", "SELECT * FROM glob('/home/*')"),
    ("parquet_scan", "SELECT * FROM parquet_scan('a.parquet')"),
    ("file as a table", "SELECT * FROM 'data.csv'"),
    ("quoted file as a table", 'SELECT * FROM "/tmp/secrets.parquet"'),
    ("http URL as a table", "SELECT * FROM 'https://example.org/x.csv'"),
    ("s3 URL as a table", "SELECT * FROM 's3://bucket/key.parquet'"),
    ("read_xlsx", "SELECT * FROM read_xlsx('x.xlsx')"),
    ("sniff_csv", "SELECT * FROM sniff_csv('x.csv')"),
    # other databases
    ("postgres_scan", "SELECT * FROM shop__sales JOIN postgres_scan('host=db', 'public', 't') p ON true"),
    ("sqlite_scan", "SELECT * FROM sqlite_scan('x.db', 't')"),
    ("iceberg_scan", "SELECT * FROM iceberg_scan('s3://b/t')"),
    ("delta_scan", "SELECT * FROM delta_scan('s3://b/t')"),
    ("ATTACH", "ATTACH 'other.duckdb' AS other"),
    ("DETACH", "DETACH warehouse"),
    ("another catalogue", "SELECT * FROM other.main.shop__sales"),
    ("the in-memory catalogue", "SELECT * FROM memory.main.x"),
    # statements that are not a single SELECT
    ("stacked DROP", "SELECT * FROM shop__sales; DROP TABLE shop__sales"),
    ("stacked SELECTs", "SELECT 1; SELECT 2"),
    ("COPY out", "COPY shop__sales TO '/tmp/out.csv'"),
    ("COPY in", "COPY shop__sales FROM '/tmp/in.csv'"),
    ("INSTALL", "INSTALL httpfs"),
    ("LOAD", "LOAD httpfs"),
    ("PRAGMA", "PRAGMA database_list"),
    ("SET", "SET enable_external_access = true"),
    ("RESET", "RESET enable_external_access"),
    ("CALL", "CALL pragma_version()"),
    ("EXPORT DATABASE", "EXPORT DATABASE '/tmp/dump'"),
    ("IMPORT DATABASE", "IMPORT DATABASE '/tmp/dump'"),
    ("CREATE TABLE AS", "CREATE TABLE stolen AS SELECT * FROM shop__sales"),
    ("CREATE SECRET", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')"),
    ("INSERT", "INSERT INTO shop__sales VALUES (1)"),
    ("UPDATE", "UPDATE shop__sales SET amount = 0"),
    ("DELETE", "DELETE FROM shop__sales"),
    ("DROP", "DROP TABLE shop__sales"),
    ("ALTER", "ALTER TABLE shop__sales ADD COLUMN x INTEGER"),
    ("SELECT INTO", "SELECT * INTO stolen FROM shop__sales"),
    ("USE", "USE udb_meta"),
    ("BEGIN", "BEGIN TRANSACTION"),
    ("CHECKPOINT", "CHECKPOINT"),
    ("VACUUM", "VACUUM"),
    ("SUMMARIZE", "SUMMARIZE shop__sales"),
    ("DESCRIBE", "DESCRIBE shop__sales"),
    ("SHOW TABLES", "SHOW TABLES"),
    ("bare PIVOT statement", "PIVOT shop__sales ON region USING sum(amount)"),
    ("VALUES statement", "VALUES (1)"),
    # catalogue, settings, environment, SQL in strings
    ("udb_meta schema", "SELECT * FROM udb_meta.batches"),
    ("snapshot schema", "SELECT * FROM udb_snapshots.shop__sales"),
    ("information_schema", "SELECT * FROM information_schema.tables"),
    ("pg_catalog", "SELECT * FROM pg_catalog.pg_class"),
    ("duckdb_tables()", "SELECT * FROM duckdb_tables()"),
    ("duckdb_settings() joined", "SELECT * FROM shop__sales, duckdb_settings()"),
    ("duckdb_secrets()", "SELECT * FROM duckdb_secrets()"),
    ("duckdb_tables view", "SELECT * FROM duckdb_tables"),
    ("pragma_table_info", "SELECT * FROM pragma_table_info('shop__sales')"),
    ("current_setting", "SELECT current_setting('s3_secret_access_key')"),
    ("getenv", "SELECT getenv('HOME')"),
    ("query()", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')"),
    ("query_table()", "SELECT * FROM query_table('udb_meta.batches')"),
    ("json_execute_serialized_sql", "SELECT json_execute_serialized_sql('{}')"),
    ("unknown table", "SELECT * FROM not_a_table"),
    ("parameters", "SELECT * FROM shop__sales WHERE amount > $1"),
    ("time travel", "SELECT * FROM shop__sales AT (VERSION => 1)"),
    ("empty", "   "),
    ("comment only", "-- nothing"),
    ("not SQL", "this is not sql ((("),
]


@pytest.mark.parametrize("label,sql", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_every_attack_is_rejected(label, sql):
    with pytest.raises(SQLRejected) as caught:
        check_select(sql, TABLES)
    assert caught.value.problems  # a reason, named


def test_the_attack_list_is_long_enough():
    assert len(ATTACKS) >= 25


def test_rejections_name_the_problem():
    cases = {
        "SELECT * FROM read_csv('/etc/passwd')": "table function read_csv() is not allowed",
        "SELECT * FROM udb_meta.batches": "schema 'udb_meta' is not allowed",
        "SELECT 1; SELECT 2": "exactly one statement is allowed, found 2",
        "ATTACH 'x.db' AS x": "only a SELECT is allowed, found ATTACH",
        "COPY shop__sales TO 'x.csv'": "only a SELECT is allowed, found COPY",
        "SELECT * FROM nope": "unknown table 'nope'; the tenant's tables are: shop__customers, shop__sales",
        "SELECT getenv('HOME')": "function getenv() is not allowed",
        "SELECT * FROM 's3://b/k.csv'": "files and URLs cannot be read",
    }
    for sql, expected in cases.items():
        with pytest.raises(SQLRejected) as caught:
            check_select(sql, TABLES)
        assert expected in str(caught.value), (sql, str(caught.value))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """A warehouse file shaped like the writer's: main tables, udb_meta and udb_snapshots."""
    path = tmp_path_factory.mktemp("guard") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE shop__sales AS SELECT i AS order_id, ['north', 'south', 'east', 'west'][i % 4 + 1] AS region,
                   (i % 100)::DOUBLE AS amount, TIMESTAMP '2025-01-01' + to_hours(i) AS ordered_at
                   FROM range(10000) t(i)""")
    con.execute("CREATE TABLE shop__customers AS SELECT i AS customer_id, 'c' || i AS name FROM range(1, 501) t(i)")
    con.execute("CREATE SCHEMA udb_meta; CREATE TABLE udb_meta.batches AS SELECT 'b1' AS batch_id")
    con.execute("CREATE SCHEMA udb_snapshots; CREATE TABLE udb_snapshots.shop__sales AS SELECT * FROM shop__sales LIMIT 5")
    con.close()
    return path


@pytest.fixture
def kcon(warehouse):
    con = open_kpi_connection(warehouse)
    yield con
    con.close()


ALLOWED = [
    ("SELECT count(*) AS n FROM shop__sales", [[10000]]),
    ("FROM shop__sales SELECT count(*)", [[10000]]),
    ("select region, sum(amount) as total from main.shop__sales group by region order by region",
     [["east", 125000.0], ["north", 120000.0], ["south", 122500.0], ["west", 127500.0]]),
    ("WITH big AS (SELECT * FROM shop__sales WHERE amount >= 90) SELECT count(*) FROM big", [[1000]]),
    ("SELECT count(*) FROM shop__sales s JOIN shop__customers c ON s.order_id = c.customer_id", [[500]]),
    ("SELECT date_trunc('day', ordered_at) AS day, count(*) AS n FROM shop__sales GROUP BY 1 ORDER BY 1 LIMIT 2",
     [["2025-01-01T00:00:00", 24], ["2025-01-02T00:00:00", 24]]),
    ("SELECT region FROM shop__sales QUALIFY row_number() OVER (PARTITION BY region ORDER BY order_id) = 1 ORDER BY 1",
     [["east"], ["north"], ["south"], ["west"]]),
    ("SELECT count(*) FROM (SELECT order_id FROM shop__sales UNION ALL SELECT customer_id FROM shop__customers)",
     [[10500]]),
    ("SELECT max(x) FROM range(5) t(x)", [[4]]),
    ("SELECT sum(v) FROM unnest([1, 2, 3]) t(v)", [[6]]),
    ("SELECT list_transform([1, 2], x -> x + 1) AS l", [[[2, 3]]]),
    ("SELECT * EXCLUDE (name) FROM shop__customers ORDER BY customer_id LIMIT 1", [[1]]),
    ("SELECT count(*) FROM SHOP__SALES -- trailing comment", [[10000]]),
    ("SELECT * FROM (PIVOT (SELECT region FROM shop__sales) ON region USING count(*))",
     [[2500, 2500, 2500, 2500]]),
]


@pytest.mark.parametrize("sql,expected", ALLOWED, ids=[a[0][:40] for a in ALLOWED])
def test_allowed_queries_pass_and_return_exact_results(kcon, sql, expected):
    checked = check_select(sql, TABLES)
    result = run_kpi(kcon, {"name": "k", "title": "k", "sql": checked.sql, "chart": {}})
    assert result["rows"] == expected
    assert result["truncated"] is False


def test_checked_query_lists_the_tables_it_reads():
    checked = check_select("SELECT * FROM shop__sales s JOIN Shop__Customers c ON true", TABLES)
    assert checked.tables == ["shop__customers", "shop__sales"]
    assert "--" not in check_select("SELECT 1 -- x; DROP TABLE y", TABLES).sql  # comments dropped


def test_the_connection_refuses_what_the_guard_would_have(kcon, tmp_path):
    """Second layer: SQL that never went through the guard still cannot escape."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for sql in (f"SELECT * FROM read_csv('{secret}')", f"ATTACH '{tmp_path / 'x.duckdb'}' AS x",
                f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'", "SET enable_external_access = true",
                "SET lock_configuration = false", "INSTALL httpfs", "CREATE TABLE shop__x AS SELECT 1",
                "SELECT * FROM udb_meta.batches WHERE false AND read_text('/etc/passwd') IS NULL"):
        with pytest.raises(KpiError):
            run_query(kcon, sql)
    assert not (tmp_path / "out.csv").exists()
    assert run_query(kcon, "SELECT current_setting('enable_external_access')")[1] == [(False,)]


def test_time_limit_interrupts_a_runaway_query(kcon):
    with pytest.raises(KpiError, match="time limit of 0.3 s"):
        run_query(kcon, "SELECT count(*) FROM shop__sales a, shop__sales b, shop__sales c", timeout_ms=300)
    # The connection is usable afterwards, and a late timer does not hit the next query.
    assert run_query(kcon, "SELECT 42", timeout_ms=300)[1] == [(42,)]


def test_row_cap_cuts_and_flags(kcon):
    columns, rows, truncated, _ = run_query(kcon, "SELECT order_id FROM shop__sales ORDER BY 1", max_rows=100)
    assert columns == ["order_id"] and len(rows) == 100 and truncated is True
    assert rows[-1] == (99,)
    _, rows, truncated, _ = run_query(kcon, "SELECT order_id FROM shop__sales LIMIT 100", max_rows=100)
    assert len(rows) == 100 and truncated is False

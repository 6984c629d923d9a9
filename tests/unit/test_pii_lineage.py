"""shared/security/pii_lineage.py: which output columns of a query carry personal data
(column lineage through CTEs, subqueries, joins and set operations; counts and IS NULL cut it)."""
from __future__ import annotations

import duckdb
import pytest

from shared.security.pii_lineage import personal_outputs, tables_read

pytestmark = pytest.mark.unit

SCHEMA = {"customers": {"id": "INTEGER", "name": "VARCHAR", "email": "VARCHAR", "card": "BIGINT", "city": "VARCHAR"},
          "orders": {"id": "INTEGER", "customer_id": "INTEGER", "amount": "DOUBLE"}}
PERSONAL = {"customers": ["name", "email", "card"], "orders": []}


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    con.execute("CREATE TABLE customers (id INTEGER, name VARCHAR, email VARCHAR, card BIGINT, city VARCHAR)")
    con.execute("CREATE TABLE orders (id INTEGER, customer_id INTEGER, amount DOUBLE)")
    yield con
    con.close()


def _personal(con, sql: str) -> set[str]:
    """The personal output columns, named as DuckDB names the result's columns."""
    columns = [d[0] for d in con.execute(sql).description]
    return personal_outputs(sql, columns, SCHEMA, PERSONAL)


@pytest.mark.parametrize("sql,expected", [
    ("SELECT id, city FROM customers", set()),
    ("SELECT id, email FROM customers", {"email"}),
    ("SELECT substr(card::VARCHAR, 1, 8) AS c8, city FROM customers", {"c8"}),
    # DuckDB's own name for the column: lineage finds it by that name.
    ("SELECT replace(email, '@', ' at ') FROM customers", {'"replace"(email, \'@\', \' at \')'}),
    ("WITH u AS (SELECT upper(name) AS u, city FROM customers) SELECT u, city FROM u", {"u"}),
    ("SELECT x FROM (SELECT lower(email) AS x, id FROM customers) s", {"x"}),
    ("SELECT o.amount, c.name AS who FROM orders o JOIN customers c ON c.id = o.customer_id", {"who"}),
    ("SELECT city AS v FROM customers UNION ALL SELECT email FROM customers", {"v"}),
    ("SELECT city, string_agg(name, ',') AS names FROM customers GROUP BY city", {"names"}),
    ("SELECT min(email) AS first FROM customers", {"first"}),
])
def test_values_computed_from_personal_columns_stay_personal(con, sql, expected):
    assert _personal(con, sql) == expected


@pytest.mark.parametrize("sql", [
    "SELECT count(email) AS n FROM customers",
    "SELECT count(DISTINCT email) AS n, city FROM customers GROUP BY city",
    "SELECT count_if(email LIKE '%@x.org') AS n FROM customers",
    "SELECT approx_count_distinct(name) AS n FROM customers",
    "SELECT email IS NULL AS missing, email IS NOT NULL AS present FROM customers",
    "SELECT count(*) FROM customers",
    "SELECT sum(amount) AS total FROM orders",
])
def test_counts_and_presence_cut_the_lineage(con, sql):
    assert _personal(con, sql) == set()


def test_a_star_is_expanded_through_the_schema(con):
    assert _personal(con, "SELECT * FROM customers") == {"name", "email", "card"}
    assert _personal(con, "SELECT * EXCLUDE (email) FROM customers") == {"name", "card"}
    assert _personal(con, "SELECT * FROM orders") == set()


def test_a_star_it_cannot_expand_gets_the_cautious_answer():
    # No schema for the table: every column of a star from a table with personal data is personal.
    assert personal_outputs("SELECT * FROM customers", ["id", "name", "email", "card", "city"], {}, PERSONAL) == \
        {"id", "name", "email", "card", "city"}
    assert personal_outputs("SELECT * EXCLUDE (email) FROM customers", ["id", "name", "card", "city"], {},
                            PERSONAL) == {"id", "name", "card", "city"}


def test_unparseable_sql_is_all_personal_and_nothing_personal_is_nothing():
    assert personal_outputs("SELEC email FRM", ["a", "b"], SCHEMA, PERSONAL) == {"a", "b"}
    assert personal_outputs("SELECT email FROM customers", ["email"], SCHEMA, {"customers": []}) == set()
    assert personal_outputs("SELECT email FROM customers", [], SCHEMA, PERSONAL) == set()


def test_names_compare_case_insensitively(con):
    assert personal_outputs('SELECT "EMAIL" AS e FROM Customers', ["e"], SCHEMA, {"CUSTOMERS": ["Email"]}) == {"e"}


@pytest.mark.parametrize("sql,expected", [
    ("SELECT * FROM customers", ["customers"]),
    ("WITH c AS (SELECT * FROM customers) SELECT * FROM c JOIN Orders o ON o.customer_id = c.id",
     ["customers", "orders"]),
    ("SELECT 1", []),
    ("SELEC email FRM", None),
    ("SELECT ((", None),
])
def test_tables_read(sql, expected):
    assert tables_read(sql) == expected

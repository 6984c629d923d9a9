"""functions/analyze/profile/sql.py: SQL names, literals and DuckDB types of the profiling queries."""
from __future__ import annotations

import duckdb
import pytest

from functions.analyze.profile.sql import (column_kind, describe_columns, is_float_type, is_integer_type,
                                           quote_ident, select_aggregates, share, sql_literal, table_label,
                                           table_parts, table_ref)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("table,parts", [
    ("sales", ["sales"]),
    ("udb_snapshots.sales", ["udb_snapshots", "sales"]),
    ('udb_snapshots."my table"', ["udb_snapshots", "my table"]),
    ('"a""b".c', ['a"b', "c"]),
    ("db.schema.t", ["db", "schema", "t"]),
    ("a.b.c.d", ["a.b.c.d"]),                 # more than three parts: one name
    ("my table", ["my table"]),
    ("sales 2024.csv", ["sales 2024.csv"]),
    (("udb_snapshots.sales",), ["udb_snapshots.sales"]),   # a 1-tuple is one name
    (["s", "t"], ["s", "t"]),
])
def test_table_parts(table, parts):
    assert table_parts(table) == parts


def test_refs_and_labels():
    assert table_ref('udb_snapshots."my table"') == '"udb_snapshots"."my table"'
    assert table_ref("sales 2024.csv") == '"sales 2024.csv"'
    assert table_ref(('x"y',)) == '"x""y"'
    assert table_label('udb_snapshots."my table"') == "udb_snapshots.my table"
    assert quote_ident('we"ird') == '"we""ird"'
    assert quote_ident(5) == '"5"'
    assert sql_literal("it's") == "'it''s'"


def test_refs_name_real_tables():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA udb_snapshots")
    con.execute('CREATE TABLE udb_snapshots."my table" (id INTEGER, "we""ird" VARCHAR, seen TIMESTAMP)')
    con.execute("CREATE TABLE \"sales 2024.csv\" (amount DECIMAL(10,2))")
    con.execute('INSERT INTO udb_snapshots."my table" VALUES (1, \'a\', NULL), (2, NULL, NULL), (3, \'c\', NULL)')
    assert describe_columns(con, 'udb_snapshots."my table"') == [("id", "INTEGER"), ('we"ird', "VARCHAR"),
                                                                  ("seen", "TIMESTAMP")]
    assert describe_columns(con, "sales 2024.csv") == [("amount", "DECIMAL(10,2)")]
    source, weird = table_ref('udb_snapshots."my table"'), quote_ident('we"ird')
    assert select_aggregates(con, source, [("rows", "count(*)"), ("sum", "sum(id)"),
                                           ("filled", f"count({weird})")]) == \
        {"rows": 3, "sum": 6, "filled": 2}
    assert select_aggregates(con, source, []) == {}
    quotes = "'" * 3
    assert con.execute(f"SELECT {sql_literal(quotes)}").fetchone()[0] == quotes


@pytest.mark.parametrize("duck_type,kind", [
    ("INTEGER", "numeric"), ("ubigint", "numeric"), ("DOUBLE", "numeric"), ("DECIMAL(18,3)", "numeric"),
    ("BOOLEAN", "boolean"), ("DATE", "temporal"), ("TIMESTAMP WITH TIME ZONE", "temporal"), ("TIME", "temporal"),
    ("VARCHAR", "categorical"), ("ENUM('a', 'b')", "categorical"), ("UUID", "categorical"),
    ("BLOB", "text"), ("INTEGER[]", "text"), ("STRUCT(a INTEGER)", "text"), ("JSON", "text"),
])
def test_column_kind(duck_type, kind):
    assert column_kind(duck_type) == kind


def test_integer_and_float_types():
    assert is_integer_type("hugeint") and is_integer_type("UTINYINT") and not is_integer_type("DOUBLE")
    assert is_float_type("real") and is_float_type("FLOAT") and not is_float_type("DECIMAL(4,1)")


@pytest.mark.parametrize("part,whole,expected", [(1, 4, 0.25), (0, 5, 0.0), (None, 5, None), (3, 0, None),
                                                 (3, None, None)])
def test_share(part, whole, expected):
    assert share(part, whole) == expected

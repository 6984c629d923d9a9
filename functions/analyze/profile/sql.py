"""SQL names, literals and DuckDB types: the vocabulary every profiling query is built from.

Also imported by the KPI, drift and text-statistics modules (through the package)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import duckdb

from shared.storage import duck

INTEGER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}
FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
TEMPORAL_TYPES = {
    "DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS",
    "TIMESTAMP_NS", "TIME", "TIME WITH TIME ZONE",
}


def quote_ident(name: str) -> str:
    """Quote one SQL identifier for DuckDB (doubles embedded double quotes)."""
    return '"' + str(name).replace('"', '""') + '"'


_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_DOTTED_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT}){{0,2}}")


def table_parts(table: str | Sequence[str]) -> list[str]:
    """Unquoted name parts of a table reference.

    A tuple/list is taken part by part. A string that is a valid SQL reference made of
    bare or double-quoted identifiers (`sales`, `udb_snapshots.sales`,
    `udb_snapshots."my table"`) is split on its dots; any other string ("my table",
    "sales 2024.csv") is one table name. Pass a 1-tuple to force a single name.
    """
    if not isinstance(table, str):
        return [str(part) for part in table]
    if _DOTTED_RE.fullmatch(table):
        parts = re.findall(rf"{_IDENT}", table)
        return [p[1:-1].replace('""', '"') if p.startswith('"') else p for p in parts]
    return [table]


def table_ref(table: str | Sequence[str]) -> str:
    """Quoted SQL reference for a table (see table_parts for the accepted forms)."""
    return ".".join(quote_ident(part) for part in table_parts(table))


def table_label(table: str | Sequence[str]) -> str:
    """Human/JSON name of a table reference: its unquoted parts joined by dots."""
    return ".".join(table_parts(table))


def sql_literal(value: str) -> str:
    """Single-quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def column_kind(duck_type: str) -> str:
    """Coarse kind of a DuckDB type; VARCHARs are refined to 'text' later by length."""
    base = duck_type.upper()
    if base in INTEGER_TYPES or base in FLOAT_TYPES or base.startswith("DECIMAL"):
        return "numeric"
    if base == "BOOLEAN":
        return "boolean"
    if base in TEMPORAL_TYPES:
        return "temporal"
    if base == "VARCHAR" or base.startswith("ENUM") or base == "UUID":
        return "categorical"
    return "text"


def is_integer_type(duck_type: str) -> bool:
    return duck_type.upper() in INTEGER_TYPES


def is_float_type(duck_type: str) -> bool:
    return duck_type.upper() in FLOAT_TYPES


def describe_columns(con: duckdb.DuckDBPyConnection, table: str | Sequence[str]) -> list[tuple[str, str]]:
    """[(name, DuckDB type string)] of a table or view."""
    rows = con.execute(f"DESCRIBE SELECT * FROM {table_ref(table)}").fetchall()
    return [(r[0], r[1]) for r in rows]


def select_aggregates(con: duckdb.DuckDBPyConnection, source: str, aggs: list[tuple[str, str]]) -> dict[str, Any]:
    """Run one SELECT holding many aggregates `[(key, expression)]`; return {key: value}."""
    if not aggs:
        return {}
    row = duck.one(con, "SELECT " + ", ".join(expr for _, expr in aggs) + f" FROM {source}")
    return {key: value for (key, _), value in zip(aggs, row, strict=True)}


def share(part: float | None, whole: float | None) -> float | None:
    """part / whole, or None when either is missing (or whole is 0)."""
    if part is None or not whole:
        return None
    return part / whole

"""Which output columns of a query carry personal data: column lineage through sqlglot.

Masking a query result by its column names and contents (shared.security.pii.mask_rows) misses values
that SQL has reshaped: `substr(card::VARCHAR, 1, 8)` is no longer a card number, `replace(email,
'@', ' at ')` no longer an address, `upper(name)` in a CTE is named `u`. This module follows each
output column back through CTEs, subqueries, joins and set operations to the table columns it is
computed from (sqlglot.lineage); when one of them is a personal-data column of its table (the
profile's PII classification), the output column is personal data too, whatever was done to it.

What does not carry a value across, and so cuts the lineage: counting (`count(email)`,
`count(DISTINCT email)`, `count_if(...)`, `approx_count_distinct(...)`) and asking whether a value
is there (`email IS NULL`, `email IS NOT NULL`). A count of email addresses is not an email
address; every other function, aggregate (min, max, string_agg, sum ...) or cast keeps it.

When lineage cannot be worked out (SQL sqlglot cannot resolve, such as DuckDB's UNPIVOT
statement or a star it cannot expand) the answer is the cautious one: every output column is
personal data if the query reads a personal-data column anywhere outside a cut, or selects `*`
straight from a table that has one.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from sqlglot import exp, parse_one
from sqlglot.errors import SqlglotError
from sqlglot.lineage import Node, lineage

DIALECT = "duckdb"
# Aggregates whose result is a number of rows or values, never a value itself.
COUNTS = (exp.Count, exp.CountIf, exp.ApproxDistinct)


def _is_cut(node: exp.Expr) -> bool:
    if isinstance(node, COUNTS):
        return True
    # `x IS NULL` / `x IS NOT NULL` (NOT wraps the IS): presence only. `x IS TRUE` is the value.
    return isinstance(node, exp.Is) and isinstance(node.expression, exp.Null)


def _under_cut(column: exp.Column, top: exp.Expr) -> bool:
    node = column.parent
    while node is not None:
        if _is_cut(node):
            return True
        if node is top:
            return False
        node = node.parent
    return False


def _exposed_refs(expression: exp.Expr) -> set[str]:
    """`table.column` (lower case) of the column references in `expression` not under a cut."""
    return {f"{c.table}.{c.name}".lower() for c in expression.find_all(exp.Column)
            if not _under_cut(c, expression)}


class _Unresolved(Exception):
    """Lineage reached something it cannot follow (a star): use the cautious answer."""


def _reaches_personal(node: Node, personal: Mapping[str, set[str]]) -> bool:
    expression = node.expression
    if isinstance(expression, exp.Table):
        column = node.name.rsplit(".", 1)[-1].strip('"').lower()
        return column in personal.get(expression.name.lower(), set())
    if isinstance(expression, exp.Star) or any(isinstance(s, exp.Star) for s in [expression.unalias()]):
        raise _Unresolved(node.name)
    wanted = _exposed_refs(expression)
    for child in node.downstream:
        name = child.name.lower()
        # A child named by a bare position or alias ("0", "_col_0") is a branch of a set
        # operation or a scalar subquery's output: its own expression decides.
        if "." not in name or name in wanted or name.replace('"', "") in wanted:
            if _reaches_personal(child, personal):
                return True
    return False


def _is_star(projection: exp.Expr) -> bool:
    """`*`, `t.*`, `* EXCLUDE (...)`, `COLUMNS(...)` as a projection (not count(*))."""
    inner = projection.unalias()
    return (isinstance(inner, (exp.Star, exp.Columns))
            or isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star))


def _name_outputs(tree: exp.Expr, columns: list[str]) -> None:
    """Alias the projections of the outermost SELECT (the first one of a set operation) with
    the names DuckDB gave the result columns ("count_star()", "upper(name)"), so lineage finds
    them by those names. Left alone when a star makes positions unknowable."""
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this
    if not isinstance(select, exp.Select) or len(select.expressions) != len(columns):
        return
    if any(_is_star(p) for p in select.expressions):
        return
    for projection, name in zip(list(select.expressions), columns, strict=True):
        if projection.alias_or_name != name:
            projection.replace(exp.alias_(projection.unalias().copy(), name, quoted=True))


def _cautious(tree: exp.Expr, personal: Mapping[str, set[str]]) -> bool:
    """True when the query reads a personal-data column outside a cut anywhere, or selects a
    star straight from a table holding one."""
    names = {c for cols in personal.values() for c in cols}
    for column in tree.find_all(exp.Column):
        if column.name.lower() in names and not _under_cut(column, tree):
            return True
    for select in tree.find_all(exp.Select):
        if not any(_is_star(p) for p in select.expressions):
            continue
        sources = [select.args.get("from_") or select.args.get("from")] + list(select.args.get("joins") or [])
        for source in filter(None, sources):
            table = source.this if isinstance(source.this, exp.Table) else None
            if table is not None and personal.get(table.name.lower()):
                return True
    return False


def tables_read(sql: str) -> list[str] | None:
    """The names (lower case) of the tables a query names, CTEs left out; None when it does not
    parse (then any table may be read)."""
    try:
        tree = parse_one(sql, dialect=DIALECT)
    except SqlglotError:
        return None
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    return sorted({t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes})


def personal_outputs(sql: str, columns: Iterable[str], schema: Mapping[str, Mapping[str, str]],
                     personal: Mapping[str, Iterable[str]]) -> set[str]:
    """The names among `columns` (the query's result columns, in DuckDB's spelling) whose values
    are computed from a personal-data column.

    schema: {table: {column: type}} of the tenant's tables; personal: {table: personal-data
    columns}. Names compare case-insensitively, as DuckDB's do.
    """
    by_table = {t.lower(): {c.lower() for c in cols} for t, cols in personal.items() if cols}
    columns = list(columns)
    if not by_table or not columns:
        return set()
    try:
        tree = parse_one(sql, dialect=DIALECT)
    except SqlglotError:
        return set(columns)  # cannot read it: every column is treated as personal data
    # Types do not matter for lineage; a type sqlglot cannot parse must not stop it.
    plain_schema = {t: dict.fromkeys(cols, "VARCHAR") for t, cols in schema.items()}
    if not _cautious(tree, by_table):
        return set()  # no personal column is read outside a cut: nothing to follow
    _name_outputs(tree, columns)
    out = set()
    for name in columns:
        try:
            node = lineage(name, tree.copy(), schema=plain_schema, dialect=DIALECT)
            if _reaches_personal(node, by_table):
                out.add(name)
        except (SqlglotError, _Unresolved, KeyError, ValueError, AttributeError):
            out.add(name)  # not resolvable; _cautious said a personal column is read
    return out

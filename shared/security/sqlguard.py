"""The SQL guard for tenant-written queries (custom KPIs): one read-only SELECT over the
tenant's own warehouse tables, and nothing else.

`check_select(sql, tables)` parses the text with sqlglot (DuckDB dialect) and allows exactly
one SELECT statement (WITH, set operations, subqueries, joins, window functions, PIVOT
inside a FROM are fine) whose every table reference is one of `tables` (schema `main`, or
no schema) or a CTE of the same query. It rejects, naming the problem:

- more than one statement, or any statement that is not a query (ATTACH, COPY, INSTALL,
  LOAD, PRAGMA, SET, CALL, EXPORT/IMPORT DATABASE, CREATE, INSERT, UPDATE, DELETE, DROP,
  ALTER, USE, transactions, SUMMARIZE, DESCRIBE, SHOW, SELECT ... INTO, ...);
- table functions other than `range`, `generate_series` and `unnest` (no read_csv,
  read_parquet, read_json, read_text, read_blob, glob, *_scan, query, query_table, ...);
- functions that read files, settings, the environment or the catalogue anywhere in the
  query (read_*, duckdb_*, pragma_*, current_setting, getenv, ...);
- file paths and URLs used as tables (`FROM 's3://...'`, `FROM 'data.csv'`): they are not
  tenant tables;
- other schemas and databases (udb_meta, udb_snapshots, information_schema, pg_catalog,
  attached catalogues) and prepared-statement parameters.

What runs is the statement as sqlglot re-renders it, without comments, so the query DuckDB
executes is the one that was checked. The guard is one layer: queries also run on a
connection with external access disabled and its configuration locked, under a time limit
and a row cap (see functions/analyze/kpis.py).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from shared.core.errors import InputError

# sqlglot logs a warning for each statement it can only keep as an opaque Command; the
# guard reports those itself.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

DIALECT = "duckdb"
MAX_SQL_CHARS = 20_000
# Table functions that only generate values.
ALLOWED_TABLE_FUNCTIONS = {"range", "generate_series", "unnest"}
ALLOWED_SCHEMAS = {"main"}

# Functions refused anywhere in a query: they read files, URLs, other databases, settings,
# secrets, the environment or the catalogue, or run SQL given as a string.
DENIED_FUNCTION_NAMES = {
    "glob", "query", "query_table", "current_setting", "getenv", "sniff_csv", "which_secret",
    "load_aws_credentials", "json_execute_serialized_sql", "st_read", "st_read_meta",
    "checkpoint", "force_checkpoint", "enable_profiling", "disable_profiling", "sql_auto_complete",
    "test_all_types", "test_vector_types", "summary", "arrow_scan", "arrow_scan_dumb",
    "python_map_function", "pandas_scan", "seq_scan", "index_scan", "repeat_row",
}
DENIED_FUNCTION_RE = re.compile(
    r"^(read_|duckdb_|pragma_|parquet_|iceberg_|delta_|sqlite_|postgres_|mysql_|odbc_|"
    r"http_|s3_|gcs_|azure_|ducklake_|json_execute)|_scan$|_attach$|_query$"
)

# Statement and clause node types that never belong in a read-only query. Looked up by
# name so an older or newer sqlglot without one of them still loads this module.
_FORBIDDEN_NODE_NAMES = (
    "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Command", "Copy", "Set",
    "Pragma", "Attach", "Detach", "Use", "Transaction", "Commit", "Rollback", "Into", "Install",
    "Describe", "Summarize", "LoadData", "Show", "Kill", "Cache", "Uncache", "Refresh",
    "Analyze", "Grant", "Revoke", "Comment", "TruncateTable", "Export", "Declare", "Execute",
    "Placeholder", "Parameter", "SessionParameter", "Changes", "HistoricalData", "Version",
)
FORBIDDEN_NODES = tuple(c for c in (getattr(exp, n, None) for n in _FORBIDDEN_NODE_NAMES) if c is not None)


class SQLRejected(InputError):
    """A query the guard refuses; the message names every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(dict.fromkeys(problems))
        super().__init__("query rejected: " + "; ".join(self.problems))


@dataclass(frozen=True)
class CheckedQuery:
    """A query the guard allowed: the SQL to run and the warehouse tables it reads."""
    sql: str
    tables: list[str] = field(default_factory=list)


def function_name(node: exp.Func) -> str:
    """The lower-case SQL name of a function node (typed or anonymous)."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    try:
        return node.sql_name().lower()
    except Exception:  # a node type without a SQL name of its own
        return type(node).__name__.lower()


def _is_denied_function(name: str) -> bool:
    return name in DENIED_FUNCTION_NAMES or bool(DENIED_FUNCTION_RE.search(name))


def _cte_names(root: exp.Expr) -> set[str]:
    return {cte.alias_or_name.lower() for cte in root.find_all(exp.CTE) if cte.alias_or_name}


def check_select(sql: str, tables: Iterable[str]) -> CheckedQuery:
    """Allow `sql` only as one read-only SELECT over `tables`; raise SQLRejected otherwise.

    `tables` are the tenant's warehouse tables (schema main); names compare
    case-insensitively, as DuckDB's identifiers do. Returns the normalised SQL to run and
    the warehouse tables it reads (as given in `tables`).
    """
    if not isinstance(sql, str) or not sql.strip():
        raise SQLRejected(["the query is empty"])
    if len(sql) > MAX_SQL_CHARS:
        raise SQLRejected([f"the query is {len(sql):,} characters long; at most {MAX_SQL_CHARS:,} are allowed"])
    known = {t.lower(): t for t in tables}
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SQLRejected([f"cannot parse the query as DuckDB SQL: {first}"]) from None
    if len(statements) != 1:
        raise SQLRejected([f"exactly one statement is allowed, found {len(statements)}"])
    root = statements[0]
    problems: list[str] = []
    if not isinstance(root, (exp.Select, exp.SetOperation)):
        words = root.sql(dialect=DIALECT, comments=False).split()
        problems.append(f"only a SELECT is allowed, found {words[0].upper() if words else type(root).__name__}")

    ctes = _cte_names(root)
    used: list[str] = []
    for node in root.walk():
        if node is root:
            continue  # the root's own type was judged above
        if isinstance(node, FORBIDDEN_NODES):
            if isinstance(node, exp.Into):
                problems.append("SELECT ... INTO is not allowed")
            elif isinstance(node, (exp.Placeholder, exp.Parameter, exp.SessionParameter)):
                problems.append("query parameters and session variables are not allowed")
            else:
                problems.append(f"{type(node).__name__.upper()} is not allowed")
        elif isinstance(node, exp.Table):
            _check_table(node, known, ctes, used, problems)
        elif isinstance(node, exp.Func) and not isinstance(node.parent, exp.Table):
            name = function_name(node)
            if _is_denied_function(name):
                problems.append(f"function {name}() is not allowed")
    if problems:
        raise SQLRejected(problems)
    return CheckedQuery(sql=root.sql(dialect=DIALECT, comments=False), tables=sorted(set(used)))


def _check_table(node: exp.Table, known: dict[str, str], ctes: set[str], used: list[str], problems: list[str]) -> None:
    target = node.this
    if isinstance(target, exp.Func):
        name = function_name(target)
        if isinstance(target, exp.GenerateSeries) or name in ALLOWED_TABLE_FUNCTIONS:
            return
        problems.append(f"table function {name}() is not allowed (allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))})")
        return
    if not isinstance(target, exp.Identifier):
        problems.append(f"unsupported table reference {node.sql(dialect=DIALECT)!r}")
        return
    name = target.name
    catalog, schema = node.catalog, node.db
    if catalog:
        problems.append(f"references to other databases are not allowed ({catalog}.{schema}.{name})")
        return
    if schema and schema.lower() not in ALLOWED_SCHEMAS:
        problems.append(f"schema {schema!r} is not allowed; only the tenant's tables in 'main' can be read")
        return
    if not schema and name.lower() in ctes:
        return
    if name.lower() in known:
        used.append(known[name.lower()])
        return
    if "/" in name or "://" in name or "." in name:
        problems.append(f"files and URLs cannot be read ({name!r} is not a table)")
        return
    choices = ", ".join(sorted(known.values())) or "none yet"
    problems.append(f"unknown table {name!r}; the tenant's tables are: {choices}")

"""Default KPI definitions picked from a profile, their execution, and Plotly charts."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from shared.errors import InputError
from shared.pii import mask_rows

from .profile import FLOAT_TYPES, INTEGER_TYPES, json_safe, quote_ident, sql_literal, table_label, table_ref

MAX_CATEGORIES = 50
TOP_CATEGORIES = 10
MAX_MEASURES = 2

# Column names that are identifiers or codes, not quantities to add up.
ID_NAME_RE = re.compile(
    r"(^|[_\s.-])(id|key|uuid|guid|code|zip|zipcode|postcode|postal_code|phone|year|month|day|hour"
    r"|lat|latitude|lon|lng|longitude|index|idx|number|no|nr)$|^(id|key|idx)([_\s.-]|$)",
    re.IGNORECASE,
)
# Names that usually are business measures; they go first, totals before their factors
# (amount = quantity x price).
MEASURE_HINT_RE = re.compile(
    r"amount|revenue|sales|price|total|cost|value|qty|quantity|units|profit|spend|fee|balance|score",
    re.IGNORECASE,
)
STRONG_MEASURE_RE = re.compile(r"amount|revenue|sales|total|profit|spend|turnover|gmv", re.IGNORECASE)


def slug(name: str) -> str:
    """Lower-case identifier-safe form of a column name for KPI names."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "col"


def is_id_like(column: dict) -> bool:
    """True for key/code-like columns: ID-ish names, or unique integer/string values."""
    name = str(column["name"])
    if ID_NAME_RE.search(name) or name.endswith("Id") or name.endswith("ID"):
        return True
    integer_or_string = column["type"].upper() in INTEGER_TYPES or column["kind"] in ("categorical", "text")
    return bool(column.get("unique")) and integer_or_string


def _not_personal(columns: list[dict]) -> list[dict]:
    """Columns a default KPI may group, add up or date by: not personal data (the profile's
    `pii`); a sum per group of one row, or the newest date of birth, would show a raw value."""
    return [c for c in columns if not c.get("pii")]


def _measures(columns: list[dict]) -> list[dict]:
    candidates = [
        c for c in _not_personal(columns)
        if c["kind"] == "numeric" and not is_id_like(c) and (c.get("distinct") or 0) > 1 and c["count"]
    ]
    # Stable sort: totals, then other hinted names, otherwise table order.
    candidates.sort(key=lambda c: 0 if STRONG_MEASURE_RE.search(str(c["name"]))
                    else 1 if MEASURE_HINT_RE.search(str(c["name"])) else 2)
    return candidates[:MAX_MEASURES]


def _category(columns: list[dict]) -> dict | None:
    for c in _not_personal(columns):
        distinct = c.get("distinct") or 0
        mostly_present = (c.get("null_share") or 0) < 0.5
        if c["kind"] == "categorical" and 2 <= distinct <= MAX_CATEGORIES and not is_id_like(c) and mostly_present:
            return c
    return None


def _time_column(columns: list[dict]) -> dict | None:
    # TIME / TIME WITH TIME ZONE carry no date, so they say nothing about freshness.
    temporal = [
        c for c in _not_personal(columns)
        if c["kind"] == "temporal" and c["count"] and not c["type"].upper().startswith("TIME ") and c["type"].upper() != "TIME"
    ]
    # Timestamps say more about freshness than dates.
    temporal.sort(key=lambda c: 0 if c["type"].upper().startswith("TIMESTAMP") else 1)
    return temporal[0] if temporal else None


def _parse_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.replace(tzinfo=None)


def time_bucket(column: dict) -> str:
    """'day', 'week' or 'month' from the column's min..max span in the profile."""
    lo, hi = _parse_time(column.get("min")), _parse_time(column.get("max"))
    if lo is None or hi is None:
        return "day"
    days = (hi - lo).total_seconds() / 86400
    if days <= 90:
        return "day"
    if days <= 2 * 366:
        return "week"
    return "month"


def default_kpis(con: duckdb.DuckDBPyConnection, table, profile: dict) -> list[dict]:
    """KPI definitions chosen from a profile_table() result.

    Always: row_count. With a temporal column: freshness (newest value, age in hours).
    With nulls: null_rate (one row per column that has nulls). For the first one or two
    numeric measure columns (not ID-like): sum_/avg_<measure>_by_<category> for the first
    categorical column with 2..50 distinct values (10 most frequent categories) and
    sum_/avg_<measure>_by_<day|week|month> over the temporal column.

    Each KPI is {name, title, table, sql, chart: {type: bar|line|indicator, x, y}}.
    `con` is not queried: everything needed is in the profile.
    """
    del con  # the profile carries all that is needed; kept for a uniform signature
    source = table_ref(table)
    label = table_label(table)
    columns = profile.get("column_profiles", [])
    kpis: list[dict] = [{
        "name": "row_count",
        "title": f"Rows in {label}",
        "table": label,
        "sql": f"SELECT count(*) AS row_count FROM {source}",
        "chart": {"type": "indicator", "x": None, "y": "row_count"},
    }]

    time_col = _time_column(columns)
    if time_col:
        t = quote_ident(time_col["name"])
        kpis.append({
            "name": "freshness",
            "title": f"Newest {time_col['name']} and its age (hours)",
            "table": label,
            # Naive timestamps are read as UTC by epoch().
            "sql": f"SELECT max({t}) AS newest, round((epoch(now()) - epoch(max({t}))) / 3600.0, 2) AS age_hours FROM {source}",
            "chart": {"type": "indicator", "x": "newest", "y": "age_hours"},
        })

    with_nulls = [c for c in columns if c.get("nulls")]
    if with_nulls:
        rates = ", ".join(f"avg(({quote_ident(c['name'])} IS NULL)::DOUBLE) AS {quote_ident(c['name'])}" for c in with_nulls)
        kpis.append({
            "name": "null_rate",
            "title": f"Share of nulls per column in {label}",
            "table": label,
            "sql": (
                f"SELECT * FROM (UNPIVOT (SELECT {rates} FROM {source}) ON COLUMNS(*) "
                f'INTO NAME "column" VALUE null_rate) ORDER BY null_rate DESC, "column"'
            ),
            "chart": {"type": "bar", "x": "column", "y": "null_rate"},
        })

    category = _category(columns)
    bucket = time_bucket(time_col) if time_col else None
    for measure in _measures(columns):
        m, m_name = quote_ident(measure["name"]), measure["name"]
        # inf/NaN would turn every sum and average into NaN.
        finite = f" FILTER (WHERE isfinite({m}))" if measure["type"].upper() in FLOAT_TYPES else ""
        if category:
            c, c_name = quote_ident(category["name"]), category["name"]
            for agg in ("sum", "avg"):
                value_col = f"{agg}_{m_name}"
                kpis.append({
                    "name": f"{agg}_{slug(m_name)}_by_{slug(c_name)}",
                    "title": f"{agg.title()} of {m_name} by {c_name} (top {TOP_CATEGORIES} by rows)",
                    "table": label,
                    "sql": (
                        f"SELECT {c}, {agg}({m}){finite} AS {quote_ident(value_col)}, count(*) AS row_count "
                        f"FROM {source} GROUP BY {c} ORDER BY count(*) DESC, {c} NULLS LAST LIMIT {TOP_CATEGORIES}"
                    ),
                    "chart": {"type": "bar", "x": c_name, "y": value_col},
                })
        if time_col:
            t = quote_ident(time_col["name"])
            for agg in ("sum", "avg"):
                value_col = f"{agg}_{m_name}"
                kpis.append({
                    "name": f"{agg}_{slug(m_name)}_by_{bucket}",
                    "title": f"{agg.title()} of {m_name} by {bucket} of {time_col['name']}",
                    "table": label,
                    "sql": (
                        f"SELECT date_trunc('{bucket}', {t}) AS {bucket}, {agg}({m}){finite} AS {quote_ident(value_col)} "
                        f"FROM {source} WHERE {t} IS NOT NULL GROUP BY 1 ORDER BY 1"
                    ),
                    "chart": {"type": "line", "x": bucket, "y": value_col},
                })
    return kpis


class KpiError(InputError):
    """A KPI query that could not give a result: over its time limit, or failed in DuckDB."""


DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_MAX_ROWS = 10_000


def open_kpi_connection(warehouse: str | Path, *, memory_limit: str = "1GB", threads: int = 2) -> duckdb.DuckDBPyConnection:
    """A dedicated connection for KPI queries: the warehouse attached read-only into an empty
    in-memory database, external access disabled and the configuration locked.

    Nothing a query says can reach a file, a URL, an extension or a setting afterwards:
    `SET enable_external_access=false` stops file and network access (ATTACH included) and
    `SET lock_configuration=true` stops any SET from undoing it. A separate database
    instance, so the lock does not touch the connection the profiler uses.
    """
    con = duckdb.connect(":memory:", config={
        "memory_limit": memory_limit,
        "threads": threads,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_unsigned_extensions": False,
        # No implicit scans of Python variables named in a query.
        "python_enable_replacements": False,
    })
    try:
        con.execute(f"ATTACH {sql_literal(str(warehouse))} AS warehouse (READ_ONLY)")
        con.execute("USE warehouse")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con


def run_query(con: duckdb.DuckDBPyConnection, sql: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
              max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[str], list[tuple], bool, float]:
    """Run one query under a time limit and a row cap: (columns, rows, truncated, elapsed ms).

    A timer thread interrupts the connection when the limit passes (KpiError). At most
    max_rows rows are kept; `truncated` says more were there (one extra row is fetched to know).
    """
    state = {"running": True, "fired": False}
    lock = threading.Lock()

    def stop():
        with lock:
            if state["running"]:
                state["fired"] = True
                con.interrupt()

    timer = threading.Timer(timeout_ms / 1000, stop)
    timer.daemon = True
    started = time.perf_counter()
    timer.start()
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description] if cursor.description else []
        rows = cursor.fetchmany(max_rows + 1)
    except duckdb.Error as exc:
        if state["fired"] or isinstance(exc, duckdb.InterruptException):
            raise KpiError(f"the query ran past its time limit of {timeout_ms / 1000:g} s and was stopped") from None
        raise KpiError(f"the query failed in DuckDB: {str(exc).splitlines()[0]}") from None
    finally:
        with lock:
            state["running"] = False
        timer.cancel()
    elapsed_ms = (time.perf_counter() - started) * 1000
    truncated = len(rows) > max_rows
    return columns, rows[:max_rows], truncated, elapsed_ms


def run_kpi(con: duckdb.DuckDBPyConnection, kpi: dict, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
            max_rows: int = DEFAULT_MAX_ROWS) -> dict:
    """Run a KPI's SQL under a time limit and row cap; return {name, title, table, chart,
    columns, rows, row_count, truncated, pii_masked, max_rows, elapsed_ms} (JSON-safe).

    `rows` is a list of lists in `columns` order, PII-masked (shared.pii.mask_rows;
    `pii_masked` says whether anything was); `table` and `chart` are copied from the KPI.
    Raises KpiError when the query fails or runs past `timeout_ms`.
    """
    columns, rows, truncated, elapsed_ms = run_query(con, kpi["sql"], timeout_ms=timeout_ms, max_rows=max_rows)
    # Results leave the warehouse (JSON, charts, the summary): PII masked as everywhere else.
    rows, masked = mask_rows(columns, json_safe([list(r) for r in rows]))
    return {
        "name": kpi["name"],
        "title": kpi.get("title") or kpi["name"],
        "table": kpi.get("table"),
        "chart": kpi.get("chart"),
        "columns": columns,
        "rows": rows,
        "row_count": len(rows),
        "truncated": truncated,
        "pii_masked": masked,
        "max_rows": max_rows,
        "elapsed_ms": round(elapsed_ms, 2),
    }


# Charts are drawn by shared/charts.py (analyze writes them as HTML, reports renders the PNGs).
from shared.charts import CHART_TYPES, PLOTLY_JS, chart_figure, chart_html, plotly_js  # noqa: E402,F401

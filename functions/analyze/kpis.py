"""Default KPI definitions picked from a profile, their execution, and Plotly charts."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import duckdb

from .profile import FLOAT_TYPES, INTEGER_TYPES, json_safe, quote_ident, table_label, table_ref

MAX_CATEGORIES = 50
TOP_CATEGORIES = 10
MAX_MEASURES = 2

# Column names that are identifiers or codes, not quantities to add up.
ID_NAME_RE = re.compile(
    r"(^|[_\s.-])(id|key|uuid|guid|code|zip|zipcode|postcode|postal_code|phone|year|month|day|hour"
    r"|lat|latitude|lon|lng|longitude|index|idx|number|no|nr)$|^(id|key|idx)([_\s.-]|$)",
    re.IGNORECASE,
)
# Names that usually are business measures; they go first.
MEASURE_HINT_RE = re.compile(
    r"amount|revenue|sales|price|total|cost|value|qty|quantity|units|profit|spend|fee|balance|score",
    re.IGNORECASE,
)


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


def _measures(columns: list[dict]) -> list[dict]:
    candidates = [
        c for c in columns
        if c["kind"] == "numeric" and not is_id_like(c) and (c.get("distinct") or 0) > 1 and c["count"]
    ]
    # Stable sort: hinted names first, otherwise table order.
    candidates.sort(key=lambda c: 0 if MEASURE_HINT_RE.search(str(c["name"])) else 1)
    return candidates[:MAX_MEASURES]


def _category(columns: list[dict]) -> dict | None:
    for c in columns:
        distinct = c.get("distinct") or 0
        mostly_present = (c.get("null_share") or 0) < 0.5
        if c["kind"] == "categorical" and 2 <= distinct <= MAX_CATEGORIES and not is_id_like(c) and mostly_present:
            return c
    return None


def _time_column(columns: list[dict]) -> dict | None:
    # TIME / TIME WITH TIME ZONE carry no date, so they say nothing about freshness.
    temporal = [
        c for c in columns
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


def run_kpi(con: duckdb.DuckDBPyConnection, kpi: dict) -> dict:
    """Run a KPI's SQL; return {name, title, table, chart, columns, rows, row_count, elapsed_ms} (JSON-safe).

    `rows` is a list of lists in `columns` order; `table` and `chart` are copied from the KPI.
    """
    started = time.perf_counter()
    cursor = con.execute(kpi["sql"])
    columns = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {
        "name": kpi["name"],
        "title": kpi["title"],
        "table": kpi.get("table"),
        "chart": kpi.get("chart"),
        "columns": columns,
        "rows": json_safe([list(r) for r in rows]),
        "row_count": len(rows),
        "elapsed_ms": round(elapsed_ms, 2),
    }


PLOTLY_JS = "plotly.min.js"


def plotly_js() -> str:
    """plotly.js as shipped in the plotly package (offline), written once per job as an artifact."""
    from plotly.offline import get_plotlyjs
    return get_plotlyjs()


def chart_html(kpi: dict, result: dict, plotlyjs: bool | str = True) -> str:
    """HTML page with a Plotly chart of a KPI result. `plotlyjs=True` inlines plotly.js (4.5 MB);
    a file name such as PLOTLY_JS links it beside the page instead (offline all the same)."""
    import plotly.graph_objects as go

    chart = kpi.get("chart") or {}
    columns, rows = result.get("columns", []), result.get("rows", [])

    def values(name):
        if name not in columns:
            return []
        index = columns.index(name)
        return [row[index] for row in rows]

    kind = chart.get("type")
    fig = go.Figure()
    ys = values(chart.get("y"))
    if not rows:
        fig.add_annotation(text="No data", showarrow=False, font={"size": 20})
    elif kind == "indicator":
        value = ys[0] if ys else None
        subtitle = ""
        if chart.get("x") and values(chart["x"]):
            subtitle = f"<br><span style='font-size:0.7em'>{chart['x']}: {values(chart['x'])[0]}</span>"
        fig.add_trace(go.Indicator(
            mode="number",
            value=value if isinstance(value, (int, float)) else None,
            title={"text": f"{kpi['title']}{subtitle}"},
        ))
    elif kind == "line":
        fig.add_trace(go.Scatter(x=values(chart.get("x")), y=ys, mode="lines+markers", name=chart.get("y")))
    else:
        xs = ["(null)" if v is None else str(v) for v in values(chart.get("x"))]
        fig.add_trace(go.Bar(x=xs, y=ys, name=chart.get("y")))
    if kind != "indicator":
        fig.update_layout(title=kpi["title"], xaxis_title=chart.get("x"), yaxis_title=chart.get("y"))
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 30, "t": 70, "b": 60})
    return fig.to_html(include_plotlyjs=plotlyjs, full_html=True, config={"displaylogo": False})

"""Rule-based summary of an analysis: every sentence comes from a number in the JSON."""

from __future__ import annotations

from typing import Any

from .profile import json_safe
from .reports import drift_verdict

MAX_ALERTS = 10
# Lower ranks first in the summary.
ALERT_RANK = {"pii": 0, "many_nulls": 1, "constant": 2, "unique": 3, "high_cardinality": 4, "skewed": 5, "many_zeros": 6}
TIME_BUCKETS = ("hour", "day", "week", "month", "year")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"


class _Facts:
    def __init__(self) -> None:
        self.items: list[dict] = []
        self._ids: set[str] = set()

    def add(self, section: str, fact_id: str, text: str, value: Any, source: str) -> None:
        unique_id, n = fact_id, 2
        while unique_id in self._ids:
            unique_id, n = f"{fact_id}#{n}", n + 1
        self._ids.add(unique_id)
        self.items.append({"id": unique_id, "section": section, "text": text, "value": json_safe(value), "source": source})


def _table_facts(facts: _Facts, profiles: list[dict]) -> list[dict]:
    tables = []
    for p in profiles:
        t = p.get("table")
        entry = {
            "table": t,
            "rows": p.get("rows"),
            "columns": p.get("columns"),
            "duplicate_rows": p.get("duplicate_rows"),
            "size_bytes": p.get("size_bytes"),
            "alerts": len(p.get("alerts", [])),
        }
        tables.append(entry)
        facts.add("tables", f"table:{t}:rows",
                  f"Table `{t}` has {_fmt(entry['rows'])} rows and {_fmt(entry['columns'])} columns "
                  f"(about {_size(entry['size_bytes'])} uncompressed).",
                  entry["rows"], f"profile:{t}.rows")
        if entry["duplicate_rows"]:
            share = entry["duplicate_rows"] / entry["rows"] if entry["rows"] else None
            facts.add("tables", f"table:{t}:duplicate_rows",
                      f"Table `{t}` has {_fmt(entry['duplicate_rows'])} duplicate rows ({_pct(share)}).",
                      entry["duplicate_rows"], f"profile:{t}.duplicate_rows")
        if entry["alerts"]:
            facts.add("tables", f"table:{t}:alerts",
                      f"Table `{t}` raised {entry['alerts']} data-quality alert{'s' if entry['alerts'] != 1 else ''}.",
                      entry["alerts"], f"profile:{t}.alerts")
    return tables


def _alert_facts(facts: _Facts, profiles: list[dict]) -> list[dict]:
    alerts = [dict(a, table=p.get("table")) for p in profiles for a in p.get("alerts", [])]
    alerts.sort(key=lambda a: (ALERT_RANK.get(a["kind"], 99), str(a["table"]), str(a["column"])))
    top = alerts[:MAX_ALERTS]
    for a in top:
        facts.add("alerts", f"alert:{a['table']}:{a['column']}:{a['kind']}",
                  f"`{a['table']}.{a['column']}` ({a['kind'].replace('_', ' ')}): {a['message']}.",
                  a.get("value"), f"profile:{a['table']}.alerts")
    return top


def _column(result: dict, name: str | None) -> list:
    columns = result.get("columns", [])
    if name not in columns:
        return []
    index = columns.index(name)
    return [row[index] for row in result.get("rows", [])]


def _headline(result: dict) -> tuple[str, Any]:
    """(sentence, value) for one KPI result."""
    name, title = result.get("name", ""), result.get("title", result.get("name", ""))
    columns, rows = result.get("columns", []), result.get("rows", [])
    chart = result.get("chart") or {}
    if not rows:
        return f"{title}: no rows.", None
    if name == "row_count" or (name.startswith("row_count") and len(rows) == 1):
        value = rows[0][0]
        return f"{title}: {_fmt(value)}.", value
    if name == "freshness":
        newest, age = rows[0][0], rows[0][1] if len(rows[0]) > 1 else None
        return f"{title}: newest value {newest}, {_fmt(age)} hours before the analysis ran.", age
    if name == "null_rate":
        column, rate = rows[0][0], rows[0][1]
        return (f"Highest null rate: column `{column}` with {_pct(rate)} "
                f"({len(rows)} column{'s' if len(rows) != 1 else ''} with nulls)."), rate
    x_name = chart.get("x") or columns[0]
    y_name = chart.get("y") or (columns[1] if len(columns) > 1 else columns[0])
    xs, ys = _column(result, x_name), _column(result, y_name)
    is_series = chart.get("type") == "line" or any(name.endswith(f"_by_{b}") for b in TIME_BUCKETS)
    if is_series and ys:
        last, text = ys[-1], f"{title}: latest {x_name} {xs[-1]} = {_fmt(ys[-1])}"
        if len(ys) > 1 and isinstance(ys[-2], (int, float)) and isinstance(last, (int, float)) and ys[-2]:
            text += f" ({(last - ys[-2]) / abs(ys[-2]):+.1%} vs previous {x_name})"
        return text + f", over {len(ys)} {x_name}s.", last
    numeric = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float))]
    if len(rows) > 1 and numeric:
        x_top, y_top = max(numeric, key=lambda xy: xy[1])
        return f"{title}: highest is `{x_top}` with {_fmt(y_top)} ({len(rows)} groups shown).", y_top
    pairs = "; ".join(f"{c} = {_fmt(v)}" for c, v in zip(columns, rows[0]))
    first_numeric = next((v for v in rows[0] if isinstance(v, (int, float))), rows[0][0])
    return f"{title}: {pairs}.", first_numeric


def _flatten_kpi(item: dict) -> dict:
    """Accept a run_kpi() result or a KPI definition carrying it under "result"."""
    if isinstance(item.get("result"), dict):
        merged = dict(item["result"])
        for key in ("name", "title", "table", "chart"):
            if item.get(key) is not None:
                merged[key] = item[key]
        return merged
    return item


def _kpi_facts(facts: _Facts, kpi_results: list[dict]) -> list[dict]:
    kpis = []
    for item in kpi_results:
        result = _flatten_kpi(item)
        text, value = _headline(result)
        table = result.get("table")
        name = result.get("name", "kpi")
        kpis.append({"name": name, "table": table, "title": result.get("title"), "headline": text, "value": json_safe(value)})
        facts.add("kpis", f"kpi:{table}:{name}" if table else f"kpi:{name}", text, value, f"kpi:{name}")
    return kpis


def _is_single_drift(drift: dict) -> bool:
    return "dataset_drift" in drift or "metrics" in drift


def _drift_facts(facts: _Facts, drift: dict | None) -> dict | None:
    if not drift:
        return None
    if _is_single_drift(drift):
        return _one_drift(facts, None, drift)
    return {table: _one_drift(facts, table, verdict) for table, verdict in drift.items()}


def _one_drift(facts: _Facts, table: str | None, drift: dict) -> dict:
    if "metrics" in drift and "dataset_drift" not in drift:
        drift = drift_verdict(drift)
    share = drift.get("share")
    drifted = list(drift.get("drifted_columns") or [])
    total = len(drift.get("columns") or []) or None
    threshold = drift.get("threshold")
    subject = f"Table `{table}`" if table else "The data"
    verdict = "drifted" if drift.get("dataset_drift") else "did not drift"
    detail = f"{len(drifted)}{f' of {total}' if total else ''} columns drifted ({_pct(share)}"
    detail += f", dataset threshold {_pct(threshold)})" if threshold is not None else ")"
    prefix = f"drift:{table}" if table else "drift"
    source = f"drift:{table}" if table else "drift"
    facts.add("drift", f"{prefix}:dataset", f"{subject} {verdict} against its reference: {detail}.",
              share, f"{source}.share")
    if drifted:
        facts.add("drift", f"{prefix}:columns",
                  f"Drifted columns{f' in `{table}`' if table else ''}: " + ", ".join(f"`{c}`" for c in drifted) + ".",
                  drifted, f"{source}.drifted_columns")
    return {"dataset_drift": bool(drift.get("dataset_drift")), "drifted_columns": drifted,
            "share": share, "threshold": threshold}


SECTION_TITLES = {"tables": "Tables", "alerts": "Top alerts", "kpis": "KPIs", "drift": "Drift"}


def summarize(profiles: list[dict], kpi_results: list[dict], drift: dict | None) -> tuple[str, dict]:
    """Markdown summary and JSON facts built only from the numbers (no language model).

    profiles: profile_table() results. kpi_results: run_kpi() results, or KPI dicts
    holding one under "result". drift: a drift_verdict() dict (or a raw
    evidently_drift() result dict), a {table: verdict} mapping of those, or None.
    Returns (markdown, data) where data is {tables, alerts, kpis, drift, facts} and
    facts is [{id, section, text, value, source}]; the markdown lists exactly the facts.
    """
    facts = _Facts()
    data = {
        "tables": _table_facts(facts, profiles),
        "alerts": _alert_facts(facts, profiles),
        "kpis": _kpi_facts(facts, kpi_results),
        "drift": _drift_facts(facts, drift),
    }
    data["facts"] = facts.items

    lines = ["# Analysis summary", ""]
    for section, title in SECTION_TITLES.items():
        items = [f for f in facts.items if f["section"] == section]
        if not items:
            continue
        lines += [f"## {title}", ""]
        lines += [f"- {f['text']}" for f in items]
        lines.append("")
    if len(lines) == 2:
        lines += ["No tables were analysed.", ""]
    return "\n".join(lines), json_safe(data)

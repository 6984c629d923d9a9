"""Rule-based summary of an analysis: every sentence comes from numbers in the JSON.

Each sentence is a fact {id, section, template, data, text, value, source}: `text` is
`render(template, data)`, and templates hold no digits, so every number a reader sees in
summary.md is a value of `data` in summary.json, formatted. `source` names where the
number came from (a profile field, a KPI, a drift verdict, the text statistics).
"""

from __future__ import annotations

import re
import string
from typing import Any

from .profile import json_safe
from shared.analysis.evidentlyresult import drift_verdict

MAX_ALERTS = 10
MAX_DRIFT_SCORES = 3
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


def _signed_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _code(value) -> str:
    # A backtick inside a name would end the code span early and let the rest be read as
    # Markdown (or HTML): it is shown as the look-alike U+02CB instead.
    return "`" + str(value).replace("`", "\u02cb") + "`"


# Outside code spans, characters Markdown (and the HTML it may carry) would act on are
# backslash-escaped in summary.md (CommonMark: any ASCII punctuation may be escaped), so a
# column name or cell value such as "<img onerror=...>" or "[x](javascript:...)" is shown, never
# rendered. Code spans need nothing: their content is literal.
_MD_SPECIAL = re.compile(r"([\\<>&\[\]*_])")


def markdown_text(text: str) -> str:
    """A fact's text as a line of Markdown: code spans kept, everything else escaped."""
    parts = text.split("`")
    return "`".join(part if i % 2 else _MD_SPECIAL.sub(r"\\\1", part) for i, part in enumerate(parts))


FORMATS = {
    "num": _fmt,
    "pct": _pct,
    "spct": _signed_pct,
    "size": _size,
    "code": lambda v: _code(v),
    "codes": lambda vs: ", ".join(_code(v) for v in vs),
    "plural": lambda n: "" if n == 1 else "s",
    "": lambda v: _fmt(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v),
}


class _Formatter(string.Formatter):
    def format_field(self, value, format_spec):
        if format_spec not in FORMATS:
            raise ValueError(f"unknown summary format {format_spec!r}; known: {sorted(FORMATS)}")
        return FORMATS[format_spec](value)


def render(template: str, data: dict) -> str:
    """A fact's sentence from its template and data: `{name:num}`, `{name:pct}`,
    `{name:size}`, `{name:code}`, `{name:codes}`, `{name:plural}`, `{name:spct}`, `{name}`."""
    return _Formatter().vformat(template, (), data)


class _Facts:
    def __init__(self) -> None:
        self.items: list[dict] = []
        self._ids: set[str] = set()

    def add(self, section: str, fact_id: str, template: str, data: dict, value: Any, source: str) -> str:
        unique_id, n = fact_id, 2
        while unique_id in self._ids:
            unique_id, n = f"{fact_id}#{n}", n + 1
        self._ids.add(unique_id)
        data = json_safe(data)
        text = render(template, data)
        self.items.append({"id": unique_id, "section": section, "text": text, "template": template,
                           "data": data, "value": json_safe(value), "source": source})
        return text


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
                  "Table {table:code} has {rows:num} rows and {columns:num} columns (about {size:size} uncompressed).",
                  {"table": t, "rows": entry["rows"], "columns": entry["columns"], "size": entry["size_bytes"]},
                  entry["rows"], f"profile:{t}.rows")
        if entry["duplicate_rows"]:
            share = entry["duplicate_rows"] / entry["rows"] if entry["rows"] else None
            facts.add("tables", f"table:{t}:duplicate_rows",
                      "Table {table:code} has {duplicates:num} duplicate rows ({share:pct}).",
                      {"table": t, "duplicates": entry["duplicate_rows"], "share": share},
                      entry["duplicate_rows"], f"profile:{t}.duplicate_rows")
        if entry["alerts"]:
            facts.add("tables", f"table:{t}:alerts",
                      "Table {table:code} raised {alerts:num} data-quality alert{alerts:plural}.",
                      {"table": t, "alerts": entry["alerts"]}, entry["alerts"], f"profile:{t}.alerts")
    return tables


def _alert_facts(facts: _Facts, profiles: list[dict]) -> list[dict]:
    alerts = [dict(a, table=p.get("table")) for p in profiles for a in p.get("alerts", [])]
    alerts.sort(key=lambda a: (ALERT_RANK.get(a["kind"], 99), str(a["table"]), str(a["column"])))
    top = alerts[:MAX_ALERTS]
    for a in top:
        # The alert's message is the profiler's own sentence about the same value.
        facts.add("alerts", f"alert:{a['table']}:{a['column']}:{a['kind']}",
                  "{where:code} ({kind}): {message}.",
                  {"where": f"{a['table']}.{a['column']}", "kind": a["kind"].replace("_", " "),
                   "message": a["message"], "value": a.get("value")},
                  a.get("value"), f"profile:{a['table']}.alerts")
    return top


def _column(result: dict, name: str | None) -> list:
    columns = result.get("columns", [])
    if name not in columns:
        return []
    index = columns.index(name)
    return [row[index] for row in result.get("rows", [])]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _headline(result: dict) -> tuple[str, dict, Any]:
    """(template, data, value) for one KPI result."""
    name, title = result.get("name", ""), result.get("title", result.get("name", ""))
    columns, rows = result.get("columns", []), result.get("rows", [])
    chart = result.get("chart") or {}
    data: dict[str, Any] = {"title": title}
    if result.get("error"):
        data["error"] = result["error"]
        return "{title}: not computed ({error}).", data, None
    if not rows:
        return "{title}: no rows.", data, None
    if name == "row_count" or (name.startswith("row_count") and len(rows) == 1):
        data["value"] = rows[0][0]
        return "{title}: {value:num}.", data, rows[0][0]
    if name == "freshness":
        data.update(newest=rows[0][0], age_hours=rows[0][1] if len(rows[0]) > 1 else None)
        return "{title}: newest value {newest}, {age_hours:num} hours before the analysis ran.", data, data["age_hours"]
    if name == "null_rate":
        data.update(column=rows[0][0], rate=rows[0][1], columns=len(rows))
        return ("Highest null rate: column {column:code} with {rate:pct} "
                "({columns:num} column{columns:plural} with nulls)."), data, rows[0][1]
    x_name = chart.get("x") or columns[0]
    y_spec = chart.get("y")
    y_name = (y_spec[0] if isinstance(y_spec, list) and y_spec else y_spec) or (columns[1] if len(columns) > 1 else columns[0])
    xs, ys = _column(result, x_name), _column(result, y_name)
    data.update(x_name=x_name, y_name=y_name)
    is_series = chart.get("type") == "line" or any(name.endswith(f"_by_{b}") for b in TIME_BUCKETS)
    if is_series and ys:
        data.update(last_x=xs[-1] if xs else None, last=ys[-1], points=len(ys))
        template = "{title}: latest {x_name} {last_x} = {last:num}"
        if len(ys) > 1 and _is_number(ys[-2]) and _is_number(ys[-1]) and ys[-2]:
            data["change"] = (ys[-1] - ys[-2]) / abs(ys[-2])
            template += " ({change:spct} vs previous {x_name})"
        return template + ", over {points:num} {x_name}s.", data, ys[-1]
    numeric = [(x, y) for x, y in zip(xs, ys, strict=True) if _is_number(y)]
    if len(rows) > 1 and numeric:
        x_top, y_top = max(numeric, key=lambda xy: xy[1])
        data.update(top=x_top, top_value=y_top, groups=len(rows))
        return "{title}: highest is {top:code} with {top_value:num} ({groups:num} groups shown).", data, y_top
    first_numeric = next((v for v in rows[0] if _is_number(v)), rows[0][0])
    data["pairs"] = "; ".join(f"{c} = {_fmt(v)}" for c, v in zip(columns, rows[0], strict=True))
    data["row"] = dict(zip(columns, rows[0], strict=True))
    return "{title}: {pairs}.", data, first_numeric


def _flatten_kpi(item: dict) -> dict:
    """Accept a run_kpi() result or a KPI definition carrying it under "result"."""
    if isinstance(item.get("result"), dict):
        merged = dict(item["result"])
        for key in ("name", "title", "table", "chart"):
            if item.get(key) is not None:
                merged[key] = item[key]
        return merged
    return item


def _kpi_facts(facts: _Facts, kpi_results: list[dict], section: str = "kpis") -> list[dict]:
    kpis = []
    for item in kpi_results:
        result = _flatten_kpi(item)
        if item.get("error") and not result.get("error"):
            result = {**result, "error": item["error"]}
        template, data, value = _headline(result)
        table = result.get("table")
        name = result.get("name", "kpi")
        fact_id = f"kpi:{table}:{name}" if table else f"kpi:{name}"
        text = facts.add(section, fact_id, template, data, value, f"kpi:{name}")
        kpis.append({"name": name, "table": table, "title": result.get("title"), "headline": text,
                     "value": json_safe(value)})
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
    prefix = f"drift:{table}" if table else "drift"
    source = f"drift:{table}" if table else "drift"
    data = {"subject": f"Table `{table}`" if table else "The data",
            "verdict": "drifted" if drift.get("dataset_drift") else "did not drift",
            "drifted": len(drifted), "total": total, "share": share, "threshold": threshold}
    template = "{subject} {verdict} against its reference: {drifted:num}"
    template += " of {total:num} columns drifted ({share:pct}" if total else " columns drifted ({share:pct}"
    template += ", dataset threshold {threshold:pct})." if threshold is not None else ")."
    facts.add("drift", f"{prefix}:dataset", template, data, share, f"{source}.share")
    if drifted:
        facts.add("drift", f"{prefix}:columns", "Drifted columns{where}: {columns:codes}.",
                  {"where": f" in `{table}`" if table else "", "columns": drifted},
                  drifted, f"{source}.drifted_columns")
        scored = [c for c in drift.get("columns") or [] if c.get("drifted") and _is_number(c.get("score"))]
        for c in scored[:MAX_DRIFT_SCORES]:
            facts.add("drift", f"{prefix}:score:{c['column']}",
                      "Column {column:code} drift score {score:num} by {method} (threshold {threshold:num}).",
                      {"column": c["column"], "score": c["score"],
                       "method": c.get("test") or c.get("method") or "its test",  # drift.py: test is the name
                       "threshold": c.get("threshold")},
                      c["score"], f"{source}.columns")
    out = {"dataset_drift": bool(drift.get("dataset_drift")), "drifted_columns": drifted,
           "share": share, "threshold": threshold}
    if drift.get("reference"):
        out["reference"] = drift["reference"]
    return out


def _text_facts(facts: _Facts, text_stats: list[dict] | None) -> list[dict]:
    out = []
    for stats in text_stats or []:
        t = stats.get("table")
        by_type = stats.get("elements_by_type") or []
        data = {"table": t, "documents": stats.get("documents"), "elements": stats.get("elements"),
                "types": len(by_type)}
        facts.add("documents", f"text:{t}:documents",
                  "Table {table:code} holds {documents:num} document{documents:plural} in {elements:num} elements "
                  "of {types:num} type{types:plural}.", data, stats.get("documents"), f"text-stats:{t}.documents")
        length = stats.get("text_length") or {}
        if length.get("mean") is not None:
            facts.add("documents", f"text:{t}:length",
                      "Element text in {table:code} is {mean:num} characters long on average "
                      "(median {median:num}, longest {max:num}).",
                      {"table": t, "mean": length.get("mean"), "median": (length.get("quantiles") or {}).get("p50"),
                       "max": length.get("max")}, length.get("mean"), f"text-stats:{t}.text_length")
        terms = [x["term"] for x in (stats.get("top_terms") or [])[:5]]
        if terms:
            facts.add("documents", f"text:{t}:terms", "Most frequent terms in {table:code}: {terms:codes}.",
                      {"table": t, "terms": terms}, terms, f"text-stats:{t}.top_terms")
        out.append({"table": t, "documents": stats.get("documents"), "elements": stats.get("elements"),
                    "top_terms": terms})
    return out


SECTION_TITLES = {"tables": "Tables", "alerts": "Top alerts", "drift": "Drift", "kpis": "KPIs",
                  "custom_kpis": "Tenant KPIs", "documents": "Documents"}


def summarize(profiles: list[dict], kpi_results: list[dict], drift: dict | None, *,
              custom_kpis: list[dict] | None = None, text_stats: list[dict] | None = None) -> tuple[str, dict]:
    """Markdown summary and JSON facts built only from the numbers (no language model).

    profiles: profile_table() results. kpi_results: run_kpi() results, or KPI dicts
    holding one under "result". drift: a drift_verdict() dict (or a raw
    evidently_drift() result dict), a {table: verdict} mapping of those, or None.
    custom_kpis: results of the tenant's own KPIs (an entry with "error" says why it did
    not run). text_stats: textstats.text_stats() results.
    Returns (markdown, data) where data is {tables, alerts, kpis, custom_kpis, drift,
    documents, facts}; facts is [{id, section, text, template, data, value, source}] and
    the markdown lists exactly the facts' texts.
    """
    facts = _Facts()
    data = {
        "tables": _table_facts(facts, profiles),
        "alerts": _alert_facts(facts, profiles),
        "drift": _drift_facts(facts, drift),
        "kpis": _kpi_facts(facts, kpi_results),
        "custom_kpis": _kpi_facts(facts, custom_kpis or [], section="custom_kpis"),
        "documents": _text_facts(facts, text_stats),
    }
    data["facts"] = facts.items

    lines = ["# Analysis summary", ""]
    for section, title in SECTION_TITLES.items():
        items = [f for f in facts.items if f["section"] == section]
        if not items:
            continue
        lines += [f"## {title}", ""]
        lines += [f"- {markdown_text(f['text'])}" for f in items]
        lines.append("")
    if len(lines) == 2:
        lines += ["No tables were analysed.", ""]
    return "\n".join(lines), json_safe(data)

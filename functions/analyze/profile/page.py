"""The profile as one self-contained HTML page (templates/profile.html, autoescaped).

This module turns a profile into what the page shows (formatted numbers, bar widths, the
blocks of each column's section); the template only lays it out, so every name and value
from the data reaches the page escaped."""
from __future__ import annotations

from typing import Any

from shared.core.templating import render

# Beyond this many buckets a temporal histogram shows the first ones and says so.
TEMPORAL_BUCKETS_SHOWN = 120
BAR_MAX_PX = 160


def fmt(value: Any) -> str:
    """A statistic as the page shows it: '–' for none, thousands separators, 4 significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e15:
            return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.2f}"
        return f"{value:.4e}"
    return str(value)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def bars(rows: list[tuple[str, int]]) -> list[dict]:
    """Rows of a bar chart table: label, count and the bar's width in pixels."""
    peak = max((n for _, n in rows), default=0) or 1
    return [{"label": label, "count": f"{n:,}", "width": max(1, round(BAR_MAX_PX * n / peak))} for label, n in rows]


def _block(heading: str | None = None, kv: list[tuple[str, str]] | None = None,
           bars_of: list[tuple[str, int]] | None = None, note: str | None = None) -> dict:
    """One box of a column's section: an optional heading, key/value table, bar chart and note."""
    return {"heading": heading, "kv": kv, "bars": None if bars_of is None else bars(bars_of), "note": note}


def _top_bars(col: dict) -> list[tuple[str, int]]:
    return [(fmt(t["value"]), t["count"]) for t in col.get("top_k") or []]


def _numeric_blocks(col: dict) -> list[dict]:
    stats = [("mean", fmt(col.get("mean"))), ("std", fmt(col.get("std"))),
             ("skewness", fmt(col.get("skewness"))),
             ("zeros", f"{fmt(col.get('zeros'))} ({pct(col.get('zero_share'))})")]
    stats += [(k, fmt(v)) for k, v in (col.get("quantiles") or {}).items()]
    hist = [(f"{fmt(b['lo'])} – {fmt(b['hi'])}", b["count"]) for b in col.get("histogram", [])]
    blocks = [_block(kv=stats, note=f"quantiles: {col.get('quantile_method', '')}"),
              _block("Histogram", bars_of=hist)]
    if col.get("top_k"):
        blocks.append(_block("Frequent values", bars_of=_top_bars(col)))
    return blocks


def _boolean_blocks(col: dict) -> list[dict]:
    blocks = [_block(kv=[("true", fmt(col.get("trues"))), ("true share", pct(col.get("true_share")))])]
    if col.get("top_k"):
        blocks.append(_block("Values", bars_of=_top_bars(col)))
    return blocks


def _temporal_blocks(col: dict) -> list[dict]:
    hist = [(str(b["bucket"]), b["count"]) for b in col.get("histogram", [])]
    note = (f"first {TEMPORAL_BUCKETS_SHOWN} of {len(hist)} buckets"
            if len(hist) > TEMPORAL_BUCKETS_SHOWN else None)
    return [_block(f"By {col.get('histogram_unit') or ''}", bars_of=hist[:TEMPORAL_BUCKETS_SHOWN], note=note)]


def _text_blocks(col: dict) -> list[dict]:
    lengths = [("min length", fmt(col.get("min_length"))), ("max length", fmt(col.get("max_length"))),
               ("mean length", fmt(col.get("mean_length"))), ("empty strings", fmt(col.get("empty")))]
    lengths += [(f"pattern: {k}", fmt(v)) for k, v in (col.get("patterns") or {}).items() if v]
    return [_block(kv=lengths), _block("Top values", bars_of=_top_bars(col))]


KIND_BLOCKS = {"numeric": _numeric_blocks, "boolean": _boolean_blocks, "temporal": _temporal_blocks}


def column_section(col: dict, alerts: list[dict]) -> dict:
    """What one column's section shows: its name, kind, alert tags and blocks."""
    basics = [
        ("type", fmt(col["type"])),
        ("non-null", fmt(col["count"])),
        ("nulls", f"{fmt(col['nulls'])} ({pct(col.get('null_share'))})"),
        ("distinct", f"{fmt(col['distinct'])} ({col.get('distinct_method', '')})"),
        ("min", fmt(col.get("min"))),
        ("max", fmt(col.get("max"))),
    ]
    blocks = [_block(kv=basics)] + KIND_BLOCKS.get(col["kind"], _text_blocks)(col)
    withheld = (col.get("pii") or {}).get("withheld")
    if withheld:
        blocks.append(_block(note="Personal data: values are masked and the statistics that would "
                                  f"show them are withheld ({', '.join(withheld)})."))
    return {"name": col["name"], "kind": col["kind"], "alert_kinds": [a["kind"] for a in alerts], "blocks": blocks}


def render_profile_html(profile: dict) -> str:
    """Render a profile from profile_table() as one self-contained HTML page (no scripts, inline CSS)."""
    alerts = profile.get("alerts", [])
    methods = profile.get("methods") or {}
    overview = [
        ("rows", fmt(profile.get("rows"))),
        ("columns", fmt(profile.get("columns"))),
        ("duplicate rows", f"{fmt(profile.get('duplicate_rows'))} ({pct(profile.get('duplicate_share'))})"),
        ("size (estimate)", fmt(profile.get("size_bytes")) + " bytes"),
        ("distinct counts", str(methods.get("distinct", ""))),
        ("quantiles", str(methods.get("quantiles", ""))),
        ("profiled in", fmt(profile.get("elapsed_ms")) + " ms"),
    ]
    by_column: dict[str, list[dict]] = {}
    for a in alerts:
        by_column.setdefault(a["column"], []).append(a)
    profiles = profile.get("column_profiles", [])
    return render(
        __package__, "profile.html",
        title=str(profile.get("table", "")),
        rows=fmt(profile.get("rows")),
        overview=overview,
        alerts=alerts,
        columns=[{"name": c["name"], "type": c["type"], "kind": c["kind"], "nulls": pct(c.get("null_share")),
                  "distinct": fmt(c.get("distinct"))} for c in profiles],
        pairs=[{"a": p["a"], "b": p["b"], "r": f"{p['r']:.3f}"}
               for p in ((profile.get("correlations") or {}).get("pairs") or [])[:20]],
        sections=[column_section(c, by_column.get(c["name"], [])) for c in profiles],
    )

"""Text statistics for tables of document fragments, computed in DuckDB over every row.

A fragments table has the columns document, element_id, element_type, text, page, section
and metadata (as the document source writes it: one row per element that unstructured
found). It gets, beside the usual profile: documents, elements, elements by type, pages and
sections, per-document element counts, the text length distribution and the top terms.
"""
from __future__ import annotations

import time

import duckdb

from shared.core.templating import render
from shared.storage import duck

from .profile import json_safe, quote_ident, table_label, table_ref

DOCUMENT_COLUMNS = ("document", "element_id", "element_type", "text", "page", "section", "metadata")
QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
LENGTH_BINS = 20
TOP_TERMS = 25
TOP_DOCUMENTS = 20
# Terms are runs of 3+ letters, lower-cased; these carry no topic.
STOPWORDS = (
    "the and for are but not you all any can had her was one our out day get has him his how man new now "
    "old see two way who boy did its let put say she too use that with have this will your from they know "
    "want been good much some time very when come here just like long make many more only over such take "
    "than them well were what which their there would about could other into also these those then where "
    "while each most should through after before being between both because during under again further "
    "once same own off until why may might must shall upon per via etc"
).split()


def is_document_table(columns) -> bool:
    """True when a table has every fragments column (names compared case-insensitively).

    `columns` is a profile's column_profiles, or a list of names or (name, type) pairs.
    """
    names = set()
    for c in columns:
        name = c["name"] if isinstance(c, dict) else (c[0] if isinstance(c, (tuple, list)) else c)
        names.add(str(name).lower())
    return set(DOCUMENT_COLUMNS) <= names


def _column_map(con, source: str) -> dict[str, str]:
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    return {str(r[0]).lower(): quote_ident(r[0]) for r in described}


def text_stats(con: duckdb.DuckDBPyConnection, table, *, top_terms: int = TOP_TERMS, bins: int = LENGTH_BINS) -> dict:
    """Statistics of a fragments table (see is_document_table), JSON-safe.

    Returns {table, documents, elements, elements_by_type: [{element_type, count}],
    pages, sections, elements_per_document: {min, mean, max, top: [{document, elements}]},
    text_length: {count, empty, nulls, min, max, mean, quantiles, histogram: [{lo, hi, count}],
    characters, words}, top_terms: [{term, count, documents}], elapsed_ms}. Lengths are in
    characters; words and terms are runs of letters (terms: 3+ letters, lower-cased, no
    stopwords).
    """
    started = time.perf_counter()
    source = table_ref(table)
    col = _column_map(con, source)
    missing = [c for c in DOCUMENT_COLUMNS if c not in col]
    if missing:
        raise ValueError(f"{table_label(table)} is not a fragments table: it lacks the columns {missing}")
    doc, kind, text, page, section = col["document"], col["element_type"], col["text"], col["page"], col["section"]
    points = "[" + ", ".join(str(p) for p in QUANTILES.values()) + "]"
    (elements, documents, pages, sections, nulls, empty, lmin, lmax, lmean, quantiles,
     characters, words) = duck.one(con, f"""
        SELECT count(*), count(DISTINCT {doc}), count(DISTINCT ({doc}, {page})) FILTER (WHERE {page} IS NOT NULL),
               count(DISTINCT ({doc}, {section})) FILTER (WHERE {section} IS NOT NULL),
               count(*) FILTER (WHERE {text} IS NULL), count(*) FILTER (WHERE {text} = ''),
               min(length({text})), max(length({text})), avg(length({text})),
               quantile_cont(length({text}), {points}),
               sum(length({text})), sum(len(regexp_extract_all({text}, '[[:alpha:]]+')))
        FROM {source}""")
    by_type = con.execute(
        f"SELECT coalesce({kind}::VARCHAR, '(none)') AS t, count(*) AS n FROM {source} GROUP BY 1 ORDER BY n DESC, t"
    ).fetchall()
    per_doc = duck.one(con, f"""
        WITH d AS (SELECT {doc} AS document, count(*) AS n FROM {source} GROUP BY 1)
        SELECT min(n), avg(n), max(n),
               (SELECT list({{'document': document, 'elements': n}} ORDER BY n DESC, document)[1:{TOP_DOCUMENTS}] FROM d)
        FROM d""")
    histogram = []
    if lmax is not None:
        width = max(1.0, (lmax - lmin) / bins) if lmax > lmin else 1.0
        n_bins = max(1, min(bins, int((lmax - lmin) / width) + 1))
        counts = dict(con.execute(f"""
            SELECT least(floor((length({text}) - {lmin}) / {width!r}), {n_bins - 1})::INTEGER AS b, count(*)
            FROM {source} WHERE {text} IS NOT NULL GROUP BY 1""").fetchall())
        histogram = [{"lo": lmin + i * width, "hi": lmin + (i + 1) * width, "count": counts.get(i, 0)}
                     for i in range(n_bins)]
    stop = "[" + ", ".join(f"'{w}'" for w in STOPWORDS) + "]"
    terms = con.execute(f"""
        SELECT term, count(*) AS n, count(DISTINCT document) AS docs FROM (
            SELECT {doc} AS document, unnest(regexp_extract_all(lower({text}), '[[:alpha:]]{{3,}}')) AS term
            FROM {source} WHERE {text} IS NOT NULL)
        WHERE NOT list_contains({stop}, term)
        GROUP BY term ORDER BY n DESC, term LIMIT {int(top_terms)}""").fetchall()
    result = {
        "table": table_label(table),
        "documents": documents,
        "elements": elements,
        "elements_by_type": [{"element_type": t, "count": n} for t, n in by_type],
        "pages": pages,
        "sections": sections,
        "elements_per_document": {
            "min": per_doc[0], "mean": per_doc[1], "max": per_doc[2],
            "top": per_doc[3] or [],
        },
        "text_length": {
            "count": elements - nulls, "nulls": nulls, "empty": empty,
            "min": lmin, "max": lmax, "mean": lmean,
            "quantiles": dict(zip(QUANTILES, quantiles or [None] * len(QUANTILES), strict=True)),
            "quantile_method": "quantile_cont (exact)",
            "histogram": histogram,
            "characters": characters, "words": words,
        },
        "top_terms": [{"term": t, "count": n, "documents": d} for t, n, d in terms],
    }
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return json_safe(result)


def _num(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _bars(rows: list[tuple[str, int]]) -> list[dict]:
    """Rows of a bar chart table: label, count and the bar's width in pixels (at most 200)."""
    peak = max((n for _, n in rows), default=0) or 1
    return [{"label": label, "count": f"{n:,}", "width": max(1, round(200 * n / peak))} for label, n in rows]


def render_text_stats_html(stats: dict) -> str:
    """One self-contained page (inline CSS, no scripts) for a text_stats() result, from
    templates/text_stats.html (Jinja2, autoescaped)."""
    length = stats["text_length"]
    overview = [("documents", stats["documents"]), ("elements", stats["elements"]), ("pages", stats["pages"]),
                ("sections", stats["sections"]), ("characters", length["characters"]), ("words", length["words"]),
                ("elements per document (mean)", stats["elements_per_document"]["mean"])]
    lengths = [("min", length["min"]), ("mean", length["mean"]), ("max", length["max"]),
               *[(k, v) for k, v in length["quantiles"].items()], ("empty", length["empty"]), ("null", length["nulls"])]
    return render(
        __package__, "text_stats.html",
        title=stats["table"],
        elements=f"{stats['elements']:,}",
        overview=[(k, _num(v)) for k, v in overview],
        by_type=_bars([(t["element_type"], t["count"]) for t in stats["elements_by_type"]]),
        lengths=[(k, _num(v)) for k, v in lengths],
        length_histogram=_bars([(f"{b['lo']:,.0f} – {b['hi']:,.0f}", b["count"]) for b in length["histogram"]]),
        terms=[{"term": t["term"], "count": f"{t['count']:,}", "documents": f"{t['documents']:,}"}
               for t in stats["top_terms"]],
        documents=_bars([(d["document"], d["elements"]) for d in stats["elements_per_document"]["top"]]),
    )

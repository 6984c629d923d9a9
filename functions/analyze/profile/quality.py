"""Table-level quality: alerts on the column profiles, correlations, duplicate rows and the
size estimate."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from shared.storage import duck

from .sql import is_float_type, is_integer_type, share

NULL_ALERT_SHARE = 0.2
ZERO_ALERT_SHARE = 0.5
SKEW_ALERT = 2.0
HIGH_CARDINALITY_SHARE = 0.5
PII_ALERT_SHARE = 0.5
MAX_CORRELATION_COLUMNS = 20
PII_CONTENT_LABELS = {"card_number": "payment card numbers (Luhn)", "iban": "IBANs (mod 97)",
                      "national_id": "national ids", "email": "email addresses", "phone": "phone numbers"}
# Bytes per value, for the size estimate only.
TYPE_WIDTHS = {
    "BOOLEAN": 1, "TINYINT": 1, "UTINYINT": 1, "SMALLINT": 2, "USMALLINT": 2,
    "INTEGER": 4, "UINTEGER": 4, "FLOAT": 4, "REAL": 4, "DATE": 4,
    "BIGINT": 8, "UBIGINT": 8, "DOUBLE": 8, "TIMESTAMP": 8, "TIMESTAMP WITH TIME ZONE": 8,
    "TIMESTAMP_S": 8, "TIMESTAMP_MS": 8, "TIMESTAMP_NS": 8, "TIME": 8,
    "TIME WITH TIME ZONE": 8, "HUGEINT": 16, "UHUGEINT": 16, "UUID": 16, "INTERVAL": 16,
}
ROW_ALIAS = "udb_whole_row"

Alert = tuple[str, str, Any]  # (kind, message, value); the column is added by alerts()


# ---------------------------------------------------------------- alerts


def alerts(column_profiles: list[dict], rows: int) -> list[dict]:
    """[{column, kind, message, value}] for every check a column fails, column by column in
    CHECKS order. Kinds: many_nulls, constant, unique, high_cardinality, skewed, many_zeros, pii."""
    found = []
    for col in column_profiles:
        for check in CHECKS:
            for kind, message, value in check(col, rows):
                found.append({"column": col["name"], "kind": kind, "message": message, "value": value})
    return found


def _many_nulls(col: dict, rows: int) -> list[Alert]:
    null_share = col.get("null_share") or 0
    return [("many_nulls", f"{null_share:.1%} of values are null", null_share)] if null_share > NULL_ALERT_SHARE else []


def _constant(col: dict, rows: int) -> list[Alert]:
    if not (col["count"] and col["distinct"] == 1):
        return []
    value = col.get("min")
    if value is None and col.get("top_k"):
        value = col["top_k"][0]["value"]
    return [("constant", f"every non-null value is {value!r}", value)]


def _identifier_or_cardinality(col: dict, rows: int) -> list[Alert]:
    # Lists, structs, intervals etc. being all distinct says nothing about identifiers.
    id_like_kind = is_integer_type(col["type"]) or col["type"].upper() in ("VARCHAR", "UUID")
    if col["unique"] and id_like_kind:
        return [("unique", "every value is distinct: looks like an identifier", col["distinct"])]
    distinct = col["distinct"]
    if col["kind"] == "categorical" and rows and distinct and distinct > HIGH_CARDINALITY_SHARE * rows:
        return [("high_cardinality", f"{distinct:,} distinct values for {rows:,} rows", distinct)]
    return []


def _skewed(col: dict, rows: int) -> list[Alert]:
    skew = col.get("skewness")
    return [("skewed", f"skewness {skew:.2f}", skew)] if skew is not None and abs(skew) > SKEW_ALERT else []


def _many_zeros(col: dict, rows: int) -> list[Alert]:
    zero_share = col.get("zero_share") or 0
    return [("many_zeros", f"{zero_share:.1%} of values are zero", zero_share)] if zero_share > ZERO_ALERT_SHARE else []


def _personal_data(col: dict, rows: int) -> list[Alert]:
    """Email and phone shares from the full-table pattern counts; else the column's PII
    classification (by name or by a sample) when it has values."""
    patterns = col.get("patterns") or {}
    found: list[Alert] = []
    for pii in ("email", "phone"):
        pattern_share = share(patterns.get(pii), col["count"])
        if pattern_share and pattern_share > PII_ALERT_SHARE:
            label = "email addresses" if pii == "email" else "phone numbers"
            found.append(("pii", f"{pattern_share:.1%} of values look like {label}", pattern_share))
    info = col.get("pii") or {}
    if found or not info or not col["count"]:
        return found
    if info.get("found_by") == "name":
        return [("pii", f"the column name suggests personal data ({info['kind'].replace('_', ' ')})", info["kind"])]
    label = PII_CONTENT_LABELS.get(info["kind"], info["kind"].replace("_", " "))
    return [("pii", f"{info['share']:.1%} of sampled values look like {label}", info["share"])]


CHECKS: tuple[Callable[[dict, int], list[Alert]], ...] = (
    _many_nulls, _constant, _identifier_or_cardinality, _skewed, _many_zeros, _personal_data)


# ---------------------------------------------------------------- correlations


def correlation_columns(cols: list[dict], first: dict, rows: int) -> tuple[list[dict], int]:
    """The columns correlated (the first MAX_CORRELATION_COLUMNS numeric columns with a non-zero
    standard deviation, personal-data columns left out) and how many were eligible."""
    if not rows:
        return [], 0
    # A personal-data column takes no part in correlations (see masking.PII_WITHHELD).
    eligible = [col for col in cols if col["kind"] == "numeric" and (first.get(f"c{col['i']}_std") or 0) > 0
                and not col.get("pii")]
    return eligible[:MAX_CORRELATION_COLUMNS], len(eligible)


def correlation_aggregates(numeric_for_corr: list[dict]) -> list[tuple[str, str]]:
    aggs = []
    for a_index, a in enumerate(numeric_for_corr):
        for b in numeric_for_corr[a_index + 1:]:
            expr = f"corr({a['ident']}::DOUBLE, {b['ident']}::DOUBLE)"
            floats = [c["ident"] for c in (a, b) if is_float_type(c["type"])]
            if floats:
                expr += " FILTER (WHERE " + " AND ".join(f"isfinite({f})" for f in floats) + ")"
            aggs.append((f"corr_{a['i']}_{b['i']}", expr))
    return aggs


def correlations(cols: list[dict], second: dict, indexes: list[int], eligible: int) -> dict:
    names = [cols[i]["name"] for i in indexes]
    matrix: list[list[float | None]] = [[1.0 if a == b else None for b in indexes] for a in indexes]
    pairs = []
    for ai, a in enumerate(indexes):
        for bi in range(ai + 1, len(indexes)):
            b = indexes[bi]
            r = second.get(f"corr_{a}_{b}")
            r = r if r is None or math.isfinite(r) else None
            matrix[ai][bi] = matrix[bi][ai] = r
            if r is not None:
                pairs.append({"a": cols[a]["name"], "b": cols[b]["name"], "r": r})
    pairs.sort(key=lambda p: -abs(p["r"]))
    out = {"method": "pearson", "columns": names, "matrix": matrix, "pairs": pairs}
    if eligible > len(indexes):
        # Pairwise work grows with the square of the columns: say what was left out.
        out["note"] = (f"the first {len(indexes)} of {eligible:,} eligible numeric columns are correlated "
                       f"({len(indexes) * (len(indexes) - 1) // 2:,} pairs)")
    return out


# ---------------------------------------------------------------- rows and size


def duplicate_rows(con: duckdb.DuckDBPyConnection, source: str, rows: int, names: Sequence[str] = ()) -> int | None:
    """Rows that repeat an earlier row exactly (rows minus distinct rows).

    Counted as distinct whole rows (the table alias is the row as one STRUCT): the same count
    as SELECT DISTINCT *, nine times faster on 4,000 columns (0.5 s against 4.3 s, 20 rows)."""
    queries = [f"SELECT count(*) FROM (SELECT DISTINCT * FROM {source})"]
    if ROW_ALIAS not in names:  # a column of that name would shadow the row
        queries.insert(0, f"SELECT count(DISTINCT {ROW_ALIAS}) FROM {source} AS {ROW_ALIAS}")
    for sql in queries:
        try:
            return rows - duck.scalar(con, sql)
        except duckdb.InterruptException:
            raise
        except duckdb.Error:
            continue
    return None  # a column type that cannot be compared (rare)


def size_estimate(column_profiles: list[dict], rows: int) -> int:
    total = 0
    for col in column_profiles:
        duck_type = col["type"].upper()
        if "total_length" in col:
            # 16-byte string header per value plus the characters.
            total += 16 * rows + int(col.get("total_length") or 0)
        elif duck_type.startswith("DECIMAL"):
            total += 8 * rows
        else:
            total += TYPE_WIDTHS.get(duck_type, 16) * rows
    return total

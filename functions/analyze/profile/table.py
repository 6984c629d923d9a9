"""profile_table(): a whole table profiled in DuckDB SQL, in batches of columns.

Every statistic is computed over the whole table (never a sample) with a handful of
batched scans: one SELECT carries the per-column aggregates for all columns of a batch, a
second carries histograms and top-value maps (they need min/max from the first), then one
GROUP BY per high-cardinality text column for exact top values, one SELECT for the
correlations and one DISTINCT scan for duplicate rows.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import duckdb

from shared.analysis.evidentlyresult import json_safe  # one copy, shared with the reports function
from shared.security import pii as pii_policy
from shared.storage import duck

from .columns import EXACT_MAX_ROWS, column_profile, first_pass_aggregates, recheck_unique, second_pass_aggregates
from .masking import classify_pii, mask_shown_values, withhold_pii_statistics
from .quality import (alerts, correlation_aggregates, correlation_columns, correlations, duplicate_rows,
                      size_estimate)
from .sql import (column_kind, describe_columns, quote_ident, select_aggregates, share, table_label,
                  table_ref)

# Columns profiled per pair of scans. DuckDB's cost of one SELECT grows faster than its number
# of aggregates (measured on 1.5.5, 20 rows: 200 columns' first pass 2.9 s and 650 MB, 400
# columns over 1 GB; each count(DISTINCT) holds about 2 MB), so a 4,000-column table in one
# SELECT grew to 22.9 GB (issue 23). In batches memory stays flat and time linear.
BATCH_COLUMNS = 64
# DuckDB memory one column of a batch may take (its count(DISTINCT) alone holds about 2 MB):
# a smaller memory_limit gets smaller batches, not an out-of-memory error.
BATCH_COLUMN_MB = 4
# DuckDB parallelises a scan by row group (122,880 rows); below that a second thread only adds
# its own aggregate states to build and combine: one thread profiles a wide short table about
# a third faster (measured on 1.5.5, 512 columns x 20 rows).
ROW_GROUP_ROWS = 122_880

Step = Callable[[int, int, int], AbstractContextManager]


def batch_columns_for(memory_limit: str | None) -> int:
    """Columns per batch that a DuckDB memory_limit ("716MB", "1GB") affords, at most BATCH_COLUMNS."""
    from shared.serving.bounds import parse_size_mb
    mb = parse_size_mb(memory_limit) if memory_limit else None
    if mb is None:
        return BATCH_COLUMNS
    return max(4, min(BATCH_COLUMNS, mb // BATCH_COLUMN_MB))


def profile_table(
    con: duckdb.DuckDBPyConnection,
    table: str | Sequence[str],
    *,
    top_k: int = 10,
    bins: int = 20,
    exact_max_rows: int = EXACT_MAX_ROWS,
    mask_values: bool = True,
    batch_columns: int = BATCH_COLUMNS,
    step: Step | None = None,
    pii: pii_policy.Policy = pii_policy.DEFAULT_POLICY,
) -> dict:
    """Profile a whole DuckDB table (or view) in SQL and return a JSON-safe dict.

    Distinct counts are exact (count(DISTINCT)) and quantiles exact (quantile_cont) when
    the table has at most `exact_max_rows` rows; above that approx_count_distinct and
    approx_quantile are used, and columns that look unique get an exact recount. The
    method used is reported per column (`distinct_method`, `quantile_method`).
    With mask_values (default) the values shown (min, max, top_k) are PII-masked (shared.security.pii:
    wholly for a personal-data column, by name or content; else emails, IBANs, card numbers,
    national ids and phones inside text), and of a personal-data column the statistics
    masking.PII_WITHHELD names are withheld; counts and pattern statistics are unaffected. Such a
    column carries `pii: {kind, found_by, share, withheld}` and `masked: kind`. `pii`: the masking
    policy of the caller's settings (shared.security.pii.Policy.of), its national-id patterns among them.

    Returns {table, rows, columns, duplicate_rows, duplicate_share, size_bytes, size_note,
    values_masked, methods, column_profiles: [...], alerts: [{column, kind, message,
    value}], correlations: {method, columns, matrix, pairs}, elapsed_ms}. Alert kinds:
    many_nulls, constant, unique, high_cardinality, skewed, many_zeros, pii.

    Columns are profiled `batch_columns` at a time (two scans per batch); `step(first, end,
    total)`, when given, is a context manager entered around each batch (the analysis bound
    checks itself there and names the batch in a breach). Correlations are computed once over
    the first quality.MAX_CORRELATION_COLUMNS eligible columns of the table.
    """
    started = time.perf_counter()
    source = table_ref(table)
    cols = _column_specs(describe_columns(con, table))
    rows = duck.scalar(con, f"SELECT count(*) FROM {source}")
    exact = rows <= exact_max_rows

    with _single_thread_if_small(con, rows):
        column_profiles, corr = _profile_columns(con, source, cols, rows, exact, top_k, bins, batch_columns, step,
                                                 pii)
        duplicates = duplicate_rows(con, source, rows, [c["name"] for c in cols])

    for col, profiled in zip(cols, column_profiles, strict=True):
        if col.get("pii"):
            profiled["pii"] = dict(col["pii"])
    if mask_values:
        for col in column_profiles:
            mask_shown_values(col, pii)
            withhold_pii_statistics(col)
    profile = {
        "table": table_label(table),
        "rows": rows,
        "columns": len(cols),
        "duplicate_rows": duplicates,
        "duplicate_share": share(duplicates, rows),
        "size_bytes": size_estimate(column_profiles, rows),
        "size_note": "uncompressed in-memory estimate from column types and string lengths",
        "values_masked": mask_values,
        "methods": _methods(exact, exact_max_rows),
        "column_profiles": column_profiles,
        "alerts": alerts(column_profiles, rows),
        "correlations": corr,
    }
    profile["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return json_safe(profile)


def _column_specs(described: list[tuple[str, str]]) -> list[dict]:
    """What the scans need to know of each column: index, name, type, kind, quoted identifier
    and the expression its text statistics run on."""
    cols = []
    for index, (name, duck_type) in enumerate(described):
        ident = quote_ident(name)
        # Text stats for non-VARCHAR "other" types (LIST, STRUCT, BLOB, ...) and UUIDs
        # run on their VARCHAR rendering.
        is_varchar = duck_type.upper() == "VARCHAR"
        cols.append({
            "i": index, "name": name, "type": duck_type, "kind": column_kind(duck_type), "ident": ident,
            "string_expr": ident if is_varchar else f"CAST({ident} AS VARCHAR)", "is_varchar": is_varchar,
        })
    return cols


def _methods(exact: bool, exact_max_rows: int) -> dict:
    return {
        "distinct": "exact count(DISTINCT)" if exact
        else "approx_count_distinct (HyperLogLog), exact recount for near-unique columns",
        "quantiles": "quantile_cont (exact)" if exact else "approx_quantile (t-digest)",
        "exact_max_rows": exact_max_rows,
    }


@contextlib.contextmanager
def _single_thread_if_small(con: duckdb.DuckDBPyConnection, rows: int) -> Iterator[None]:
    if rows > ROW_GROUP_ROWS:
        yield
        return
    try:
        previous = duck.scalar(con, "SELECT current_setting('threads')")
        con.execute("SET threads = 1")
    except duckdb.Error:  # a connection whose configuration is locked: keep its threads
        yield
        return
    try:
        yield
    finally:
        con.execute(f"SET threads = {int(previous)}")


def _profile_columns(con: duckdb.DuckDBPyConnection, source: str, cols: list[dict], rows: int, exact: bool,
                     top_k: int, bins: int, batch_columns: int, step: Step | None,
                     policy: pii_policy.Policy) -> tuple[list[dict], dict]:
    """Column profiles batch by batch, then the correlations of the table."""
    column_profiles, first_all = [], {}
    step = step or (lambda first, end, total: contextlib.nullcontext())
    for begin in range(0, len(cols), max(1, batch_columns)):
        batch = cols[begin:begin + max(1, batch_columns)]
        with step(begin, begin + len(batch), len(cols)):
            first = select_aggregates(con, source, first_pass_aggregates(batch, exact))
            recheck_unique(con, source, batch, first, exact)
            classify_pii(con, source, batch, first, rows, policy)
            second = select_aggregates(con, source, second_pass_aggregates(batch, first, rows, bins))
            for col in batch:
                column_profiles.append(column_profile(con, source, col, first, second, rows, exact, top_k))
        first_all.update(first)
    corr_cols, eligible = correlation_columns(cols, first_all, rows)
    corr_values = select_aggregates(con, source, correlation_aggregates(corr_cols))
    return column_profiles, correlations(cols, corr_values, [c["i"] for c in corr_cols], eligible)

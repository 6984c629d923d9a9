"""Full-table profiling computed in DuckDB SQL, and its HTML page.

    sql.py       SQL names, literals, DuckDB types (shared with kpis, drift, textstats)
    columns.py   per-column statistics: the two batched scans and the column profile
    masking.py   personal-data columns (by name, pattern counts, a sample) and what is shown of them
    quality.py   alerts, correlations, duplicate rows, size estimate
    table.py     profile_table(): the orchestration, batch by batch
    page.py      render_profile_html() from templates/profile.html (Jinja2, autoescaped)
"""
from shared.analysis.evidentlyresult import json_safe

from .columns import EXACT_MAX_ROWS, PATTERNS, QUANTILES
from .masking import PII_WITHHELD
from .page import render_profile_html
from .quality import MAX_CORRELATION_COLUMNS, ROW_ALIAS
from .sql import (FLOAT_TYPES, INTEGER_TYPES, TEMPORAL_TYPES, column_kind, describe_columns, quote_ident,
                  sql_literal, table_label, table_parts, table_ref)
from .table import BATCH_COLUMNS, batch_columns_for, profile_table

__all__ = [
    "BATCH_COLUMNS", "EXACT_MAX_ROWS", "FLOAT_TYPES", "INTEGER_TYPES", "MAX_CORRELATION_COLUMNS", "PATTERNS",
    "PII_WITHHELD", "QUANTILES", "ROW_ALIAS", "TEMPORAL_TYPES", "batch_columns_for", "column_kind",
    "describe_columns", "json_safe", "profile_table", "quote_ident", "render_profile_html", "sql_literal",
    "table_label", "table_parts", "table_ref",
]

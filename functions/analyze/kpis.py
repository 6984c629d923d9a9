"""Default KPI definitions picked from a profile, their execution, and Plotly charts."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from shared.core.errors import InputError
from shared.security.pii import DEFAULT_POLICY, Policy, mask_rows

from .profile import FLOAT_TYPES, INTEGER_TYPES, json_safe, quote_ident, sql_literal, table_label, table_ref

MAX_CATEGORIES = 50
TOP_CATEGORIES = 10
# The null_rate KPI charts at most this many columns (those with the most nulls).
NULL_RATE_MAX_COLUMNS = 50
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
        title = f"Share of nulls per column in {label}"
        if len(with_nulls) > NULL_RATE_MAX_COLUMNS:
            # One aggregate per column in one SELECT: DuckDB's cost grows faster than the count
            # (profile.BATCH_COLUMNS), and a chart of thousands of bars says nothing.
            title += f" (the {NULL_RATE_MAX_COLUMNS} columns with most nulls of {len(with_nulls):,})"
            with_nulls = sorted(with_nulls, key=lambda c: (-c["nulls"], c["name"]))[:NULL_RATE_MAX_COLUMNS]
        rates = ", ".join(f"avg(({quote_ident(c['name'])} IS NULL)::DOUBLE) AS {quote_ident(c['name'])}" for c in with_nulls)
        kpis.append({
            "name": "null_rate",
            "title": title,
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


def open_kpi_connection(warehouse: str | Path, *, store=None, memory_limit: str = "1GB",
                        threads: int = 2) -> duckdb.DuckDBPyConnection:
    """A dedicated connection for KPI queries: the warehouse attached read-only into an empty
    in-memory database, external access disabled and the configuration locked.

    Nothing a query says can reach a file, a URL, an extension or a setting afterwards:
    `SET enable_external_access=false` stops file and network access (ATTACH included) and
    `SET lock_configuration=true` stops any SET from undoing it. A separate database
    instance, so the lock does not touch the connection the profiler uses.

    With `store` (a TenantStore), `warehouse` is the local copy of the tenant's lake catalog: the
    lake is attached read-only and its data files stay readable: locally through
    `allowed_directories`, which names the tenant's own prefix and nothing else (external access
    off for the rest); in S3 through the S3 file system alone (every other one disabled), with
    credentials for the tenant's prefix only.
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
        if store is None:
            con.execute(f"ATTACH {sql_literal(str(warehouse))} AS warehouse (READ_ONLY)")
            con.execute("USE warehouse")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        else:
            from shared.storage import duck, lake
            duck.load(con, "ducklake")
            if lake.is_s3(store):
                duck.load(con, "httpfs")
            lake.attach(con, store, Path(warehouse), read_only=True)
            lock_down(con, store)
    except Exception:
        con.close()
        raise
    return con


def lock_down(con: duckdb.DuckDBPyConnection, store) -> None:
    """Lock a connection on the tenant's lake (attached read-only) down for KPI SQL, as
    open_kpi_connection does: nothing a query says reaches a file, a URL, an extension or a
    setting afterwards. The analysis profiles a job's tables on its reader connection first,
    then locks that same connection down for the KPIs: one DuckDB instance per job, not two
    (each instance loads the ducklake and httpfs extensions, whose signature checks cost
    0.1-0.3 s each).

    The instance-wide settings are what isolate: `lock_configuration` stops every later SET,
    so the lock cannot be undone from SQL on any connection of the instance."""
    from shared.storage import lake
    # open_kpi_connection sets these at start-up; a reader connection gets them here.
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET python_enable_replacements = false")
    if lake.is_s3(store):
        # DuckDB refuses every remote file system once external access is off, whatever
        # allowed_directories says, so for a lake in S3 the other file systems are
        # switched off instead: no local files, no http(s); S3 only, its credentials
        # scoped to the tenant's prefix and any other s3:// path sent unsigned to the
        # store's own endpoint (shared/storage/s3store.py), the settings locked below.
        con.execute("SET disabled_filesystems = 'LocalFileSystem,HTTPFileSystem,HuggingFaceFileSystem'")
    else:
        con.execute(f"SET allowed_directories = [{sql_literal(lake.tenant_root(store) + '/')}]")
        con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def run_query(con: duckdb.DuckDBPyConnection, sql: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
              max_rows: int = DEFAULT_MAX_ROWS, max_cell_chars: int | None = None,
              stats: dict | None = None) -> tuple[list[str], list[tuple], bool, float]:
    """Run one query under a time limit and a row cap: (columns, rows, truncated, elapsed ms).

    A timer thread interrupts the connection when the limit passes (KpiError). At most
    max_rows rows are kept; `truncated` says more were there (one extra row is fetched to know).
    With `max_cell_chars`, rows are fetched one at a time and a longer text or binary cell is cut
    at once (cut_cell), so a query returning a few huge cells never holds more than one row of
    them; `stats["cells_cut"]` counts the cells cut.
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
    cut = 0
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description] if cursor.description else []
        if max_cell_chars is None:
            rows = cursor.fetchmany(max_rows + 1)
        else:
            rows = []
            while len(rows) <= max_rows:
                row = cursor.fetchone()
                if row is None:
                    break
                cells = []
                for value in row:
                    kept = cut_cell(value, max_cell_chars)
                    cut += kept is not value
                    cells.append(kept)
                rows.append(tuple(cells))
    except duckdb.Error as exc:
        if state["fired"] or isinstance(exc, duckdb.InterruptException):
            raise KpiError(f"the query ran past its time limit of {timeout_ms / 1000:g} s and was stopped") from None
        raise KpiError(f"the query failed in DuckDB: {_redact(str(exc).splitlines()[0])}") from None
    finally:
        with lock:
            state["running"] = False
        timer.cancel()
    elapsed_ms = (time.perf_counter() - started) * 1000
    truncated = len(rows) > max_rows
    if stats is not None:
        stats["cells_cut"] = cut
    return columns, rows[:max_rows], truncated, elapsed_ms


def _redact(message: str) -> str:
    """A DuckDB error without the values it quotes ("Could not convert string 'Ada Lovelace'
    to INT32"): the message goes into kpis-*.json and the summary, where a value would leave
    the warehouse unmasked."""
    return re.sub(r"'(?:[^']|'')*'", "'***'", message)


DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_CELL_CHARS = 10_000
CUT_MARK = "\u2026[cut]"


def cut_cell(value, max_chars: int):
    """A text cell longer than max_chars cut to its first max_chars characters plus CUT_MARK;
    bytes longer than max_chars bytes likewise (as hex, the way results show bytes). Lists and
    structs are left to the byte cap. Anything shorter is returned as it is (the same object)."""
    if isinstance(value, str) and len(value) > max_chars:
        return value[:max_chars] + CUT_MARK
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > max_chars:
        return bytes(value[:max_chars]).hex() + CUT_MARK
    return value


def _json_bytes(value) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def cap_bytes(rows: list[list], max_bytes: int, max_cell_chars: int) -> tuple[list[list], bool, int]:
    """Keep whole rows while the compact JSON of the kept rows stays within max_bytes.

    A list or struct cell whose JSON is longer than max_cell_chars is replaced by that JSON cut
    like a text cell. Returns (rows kept, whether rows were dropped, cells cut here)."""
    kept: list[list] = []
    total, cut = 2, 0  # "[" and "]"
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, (list, dict)):
                text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                if len(text) > max_cell_chars:
                    value, cut = cut_cell(text, max_cell_chars), cut + 1
            cells.append(value)
        size = _json_bytes(cells) + (1 if kept else 0)  # the comma between rows
        if total + size > max_bytes:
            return kept, True, cut
        kept.append(cells)
        total += size
    return kept, False, cut


def run_kpi(con: duckdb.DuckDBPyConnection, kpi: dict, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
            max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES,
            max_cell_chars: int = DEFAULT_MAX_CELL_CHARS, personal: "PersonalColumns | None" = None,
            policy: Policy = DEFAULT_POLICY) -> dict:
    """Run a KPI's SQL under a time limit, a row cap and a byte cap; return {name, title,
    table, chart, columns, rows, row_count, truncated, capped_by, cells_cut, pii_masked,
    pii_columns, max_rows, max_bytes, elapsed_ms} (JSON-safe).

    `rows` is a list of lists in `columns` order, PII-masked: by column name and content
    (shared.security.pii.mask_rows), and wholly in every column computed from a personal-data column of
    a table, whatever the SQL did to it (column lineage, shared.security.pii_lineage; `pii_columns`
    names them). `personal` knows the personal-data columns (the analysis passes the profiles'
    verdicts); without it they are worked out from this connection. Text cells longer than
    max_cell_chars are cut (`cells_cut`), and rows are kept while their JSON stays within
    max_bytes: `truncated` says rows were left out, `capped_by` by which cap ("rows" or
    "bytes"). `table` and `chart` are copied from the KPI. `policy`: the PII policy of the
    caller's settings (pii.Policy.of). Raises KpiError when the query fails or runs past
    `timeout_ms`.
    """
    stats: dict = {}
    columns, rows, truncated, elapsed_ms = run_query(con, kpi["sql"], timeout_ms=timeout_ms, max_rows=max_rows,
                                                     max_cell_chars=max_cell_chars, stats=stats)
    capped_by = "rows" if truncated else None
    if personal is None:
        personal = PersonalColumns(con, policy=policy)
    derived = personal.outputs(kpi["sql"], columns)
    # Results leave the warehouse (JSON, charts, the summary): PII masked as everywhere else.
    masked_rows, masked = mask_rows(columns, json_safe([list(r) for r in rows]), personal=derived, policy=policy)
    kept, dropped, cut = cap_bytes(masked_rows, max_bytes, max_cell_chars)
    if dropped:
        truncated, capped_by = True, "bytes"
    return {
        "name": kpi["name"],
        "title": kpi.get("title") or kpi["name"],
        "table": kpi.get("table"),
        "chart": kpi.get("chart"),
        "columns": columns,
        "rows": kept,
        "row_count": len(kept),
        "truncated": truncated,
        "capped_by": capped_by,
        "cells_cut": stats.get("cells_cut", 0) + cut,
        "pii_masked": masked,
        "pii_columns": [c for c in columns if c in derived],
        "max_rows": max_rows,
        "max_bytes": max_bytes,
        "elapsed_ms": round(elapsed_ms, 2),
    }


USER_COLUMNS_SQL = ("SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main' "
                    "AND database_name = current_database() ORDER BY table_name, column_index")


class PersonalColumns:
    """The personal-data columns of a tenant's tables, for KPI column lineage.

    `known` gives them for the tables profiled in this job ({table: columns whose profile says
    `pii`}: the same verdict the profile shows). Any other table a query reads is classified
    here, once, the way the profile does it: by name, then by content over a reproducible
    sample of shared.security.pii.CONTENT_SAMPLE rows.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, known: dict[str, Any] | None = None,
                 policy: Policy = DEFAULT_POLICY):
        self.con = con
        self.policy = policy
        self._known = {t.lower(): set(cols) for t, cols in (known or {}).items()}
        self._schema: dict[str, list[str]] | None = None

    def learn(self, profile: dict) -> None:
        """Take a profile_table() result's PII verdicts for its table."""
        self._known[str(profile["table"]).lower()] = {
            c["name"] for c in profile.get("column_profiles", []) if c.get("pii")}

    def schema(self) -> dict[str, list[str]]:
        if self._schema is None:
            schema: dict[str, list[str]] = {}
            for table, column in self.con.execute(USER_COLUMNS_SQL).fetchall():
                schema.setdefault(table, []).append(column)
            self._schema = schema
        return self._schema

    def of(self, table: str) -> set[str]:
        key = table.lower()
        if key not in self._known:
            self._known[key] = self._classify(table)
        return self._known[key]

    def _classify(self, table: str) -> set[str]:
        from shared.security.pii import CONTENT_SAMPLE, content_kinds, pii_columns

        names = next((cols for t, cols in self.schema().items() if t.lower() == table.lower()), [])
        found = set(pii_columns(names))
        rest = [c for c in names if c not in found]
        if rest:
            select = ", ".join(quote_ident(c) for c in rest)
            sample = self.con.execute(
                f"SELECT {select} FROM main.{quote_ident(table)} "
                f"USING SAMPLE reservoir({CONTENT_SAMPLE} ROWS) REPEATABLE (42)").fetchall()
            values = {c: [row[i] for row in sample if row[i] is not None] for i, c in enumerate(rest)}
            found |= set(content_kinds(values, self.policy))
        return found

    def outputs(self, sql: str, columns: list[str]) -> set[str]:
        """The result columns of `sql` computed from a personal-data column (shared.security.pii_lineage)."""
        from shared.security.pii_lineage import personal_outputs, tables_read

        schema = self.schema()
        by_lower = {t.lower(): t for t in schema}
        named = tables_read(sql)
        # SQL sqlglot cannot parse (the guard would have refused it; UDB's own SQL parses) may
        # read any table: all of them count.
        read = list(schema) if named is None else [by_lower[t] for t in named if t in by_lower]
        personal = {t: self.of(t) for t in read}
        if not any(personal.values()):
            return set()
        return personal_outputs(sql, columns, {t: dict.fromkeys(cols, "VARCHAR") for t, cols in schema.items()},
                                personal)


# Charts are drawn by shared/analysis/charts.py (analyze writes them as HTML, reports renders the PNGs).
from shared.analysis.charts import CHART_TYPES, PLOTLY_JS, chart_html, plotly_js, plotly_js_bytes  # noqa: E402,F401

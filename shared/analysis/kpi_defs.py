"""KPI definitions a tenant stores: {name, sql, chart spec}, one JSON object each under
`tenants/<t>/kpis/<name>.json`.

Each definition's SQL goes through the SQL guard (shared/security/sqlguard.py) against the tenant's
warehouse tables when it is stored, and again when the analysis runs it (the tables may
have changed since).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
import threading
from pathlib import Path

from shared.core.errors import InputError, NotFound, ValidationError
from shared.storage.store import TenantStore

from shared.analysis.charts import CHART_TYPES

PREFIX = "kpis/"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
FIELDS = {"name", "title", "description", "sql", "chart"}
CHART_FIELDS = {"type", "x", "y"}
MAX_TITLE = 200
MAX_DESCRIPTION = 2000
MAX_Y_COLUMNS = 10
USER_TABLES_SQL = ("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                   "AND database_name = current_database() ORDER BY table_name")


def validate_name(name: str) -> str:
    """A KPI name: a lowercase letter, then up to 47 of a-z, 0-9, '_'."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InputError(f"invalid KPI name {name!r}: expected a lowercase letter then up to 47 of a-z, 0-9, '_'")
    return name


def validate_definition(name: str, body, tables: list[str]) -> dict:
    """Check a KPI definition and return it normalised; raise ValidationError naming every problem.

    body: {sql, chart: {type, x, y}, title?, description?, name?}. type is one of
    CHART_TYPES; y is a result column or a list of them; x is required except for
    indicator charts. The SQL must pass the guard over `tables`.
    """
    validate_name(name)
    if not isinstance(body, dict):
        raise ValidationError("invalid KPI definition", {"body": f"expected a JSON object, found {type(body).__name__}"})
    problems: dict[str, str] = {}
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        problems["body"] = f"unknown fields {unknown}; allowed: {sorted(FIELDS)}"
    if "name" in body and body["name"] != name:
        problems["name"] = f"the body names {body['name']!r} but the path names {name!r}"
    title = body.get("title", name)
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
        problems["title"] = f"expected a non-empty string of at most {MAX_TITLE} characters"
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problems["description"] = f"expected a string of at most {MAX_DESCRIPTION} characters"
    checked = None
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        problems["sql"] = "expected the KPI's SELECT as a non-empty string"
    else:
        from shared.security import sqlguard  # sqlglot (0.15 s) only where a definition is checked

        try:
            checked = sqlguard.check_select(sql, tables)
        except sqlguard.SQLRejected as exc:
            problems["sql"] = "; ".join(exc.problems)
    chart = body.get("chart")
    chart_problem = _chart_problem(chart)
    if chart_problem:
        problems["chart"] = chart_problem
    if problems:
        raise ValidationError(f"invalid KPI definition {name!r}", problems)
    assert checked is not None and isinstance(chart, dict)  # no problems: both passed their checks
    return {
        "name": name,
        "title": title.strip(),
        "description": description,
        "sql": sql,
        "chart": {k: chart[k] for k in ("type", "x", "y") if chart.get(k) is not None},
        "tables": checked.tables,
    }


def _chart_problem(chart) -> str | None:
    if not isinstance(chart, dict):
        return "expected an object {type, x, y}"
    unknown = sorted(set(chart) - CHART_FIELDS)
    if unknown:
        return f"unknown chart fields {unknown}; allowed: {sorted(CHART_FIELDS)}"
    if chart.get("type") not in CHART_TYPES:
        return f"type must be one of {', '.join(CHART_TYPES)}; found {chart.get('type')!r}"
    y = chart.get("y")
    ys = y if isinstance(y, list) else [y]
    if not ys or len(ys) > MAX_Y_COLUMNS or not all(isinstance(v, str) and v for v in ys):
        return f"y must name a result column, or a list of 1 to {MAX_Y_COLUMNS} of them"
    x = chart.get("x")
    if chart["type"] != "indicator" and not (isinstance(x, str) and x):
        return f"x must name a result column for a {chart['type']} chart"
    if x is not None and not isinstance(x, str):
        return "x must be a column name"
    return None


def check_result_columns(definition: dict, columns: list[str]) -> str | None:
    """Why a result cannot be charted as the definition says (a missing column), or None."""
    chart = definition.get("chart") or {}
    wanted = [chart.get("x")] + (chart["y"] if isinstance(chart.get("y"), list) else [chart.get("y")])
    missing = [c for c in wanted if c and c not in columns]
    if missing:
        return f"the chart names columns the query does not return: {missing}; it returns {columns}"
    return None


class TooManyKpis(InputError):
    """A new definition past the tenant's cap (UDB_KPI_MAX_DEFINITIONS); the API answers 409."""

    def __init__(self, tenant: str, count: int, limit: int):
        super().__init__(f"tenant {tenant} already has {count} KPI definitions, the most allowed "
                         f"(UDB_KPI_MAX_DEFINITIONS={limit}): delete one before adding another")
        self.count, self.limit = count, limit


class KpiDefinitions:
    """The KPI definitions of one tenant, in its store; at most `max_definitions` of them
    (replacing one is always allowed)."""

    def __init__(self, store: TenantStore, max_definitions: int | None = None):
        self.store = store
        self.max_definitions = max_definitions

    def _key(self, name: str) -> str:
        return f"{PREFIX}{validate_name(name)}.json"

    def put(self, name: str, body, tables: list[str]) -> tuple[dict, bool]:
        """Validate and store a definition; returns (stored document, created)."""
        definition = validate_definition(name, body, tables)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        previous = self._get_or_none(name)
        if previous is None and self.max_definitions is not None:
            # Counted before the write: two racing PUTs may each see room for one more, so the
            # cap can be passed by the number of concurrent writers, never more.
            count = len(self.names())
            if count >= self.max_definitions:
                raise TooManyKpis(self.store.tenant, count, self.max_definitions)
        definition["created_at"] = previous["created_at"] if previous else now
        definition["updated_at"] = now
        self.store.put(self._key(name), json.dumps(definition, indent=2).encode(), content_type="application/json")
        return definition, previous is None

    def _get_or_none(self, name: str) -> dict | None:
        try:
            return json.loads(self.store.get(self._key(name)).data)
        except NotFound:
            return None

    def get(self, name: str) -> dict:
        definition = self._get_or_none(name)
        if definition is None:
            raise NotFound(f"no KPI named {name!r}")
        return definition

    def names(self) -> list[str]:
        """The names of the stored definitions, from the listing alone."""
        return sorted(info.key[len(PREFIX):-len(".json")] for info in self.store.list(PREFIX)
                      if info.key.endswith(".json") and "/" not in info.key[len(PREFIX):])

    def list(self) -> list[dict]:
        """Every stored definition, by name."""
        out = []
        for info in self.store.list(PREFIX):
            if info.key.endswith(".json") and "/" not in info.key[len(PREFIX):]:
                try:
                    out.append(json.loads(self.store.get(info.key).data))
                except (NotFound, ValueError):
                    continue  # deleted meanwhile, or not ours
        return sorted(out, key=lambda d: d.get("name", ""))

    def delete(self, name: str) -> None:
        if self._get_or_none(name) is None:
            raise NotFound(f"no KPI named {name!r}")
        self.store.delete(self._key(name))


_tables_cache: dict[tuple[str, str], list[str]] = {}
_tables_lock = threading.Lock()


def warehouse_tables(store: TenantStore) -> list[str]:
    """The tenant's warehouse tables (schema main), read from the lake's catalog (a copy of the
    catalog file only).

    Cached per catalog ETag, so storing several KPIs reads the catalog once. Raises
    InputError when the tenant has no warehouse yet.
    """
    from shared.storage import lake
    info = store.head(lake.CATALOG)
    if info is None:
        raise InputError(f"tenant {store.tenant} has no warehouse yet: load a source before defining KPIs")
    cache_key = (store.tenant, info.etag)
    with _tables_lock:
        if cache_key in _tables_cache:
            return list(_tables_cache[cache_key])
    with tempfile.TemporaryDirectory(prefix="udb-kpi-tables-") as tmp:
        try:
            local, _ = lake.fetch_catalog(store, Path(tmp))
        except NotFound:
            raise InputError(f"tenant {store.tenant} has no warehouse yet: load a source before defining KPIs") from None
        con = lake.connect(store, local, read_only=True, threads=1)
        try:
            tables = lake.tables(con)
        finally:
            con.close()
    with _tables_lock:
        _tables_cache.clear()  # one entry per process is plenty: the newest warehouse
        _tables_cache[cache_key] = tables
    return list(tables)

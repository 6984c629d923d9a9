"""The tenant's warehouse, read-only, for list_tables, describe_table and run_kpi (they have no
HTTP API: in both modes they read the warehouse snapshot from the object store)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from shared.core.errors import InputError, NotFound
from shared.core.settings import Settings

DESCRIBE_SAMPLE_ROWS = 5


class Warehouse:
    """The tenant's lake, read in place: its catalog copied from the store for each read (the
    writer replaces the catalog whole, so a copy is always one consistent snapshot), the Parquet
    data files read from the store."""

    def __init__(self, settings: Settings, store):
        self.settings = settings
        self.store = store

    def _catalog(self, tenant: str, tmp: str):
        """(the tenant's store, the local copy of its lake catalog)."""
        from shared.storage import lake
        from shared.storage.store import TenantStore
        store = TenantStore(self.store, tenant)
        try:
            local, _ = lake.fetch_catalog(store, Path(tmp))
        except NotFound:
            raise NotFound(f"tenant {tenant} has no warehouse yet: discover and sync a source first") from None
        return store, local

    def _open(self, tenant: str, tmp: str):
        from shared.storage import lake
        return lake.connect(*self._catalog(tenant, tmp), read_only=True, memory_limit=self.settings.duckdb_memory_limit,
                            threads=self.settings.duckdb_threads)

    def tables(self, tenant: str) -> list[dict]:
        from shared.storage import duck
        with tempfile.TemporaryDirectory(prefix="udb-mcp-") as tmp:
            con = self._open(tenant, tmp)
            try:
                out = []
                for (name,) in con.execute(_USER_TABLES).fetchall():
                    rows = con.execute(f"SELECT count(*) FROM main.{duck.quote(name)}").fetchone()[0]
                    columns = con.execute("SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'main' "
                                          "AND database_name = current_database() AND table_name = ?", [name]).fetchone()[0]
                    out.append({"name": name, "rows": rows, "columns": columns})
                return out
            finally:
                con.close()

    def describe(self, tenant: str, table: str) -> dict:
        from functions.analyze.profile import json_safe
        from shared.storage import duck
        from shared.security import pii
        with tempfile.TemporaryDirectory(prefix="udb-mcp-") as tmp:
            con = self._open(tenant, tmp)
            try:
                names = [r[0] for r in con.execute(_USER_TABLES).fetchall()]
                match = next((n for n in names if n.lower() == str(table).lower()), None)
                if match is None:
                    raise NotFound(f"no table {table!r} in the warehouse of tenant {tenant}; "
                                   f"it has: {', '.join(names) or 'none yet'}")
                columns = [{"name": n, "type": t, "nullable": nullable} for n, t, nullable in con.execute(
                    "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE schema_name = 'main' "
                    "AND database_name = current_database() AND table_name = ? ORDER BY column_index", [match]).fetchall()]
                rows = con.execute(f"SELECT count(*) FROM main.{duck.quote(match)}").fetchone()[0]
                cursor = con.execute(f"SELECT * FROM main.{duck.quote(match)} LIMIT {DESCRIBE_SAMPLE_ROWS}")
                header = [d[0] for d in cursor.description]
                # Sample rows leave the warehouse: PII masked, as in every artifact.
                sample, masked = pii.mask_rows(header, json_safe([list(r) for r in cursor.fetchall()]),
                                               policy=pii.Policy.of(self.settings))
                return {"name": match, "rows": rows, "columns": columns, "sample": sample, "pii_masked": masked}
            finally:
                con.close()

    def run_kpi(self, tenant: str, sql: str, max_rows: int) -> dict:
        from functions.analyze import kpis
        from shared.security import pii, sqlguard
        if not isinstance(max_rows, int) or max_rows < 1:
            raise InputError(f"max_rows must be a positive integer, found {max_rows!r}")
        with tempfile.TemporaryDirectory(prefix="udb-mcp-") as tmp:
            from shared.storage import lake
            tstore, local = self._catalog(tenant, tmp)
            con = lake.connect(tstore, local, read_only=True)
            try:
                tables = [r[0] for r in con.execute(_USER_TABLES).fetchall()]
            finally:
                con.close()
            checked = sqlguard.check_select(sql, tables)  # SQLRejected (an InputError) names every problem
            kpi_con = kpis.open_kpi_connection(local, store=tstore, memory_limit=self.settings.duckdb_memory_limit,
                                               threads=self.settings.duckdb_threads)
            try:
                result = kpis.run_kpi(kpi_con, {"name": "run_kpi", "sql": checked.sql},
                                      timeout_ms=self.settings.kpi_timeout_ms,
                                      max_rows=min(max_rows, self.settings.kpi_max_rows),
                                      max_bytes=self.settings.kpi_max_bytes,
                                      max_cell_chars=self.settings.kpi_max_cell_chars,
                                      policy=pii.Policy.of(self.settings))
            finally:
                kpi_con.close()
        return {"sql": checked.sql, "tables": checked.tables, "columns": result["columns"], "rows": result["rows"],
                "row_count": result["row_count"], "truncated": result["truncated"],
                "pii_masked": result["pii_masked"], "elapsed_ms": result["elapsed_ms"]}


_USER_TABLES = ("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                "AND database_name = current_database() ORDER BY table_name")

"""writer: the only warehouse writer. Lease, download the lake's catalog, load staged batches
into the lake, upload the catalog if unchanged.

The warehouse is a DuckLake (shared/storage/lake.py): a small catalog file and Parquet data files under
the tenant's `lake/`. A load copies the staged parts into `lake/` (server-side) and registers
them as data files when their schema is the table's (`ducklake_add_data_files`), else inserts
from them; either way it moves the catalog, never the warehouse. A crash at any point leaves
the previous catalog in the store: the new one is only uploaded whole, with If-Match on the
ETag the load started from; data files of a load that never uploaded are orphans, swept by
prune.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import duckdb
from cloudevents.http import CloudEvent

from shared.storage import duck, lake, lease
from shared.core import events
from shared.observability import metrics, telemetry
from shared.core.errors import NotFound, PreconditionFailed, SourceError, TransientError
from shared.serving.runtime import Context

FUNCTION = "writer"
WAREHOUSE = lake.LEGACY  # the whole-file warehouse of before the lake, migrated on the next load


def prepare(ctx: Context) -> None:
    """At the served function's start: each load's DuckDB instance is opened, its extensions
    loaded, ahead of the load that takes it (duck.Spares)."""
    lake.keep_spares(ctx.settings)


def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    data = events.event_data(event)
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    store = ctx.tenant_store(tenant)
    jobs = ctx.jobs(tenant)
    jobs.ensure(job_id, traceparent=attrs.get("traceparent"))
    jobs.move(job_id, "loading")

    with metrics.writer_queue_depth.labels("waiting_lease").track_inprogress(), telemetry.stage("lease"):
        waited = time.perf_counter()
        held = lease.acquire(ctx.store, tenant, seconds=ctx.settings.lease_seconds,
                             wait=ctx.settings.lease_wait_seconds)
        metrics.lease_wait_seconds.observe(time.perf_counter() - waited)
    ctx.fault("after_lease")
    started = time.perf_counter()
    loading = metrics.writer_queue_depth.labels("loading")
    loading.inc()
    # The lease is short (UDB_LEASE_SECONDS): renewed from a thread while the load runs, so
    # a crashed writer frees it within one period; a lost lease stops the load before upload.
    keeper = lease.Heartbeat(ctx.store, held, seconds=ctx.settings.lease_seconds, log=ctx.log)
    legacy = False
    try:
        with keeper, tempfile.TemporaryDirectory(prefix="udb-writer-") as tmp:
            local = Path(tmp) / lake.CATALOG
            base_etag: str | None
            new_etag: str | None
            try:
                base_etag = store.get_to_file(lake.CATALOG, local)
            except NotFound:
                base_etag = None
            con = lake.connect(store, local, memory_limit=ctx.settings.duckdb_memory_limit, threads=1)
            try:
                con.execute(lake.BATCHES_DDL)
                if base_etag is None and store.head(WAREHOUSE) is not None:
                    with telemetry.stage("migrate"):
                        legacy = migrate(con, store, Path(tmp), ctx)
                with telemetry.stage("load", tables=len(data["tables"])):
                    results = _load(con, data["tables"], store, ctx, keeper.check)
                lake.detach(con)  # the catalog file complete on disk before its upload
            finally:
                con.close()
            if legacy or any(r["applied"] for r in results):
                keeper.renew()  # a full period for the upload, or TransientError: no lease, no upload
                ctx.fault("before_upload")
                with telemetry.stage("upload", bytes=local.stat().st_size):
                    try:
                        if base_etag is None:
                            new_etag = store.put(lake.CATALOG, local, if_none_match=True)
                        else:
                            new_etag = store.put(lake.CATALOG, local, if_match=base_etag)
                    except PreconditionFailed:
                        raise TransientError("the warehouse changed during the load; retrying") from None
                ctx.fault("after_upload")
            else:
                new_etag = base_etag
        if legacy:
            # Its tables are in the uploaded lake now; the whole file is not needed any more.
            store.delete(WAREHOUSE)
            ctx.log.info("tenant %s: warehouse.duckdb migrated into the lake and removed", tenant)
    finally:
        loading.dec()
        lease.release(ctx.store, keeper.lease)
    _save_states(store, data, ctx)
    metrics.duckdb_write_seconds.labels(tenant).observe(time.perf_counter() - started)
    jobs.move(job_id, "loaded", tables={r["table"]: {"rows": r["rows"]} for r in results})
    autoanalyze = data.get("autoanalyze", True)
    reply = {"source_id": data["source_id"], "tables": results, "autoanalyze": autoanalyze}
    if new_etag:
        reply["warehouse_etag"] = new_etag
    return ctx.emit(events.WAREHOUSE_LOADED, reply, event, autoanalyze=autoanalyze)


def migrate(con: duckdb.DuckDBPyConnection, store, tmp: Path, ctx: Context) -> bool:
    """Copy a tenant's old whole-file warehouse into the (new, empty) lake, once
    (lake.import_warehouse). True when there was a warehouse to migrate."""
    local = tmp / WAREHOUSE
    try:
        store.get_to_file(WAREHOUSE, local)
    except NotFound:
        return False
    try:
        tables = lake.import_warehouse(con, local)
    finally:
        local.unlink(missing_ok=True)
    ctx.log.info("migrated %d tables of warehouse.duckdb into the lake", tables)
    return True


_version = lake.version


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]


def _load(con: duckdb.DuckDBPyConnection, tables: list[dict], store, ctx: Context, holding=lambda: None) -> list[dict]:
    """Apply each staged batch not yet in the catalogue, one lake transaction per batch (the data
    and its catalogue entry commit together); `holding()` raises once the lease is lost, checked
    before each table (a lost lease never reaches the upload either way)."""
    results = []
    for batch in tables:
        holding()
        table = batch["table"]
        q = duck.quote(table)
        # Literals, not `?` parameters: binding a Python value makes DuckDB import pandas (duck.literal).
        if con.execute(f"SELECT 1 FROM lake.udb_meta.batches WHERE batch_id = {duck.literal(batch['batch_id'])}").fetchone():
            rows = duck.scalar(con, f"SELECT count(*) FROM lake.main.{q}")
            results.append({"table": table, "rows": rows, "applied": False, "previous_rows": None})
            ctx.log.info("batch %s already applied; skipped", batch["batch_id"])
            continue
        # The staged parts become the lake's own files (a server-side copy under lake/): the
        # catalog never points into the staging area, which prune deletes after its retention.
        job = ctx_job(batch)
        files = []
        for i, key in enumerate(batch["parts"]):
            target = f"{lake.DATA}main/{table}/{job}-part-{i}.parquet"
            try:
                store.copy(key, target)
            except NotFound:
                raise SourceError(f"staged part {key} is missing") from None
            files.append(store.url(target))
        source = f"read_parquet({duck.literal(files)})"
        exists = duck.scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'main' "
                             f"AND table_name = {duck.literal(table)}")
        previous = previous_version = None
        if exists:
            previous = duck.scalar(con, f"SELECT count(*) FROM lake.main.{q}")
            # The table as it is now stays readable as this snapshot: the next analysis's drift
            # reference, by time travel.
            previous_version = _version(con)
        con.execute("BEGIN")
        try:
            if batch.get("mode") == "append" and exists:
                # Incremental: the batch holds only new records; columns are matched by name.
                try:
                    _append(con, q, table, files, source)
                except duckdb.Error as exc:
                    raise SourceError(f"{table}: cannot append the incremental batch: {exc}") from None
                added = duck.scalar(con, f"SELECT count(*) FROM lake.main.{q}") - previous
            elif batch.get("mode") == "merge" and exists:
                # Incremental by key: rows of the batch replace the stored rows with their key
                # (updates), the others are new; in one transaction with the catalogue entry.
                keys = ", ".join(duck.quote(k) for k in batch["primary_key"])
                try:
                    replaced = duck.scalar(con,
                        f"DELETE FROM lake.main.{q} WHERE ({keys}) IN (SELECT ({keys}) FROM {source})")
                    con.execute(f"INSERT INTO lake.main.{q} BY NAME SELECT * FROM {source}")
                except duckdb.Error as exc:
                    raise SourceError(f"{table}: cannot merge the incremental batch: {exc}") from None
                added = duck.scalar(con, f"SELECT count(*) FROM lake.main.{q}") - previous + replaced
                ctx.log.info("%s: merged %d rows (%d replaced)", table, batch["rows"], replaced)
            else:
                # Replace: a new table whose data files are the staged parts as they are.
                con.execute(f"CREATE OR REPLACE TABLE lake.main.{q} AS SELECT * FROM {source} LIMIT 0")
                _append(con, q, table, files, source)
                added = None
            ctx.fault("mid_load")
            rows = duck.scalar(con, f"SELECT count(*) FROM lake.main.{q}")
            if (added if added is not None else rows) != batch["rows"]:
                raise SourceError(f"{table}: staged {batch['rows']} rows but read {added or rows}")
            values = ", ".join(duck.literal(v) for v in (batch["batch_id"], job, table, rows,
                                                          batch["schema_hash"]))
            con.execute(f"INSERT INTO lake.udb_meta.batches VALUES ({values}, now(), {duck.literal(previous_version)})")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        results.append({"table": table, "rows": rows, "applied": True, "previous_rows": previous})
    return results


def _append(con: duckdb.DuckDBPyConnection, q: str, table: str, files: list[str], source: str) -> None:
    """Add the files' rows to the table: registered as data files as they are when each file's
    columns are the table's (names, types and order), else inserted by name (a rewrite)."""
    wanted = _columns(con, f"lake.main.{q}")
    if all(_columns(con, f"read_parquet({duck.literal(f)})") == wanted for f in files):
        for f in files:
            con.execute(f"CALL ducklake_add_data_files('lake', {duck.literal(table)}, {duck.literal(f)}, "
                        "schema => 'main')")
    else:
        con.execute(f"INSERT INTO lake.main.{q} BY NAME SELECT * FROM {source}")


def _save_states(store, data: dict, ctx: Context) -> None:
    """Incremental state the sync shipped with its batches, saved now that they are in the
    uploaded catalog (a redelivery saves the same values again)."""
    from types import SimpleNamespace

    from shared.storage import syncstate
    env = SimpleNamespace(store=store, source_id=data["source_id"])
    for batch in data["tables"]:
        if batch.get("state") is not None:
            syncstate.save_stream(env, batch["stream"], batch["state"])


def ctx_job(batch: dict) -> str:
    return batch["batch_id"].split("/", 1)[0]

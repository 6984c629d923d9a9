"""writer: the only DuckDB writer. Lease, download, load staged batches, upload if unchanged.

A crash at any point leaves the previous warehouse in the store: the new file is only
uploaded whole, with If-Match on the ETag the load started from.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import duckdb
from cloudevents.http import CloudEvent

from shared import duck, events, lease, metrics, telemetry
from shared.errors import NotFound, PreconditionFailed, SourceError, TransientError
from shared.runtime import Context

FUNCTION = "writer"
WAREHOUSE = "warehouse.duckdb"
CATALOGUE_DDL = """
CREATE SCHEMA IF NOT EXISTS udb_meta;
CREATE SCHEMA IF NOT EXISTS udb_snapshots;
CREATE TABLE IF NOT EXISTS udb_meta.batches (
    batch_id VARCHAR PRIMARY KEY, job_id VARCHAR NOT NULL, table_name VARCHAR NOT NULL,
    rows BIGINT NOT NULL, schema_hash VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL
);
"""


def handle(event: CloudEvent, ctx: Context) -> CloudEvent:
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
    try:
        with keeper, tempfile.TemporaryDirectory(prefix="udb-writer-") as tmp:
            local = Path(tmp) / WAREHOUSE
            try:
                base_etag = store.get_to_file(WAREHOUSE, local)
            except NotFound:
                base_etag = None
            with telemetry.stage("load", tables=len(data["tables"])):
                results = _load(local, data["tables"], store, Path(tmp), ctx, keeper.check)
            if any(r["applied"] for r in results):
                keeper.renew()  # a full period for the upload, or TransientError: no lease, no upload
                ctx.fault("before_upload")
                with telemetry.stage("upload", bytes=local.stat().st_size):
                    try:
                        if base_etag is None:
                            new_etag = store.put(WAREHOUSE, local, if_none_match=True)
                        else:
                            new_etag = store.put(WAREHOUSE, local, if_match=base_etag)
                    except PreconditionFailed:
                        raise TransientError("the warehouse changed during the load; retrying") from None
                ctx.fault("after_upload")
            else:
                new_etag = base_etag
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


def _load(path: Path, tables: list[dict], store, tmp: Path, ctx: Context, holding=lambda: None) -> list[dict]:
    """Apply each staged batch not yet in the catalogue; `holding()` raises once the lease is
    lost, checked before each table (a lost lease never reaches the upload either way)."""
    # One thread, whatever UDB_DUCKDB_THREADS says: a load keeps the staged row order, and with
    # more threads DuckDB writes each thread's batches apart, then merges and rewrites them at
    # commit and checkpoint. On 1M rows x 10 columns two threads took 2.4x the CPU and the wall
    # time of one (docs/benchmarks.md). The writer's other statements are look-ups and counts.
    con = duck.connect(path, memory_limit=ctx.settings.duckdb_memory_limit, threads=1)
    results = []
    try:
        con.execute(CATALOGUE_DDL)
        for batch in tables:
            holding()
            table = batch["table"]
            q = duck.quote(table)
            # Literals, not `?` parameters: binding a Python value makes DuckDB import pandas (duck.literal).
            if con.execute(f"SELECT 1 FROM udb_meta.batches WHERE batch_id = {duck.literal(batch['batch_id'])}").fetchone():
                rows = con.execute(f"SELECT count(*) FROM main.{q}").fetchone()[0]
                results.append({"table": table, "rows": rows, "applied": False, "previous_rows": None})
                ctx.log.info("batch %s already applied; skipped", batch["batch_id"])
                continue
            files = []
            for i, key in enumerate(batch["parts"]):
                local = tmp / f"{table}-{i}.parquet"
                try:
                    store.get_to_file(key, local)
                except NotFound:
                    raise SourceError(f"staged part {key} is missing") from None
                files.append(str(local))
            exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
                                 f"AND table_name = {duck.literal(table)}").fetchone()[0]
            con.execute("BEGIN")
            previous = None
            if exists:
                previous = con.execute(f"SELECT count(*) FROM main.{q}").fetchone()[0]
                # The table as it was becomes the drift reference for the next analysis.
                con.execute(f"CREATE OR REPLACE TABLE udb_snapshots.{q} AS SELECT * FROM main.{q}")
            if batch.get("mode") == "append" and exists:
                # Incremental: the batch holds only new records; columns are matched by name.
                try:
                    con.execute(f"INSERT INTO main.{q} BY NAME SELECT * FROM read_parquet({duck.literal(files)})")
                except duckdb.Error as exc:
                    con.execute("ROLLBACK")
                    raise SourceError(f"{table}: cannot append the incremental batch: {exc}") from None
                added = con.execute(f"SELECT count(*) FROM main.{q}").fetchone()[0] - previous
            elif batch.get("mode") == "merge" and exists:
                # Incremental by key: rows of the batch replace the stored rows with their key
                # (updates), the others are new; in one transaction with the catalogue entry.
                keys = ", ".join(duck.quote(k) for k in batch["primary_key"])
                try:
                    replaced = con.execute(
                        f"DELETE FROM main.{q} WHERE ({keys}) IN (SELECT ({keys}) FROM read_parquet(?))",
                        [files]).fetchone()[0]
                    con.execute(f"INSERT INTO main.{q} BY NAME SELECT * FROM read_parquet(?)", [files])
                except duckdb.Error as exc:
                    con.execute("ROLLBACK")
                    raise SourceError(f"{table}: cannot merge the incremental batch: {exc}") from None
                added = con.execute(f"SELECT count(*) FROM main.{q}").fetchone()[0] - previous + replaced
                ctx.log.info("%s: merged %d rows (%d replaced)", table, batch["rows"], replaced)
            else:
                con.execute(f"CREATE OR REPLACE TABLE main.{q} AS SELECT * FROM read_parquet({duck.literal(files)})")
                added = None
            ctx.fault("mid_load")
            rows = con.execute(f"SELECT count(*) FROM main.{q}").fetchone()[0]
            if (added if added is not None else rows) != batch["rows"]:
                con.execute("ROLLBACK")
                raise SourceError(f"{table}: staged {batch['rows']} rows but read {added or rows}")
            values = ", ".join(duck.literal(v) for v in (batch["batch_id"], ctx_job(batch), table, rows,
                                                          batch["schema_hash"]))
            con.execute(f"INSERT INTO udb_meta.batches VALUES ({values}, now())")
            con.execute("COMMIT")
            results.append({"table": table, "rows": rows, "applied": True, "previous_rows": previous})
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return results


def _save_states(store, data: dict, ctx: Context) -> None:
    """Incremental state the sync shipped with its batches, saved now that they are in the
    uploaded warehouse (a redelivery saves the same values again)."""
    from types import SimpleNamespace

    from shared import syncstate
    env = SimpleNamespace(store=store, source_id=data["source_id"])
    for batch in data["tables"]:
        if batch.get("state") is not None:
            syncstate.save_stream(env, batch["stream"], batch["state"])


def ctx_job(batch: dict) -> str:
    return batch["batch_id"].split("/", 1)[0]

"""sync: pull a source's streams into staged Parquet parts. Never writes the warehouse."""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from cloudevents.http import CloudEvent

from shared.core import events
from shared.observability import metrics, telemetry
from shared.core.errors import NotFound, SourceError
from shared.serving.runtime import Context
from shared.sources import registry
from shared.sources import SourceEnv, extract_stream
from shared.core.tenancy import table_name

FUNCTION = "sync"


def prepare(ctx: Context) -> None:
    """At the served function's start: every connector imported (the registry's first lookup
    would otherwise import them during the first job)."""
    registry.load()


def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    data = events.event_data(event)
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    store = ctx.tenant_store(tenant)
    jobs = ctx.jobs(tenant)
    if attrs["type"] == events.SOURCE_DISCOVERED:
        source = data["source"]
    else:
        try:
            source = json.loads(store.get(f"sources/{data['source_id']}.json").data)
        except NotFound:
            raise SourceError(f"no source {data['source_id']!r} for tenant {tenant}: discover it first") from None
    jobs.ensure(job_id, hint=source["hint"], traceparent=attrs.get("traceparent"))
    jobs.move(job_id, "syncing", source_id=source["id"])

    wanted = set(data.get("streams") or [s["name"] for s in source["streams"]])
    unknown = wanted - {s["name"] for s in source["streams"]}
    if unknown:
        raise SourceError(f"unknown streams {sorted(unknown)}; the source has "
                          f"{[s['name'] for s in source['streams']]}")
    env = SourceEnv.of(ctx, tenant, source_id=source["id"])  # secrets, uploads, incremental state
    env.pending_state = {}  # the writer saves it once the batch is loaded (shared/storage/syncstate.py)
    staged = []
    for stream in (s for s in source["streams"] if s["name"] in wanted):
        table = table_name(source["short"], stream["name"])
        with tempfile.TemporaryDirectory(prefix="udb-sync-") as tmp:
            out = Path(tmp) / "parts"
            with telemetry.stage("extract", stream=stream["name"], provider=source["provider"]) as span:
                rows = extract_stream(source["provider"], stream, out, env=env,
                                      part_bytes=ctx.settings.staging_part_bytes,
                                      memory_limit=ctx.settings.duckdb_memory_limit,
                                      threads=ctx.settings.duckdb_threads)
                span.set_attribute("udb.rows", rows)
            if rows == 0 and (stream.get("options") or {}).get("incremental"):
                ctx.log.info("%s: no records newer than the last sync", stream["name"])
                continue
            if rows == 0:
                raise SourceError(f"{stream['name']}: the source has columns but no rows")
            parts, total = [], 0
            with telemetry.stage("stage", table=table) as span:
                for i, part in enumerate(sorted(out.glob("*.parquet"))):
                    key = f"staging/{job_id}/{table}/part-{i}.parquet"
                    store.put(key, part, content_type="application/vnd.apache.parquet")
                    parts.append(key)
                    total += part.stat().st_size
                span.set_attributes({"udb.parts": len(parts), "udb.bytes": total})
        metrics.rows_synced.labels(tenant).inc(rows)
        metrics.bytes_staged.labels(tenant).inc(total)
        columns = stream["columns"]
        schema_hash = hashlib.sha256(json.dumps(columns, sort_keys=True).encode()).hexdigest()[:16]
        # One batch per job and table: a redelivered sync restages the same batch id, and the
        # writer's catalogue loads it once.
        incremental = (stream.get("options") or {}).get("incremental")
        batch = {"table": table, "stream": stream["name"], "batch_id": f"{job_id}/{table}",
                 "parts": parts, "rows": rows, "bytes": total, "schema_hash": schema_hash,
                 "columns": columns, "mode": "append" if incremental else "replace"}
        if isinstance(incremental, dict) and incremental.get("primary_key"):
            # Merge: a staged row replaces the stored row with the same key (an update).
            batch.update(mode="merge", primary_key=list(incremental["primary_key"]))
        if stream["name"] in env.pending_state:
            batch["state"] = env.pending_state[stream["name"]]
        staged.append(batch)
        ctx.log.info("staged %s: %d rows in %d parts", table, rows, len(parts))
    if not staged:  # incremental sync with nothing new: the warehouse is already current
        jobs.move(job_id, "completed")
        return None
    jobs.move(job_id, "staged", tables={s["table"]: {"rows": s["rows"]} for s in staged})
    autoanalyze = data.get("autoanalyze", True)
    return ctx.emit(events.SYNC_STAGED, {"source_id": source["id"], "source_short": source["short"],
                                         "tables": staged, "autoanalyze": autoanalyze},
                    event, autoanalyze=autoanalyze)

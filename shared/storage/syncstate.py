"""Incremental state of a source: `tenants/<t>/state/<source_id>.json`, one entry per stream.

REST and PostgreSQL keep a cursor (`{cursor_field, last_value}`); S3 keeps the objects it
has read (`{objects: {key: etag}}`). Writes are compare-and-swap on the ETag, so two syncs
of one source never lose each other's streams.

In the pipeline the new state is not written at extract: the sync function collects it
(`env.pending_state`), ships it in the staged batch, and the writer saves it only once the
batch is in the uploaded warehouse. A sync redelivered before that, or a load that failed,
reads the same rows again (the batch id makes the load idempotent); nothing is skipped.
"""
from __future__ import annotations

import datetime as dt
import json

from shared.core.errors import NotFound, PreconditionFailed, SourceError


def key(source_id: str) -> str:
    return f"state/{source_id}.json"


def load_state(env) -> tuple[dict, str | None]:
    """(state, etag) of the env's source; ({}, None) when there is none or no store."""
    if env is None or env.store is None or not env.source_id:
        return {}, None
    try:
        blob = env.store.get(key(env.source_id))
    except NotFound:
        return {}, None
    return json.loads(blob.data), blob.etag


def stream_state(env, stream: str) -> dict:
    state, _ = load_state(env)
    return (state.get("streams", {}) or {}).get(stream) or {}


def save_stream(env, stream: str, value: dict) -> None:
    """Replace one stream's entry in the source's state (compare-and-swap, five tries); where
    the env collects pending state (the sync function), only note it there."""
    pending = getattr(env, "pending_state", None)
    if pending is not None:
        pending[stream] = value
        return
    if env is None or env.store is None or not env.source_id:
        return
    for _ in range(5):
        state, etag = load_state(env)
        state.setdefault("streams", {})[stream] = {**value,
                                                   "synced_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        state["source_id"] = env.source_id
        data = json.dumps(state, indent=2, default=str).encode()
        try:
            if etag is None:
                env.store.put(key(env.source_id), data, if_none_match=True, content_type="application/json")
            else:
                env.store.put(key(env.source_id), data, if_match=etag, content_type="application/json")
            return
        except PreconditionFailed:
            continue
    raise SourceError(f"state of source {env.source_id}: changed by others five times in a row")

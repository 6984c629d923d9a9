"""The job status document (`tenants/<t>/jobs/<job>.json`) and its state machine."""
from __future__ import annotations

import contextlib
import contextvars
import json
from datetime import datetime, timezone
from typing import Callable, Iterator

from shared.core.errors import InputError, NotFound, PreconditionFailed
from shared.storage.store import TenantStore
from shared.core.tenancy import validate_job_id

STATES = ("requested", "discovering", "discovered", "syncing", "staged", "loading", "loaded",
          "analyzing", "completed", "failed")
TERMINAL = ("completed", "failed")
# A stage runs from its "-ing" state to its done state; its duration is reported per stage.
STAGES = {"discover": ("discovering", "discovered"), "sync": ("syncing", "staged"),
          "load": ("loading", "loaded"), "analyze": ("analyzing", "completed")}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def can_move(current: str, new: str) -> bool:
    """Forward only (a job may start mid-pipeline, e.g. analyze.requested), `failed` from any
    live state, nothing out of a terminal state. Staying put is allowed (redelivery)."""
    if new not in STATES:
        return False
    if current == new:
        return True
    if current in TERMINAL:
        return False
    if new == "failed":
        return True
    return STATES.index(new) > STATES.index(current)


def new_job(job_id: str, tenant: str, *, hint: str | None = None, traceparent: str | None = None,
            **fields) -> dict:
    at = now_iso()
    return {"job_id": job_id, "tenant": tenant, "state": "requested", "hint": hint or "",
            "created_at": at, "updated_at": at, "history": [{"state": "requested", "at": at}],
            "stage_seconds": {}, "error": None, "source_id": None, "tables": {},
            "artifacts_index": None, "traceparent": traceparent, "version": 1, **fields}


def held_by_broker(doc: dict) -> bool:
    """False for a job a client door started (`accepted: false` until the broker takes its
    event) that got past discovery without the broker taking it: the send failed, or the
    process died before it. Such a job never reached the pipeline and counts against no cap."""
    return doc.get("accepted") is not False or doc.get("state") in ("requested", "discovering")


def apply_state(doc: dict, state: str, *, error: dict | None = None, **fields) -> dict:
    if not can_move(doc["state"], state):
        raise InputError(f"job {doc['job_id']}: cannot move from {doc['state']} to {state}")
    at = now_iso()
    if state != doc["state"]:
        doc["history"].append({"state": state, "at": at})
    doc["state"] = state
    doc["updated_at"] = at
    if error is not None:
        doc["error"] = error
    for key, value in fields.items():
        if key == "tables" and value:
            doc["tables"].update(value)
        elif value is not None:
            doc[key] = value
    doc["stage_seconds"] = stage_seconds(doc["history"])
    doc["version"] += 1
    return doc


def stage_seconds(history: list[dict]) -> dict:
    seen: dict[str, datetime] = {}
    for entry in history:
        seen.setdefault(entry["state"], datetime.fromisoformat(entry["at"]))
    out = {}
    for stage, (start, end) in STAGES.items():
        if start in seen and end in seen:
            out[stage] = round((seen[end] - seen[start]).total_seconds(), 3)
    return out


# The job documents the current handler invocation has read or written, as (body, ETag) by
# (tenant, job id): `remembered()` opens one such memory per invocation (shared/serving/runtime.py).
_known: contextvars.ContextVar[dict[tuple[str, str], tuple[bytes, str]] | None] = \
    contextvars.ContextVar("udb_job_documents", default=None)
ABSENT = (b"", "")  # remembered: the invocation found no such job


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """Within this block, Jobs starts a change from the version of the document it last read or
    wrote itself instead of reading it again: a function's handler reads its job once (the
    redelivery check) and then only writes it (its -ing and done states), three requests where
    it made six. Safe because every write is conditional: a version someone else changed since
    fails its If-Match, and the change is retried on a fresh read, as before. The memory lasts
    one invocation, so a later one never starts from it."""
    token = _known.set({})
    try:
        yield
    finally:
        _known.reset(token)


class Jobs:
    """Reads and moves job documents with optimistic concurrency (put-if-match), and tells
    `on_change` (the job-events publisher) about every state change."""

    def __init__(self, store: TenantStore, on_change: Callable[[dict], None] | None = None):
        self.store = store
        self.on_change = on_change or (lambda doc: None)

    def _key(self, job_id: str) -> str:
        return f"jobs/{validate_job_id(job_id)}.json"

    def _remember(self, job_id: str, data: bytes, etag: str) -> None:
        known = _known.get()
        if known is not None:
            known[(self.store.tenant, job_id)] = (data, etag)

    def _forget(self, job_id: str) -> None:
        known = _known.get()
        if known is not None:
            known.pop((self.store.tenant, job_id), None)

    def _fetch(self, job_id: str) -> tuple[dict, str]:
        """The stored document and its ETag, read now."""
        try:
            blob = self.store.get(self._key(job_id))
        except NotFound:
            known = _known.get()
            if known is not None:
                known[(self.store.tenant, job_id)] = ABSENT
            raise NotFound(f"no job {job_id} for tenant {self.store.tenant}") from None
        self._remember(job_id, blob.data, blob.etag)
        return json.loads(blob.data), blob.etag

    def _latest(self, job_id: str) -> tuple[dict, str]:
        """The version this invocation last read or wrote (remembered()), else the stored one."""
        known = _known.get()
        seen = known.get((self.store.tenant, job_id)) if known is not None else None
        if seen is not None and seen is not ABSENT:
            return json.loads(seen[0]), seen[1]
        return self._fetch(job_id)  # absence is never trusted here: the job may exist by now

    def _write(self, job_id: str, doc: dict, **condition) -> None:
        data = _dump(doc)
        try:
            etag = self.store.put(self._key(job_id), data, content_type="application/json", **condition)
        except PreconditionFailed:
            self._forget(job_id)
            raise
        self._remember(job_id, data, etag)

    def get(self, job_id: str) -> dict:
        """The stored document, read now."""
        return self._fetch(job_id)[0]

    def create(self, job_id: str, *, hint: str | None = None, traceparent: str | None = None, **fields) -> dict:
        doc = new_job(job_id, self.store.tenant, hint=hint, traceparent=traceparent, **fields)
        try:
            self._write(job_id, doc, if_none_match=True)
        except PreconditionFailed:
            return self.get(job_id)  # redelivered request: the job already exists
        self.on_change(doc)
        return doc

    def ensure(self, job_id: str, **kw) -> dict:
        known = _known.get()
        if known is not None and known.get((self.store.tenant, job_id)) is ABSENT:
            # This invocation found no job a moment ago: create it (put-if-absent, so a job
            # made meanwhile is read instead, as for any redelivered request).
            return self.create(job_id, **kw)
        try:
            return self._latest(job_id)[0]
        except NotFound:
            return self.create(job_id, **kw)

    def move(self, job_id: str, state: str, **kw) -> dict:
        """Move to `state`; quietly keeps a job already past it (a late redelivery)."""
        for _ in range(20):
            # A remembered version can only be behind the stored one (states move forward, a
            # finished job stays finished): what it says needs no write, the stored one does
            # not need either; a write it allows fails its If-Match when it is stale.
            doc, etag = self._latest(job_id)
            if doc["state"] == state and not kw:
                return doc
            if doc["state"] in TERMINAL or not can_move(doc["state"], state):
                return doc  # a finished job keeps its outcome; a late redelivery changes nothing
            apply_state(doc, state, **kw)
            try:
                self._write(job_id, doc, if_match=etag)
            except PreconditionFailed:
                continue  # someone else moved it: read again and retry
            self.on_change(doc)
            return doc
        raise PreconditionFailed(f"job {job_id}: too many concurrent updates")

    def annotate(self, job_id: str, *, live_only: bool = False, **fields) -> dict:
        """Set fields of the document without moving its state. `live_only` leaves a finished job
        as it is (e.g. `redrive`: waiting for a function to come back)."""
        for _ in range(20):
            # Read now, never remembered: a field already set, or a finished job, ends the call
            # without a write, which a stale version could decide wrongly.
            doc, etag = self._fetch(job_id)
            if (live_only and doc["state"] in TERMINAL) or all(doc.get(k) == v for k, v in fields.items()):
                return doc
            doc.update(fields)
            doc["updated_at"] = now_iso()
            doc["version"] += 1
            try:
                self._write(job_id, doc, if_match=etag)
            except PreconditionFailed:
                continue
            return doc
        raise PreconditionFailed(f"job {job_id}: too many concurrent updates")

    def set_reports(self, job_id: str, reports: dict) -> dict:
        """Record the state of the job's reports (functions/reports) without moving the job:
        a completed job stays completed whatever its reports do. Not a state change, so not
        published to udb.job-events (the reports function's `dev.udb.reports.rendered` is)."""
        return self.annotate(job_id, reports=reports)

    def fail(self, job_id: str, *, stage: str, function: str, reason: str, **cause) -> dict:
        """Fail the job; `cause` (error_type, step, raised_at) is kept beside the reason."""
        self.ensure(job_id)
        error = {"stage": stage, "function": function, "reason": reason,
                 **{k: v for k, v in cause.items() if v is not None}}
        return self.move(job_id, "failed", error=error)


def _dump(doc: dict) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()

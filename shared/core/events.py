"""The UDB event model: building, checking and reading CloudEvents.

Transport-free: HTTP and Kafka bindings live in `shared.core.bindings`. Every event carries the
extensions `tenant`, `jobid`, `traceparent` and `partitionkey` (= tenant); the data of each
type is checked against `shared/core/schemas/<type>.json` on send and on receive.
"""
from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import opentelemetry.trace as trace
from cloudevents.http import CloudEvent
from opentelemetry.trace import SpanContext

from shared.core.errors import ValidationError
from shared.core.tenancy import JOB_RE, TENANT_RE

SCHEMA_DIR = Path(__file__).parent / "schemas"
TRACEPARENT_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

DISCOVER_REQUESTED = "dev.udb.discover.requested"
SOURCE_DISCOVERED = "dev.udb.source.discovered"
SYNC_REQUESTED = "dev.udb.sync.requested"
SYNC_STAGED = "dev.udb.sync.staged"
WAREHOUSE_LOADED = "dev.udb.warehouse.loaded"
ANALYZE_REQUESTED = "dev.udb.analyze.requested"
ANALYSIS_COMPLETED = "dev.udb.analysis.completed"
REPORTS_RENDERED = "dev.udb.reports.rendered"
JOB_FAILED = "dev.udb.job.failed"
EVENT_TYPES = (DISCOVER_REQUESTED, SOURCE_DISCOVERED, SYNC_REQUESTED, SYNC_STAGED,
               WAREHOUSE_LOADED, ANALYZE_REQUESTED, ANALYSIS_COMPLETED, REPORTS_RENDERED, JOB_FAILED)
# Events about a job that is already completed: their handlers (reports, and the dead letters of
# their deliveries) work on a finished job, and a failure there never fails the job.
AFTER_COMPLETION = (ANALYSIS_COMPLETED, REPORTS_RENDERED)

# The pipeline stage an event starts (a failure while handling it is a failure of that stage).
STAGE_OF = {DISCOVER_REQUESTED: "discover", SOURCE_DISCOVERED: "sync", SYNC_REQUESTED: "sync",
            SYNC_STAGED: "load", WAREHOUSE_LOADED: "analyze", ANALYZE_REQUESTED: "analyze"}

# Routing flags travel as extensions so that Trigger filters (which see attributes, not
# data) can decide "when autosync" / "when autoanalyze" without a route written in Python.
ROUTING_FLAGS = ("autosync", "autoanalyze")


@lru_cache(maxsize=None)
def _validator(event_type: str):
    import jsonschema  # only where events are checked

    schema = json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def schema_problems(event_type: str, data) -> dict[str, str]:
    if event_type not in EVENT_TYPES:
        return {"type": f"unknown event type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}"}
    problems: dict[str, str] = {}
    for err in _validator(event_type).iter_errors(data):
        where = "data" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        problems[where] = f"{problems[where]}; {err.message}" if where in problems else err.message
    return problems


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    if traceparent and TRACEPARENT_RE.fullmatch(traceparent):
        return traceparent.split("-")[1]
    return None


def child_traceparent(traceparent: str | None) -> str:
    """Same trace, new span id: each hop is a child of the event it answers."""
    return new_traceparent(trace_id_of(traceparent))


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The W3C traceparent of the current OpenTelemetry span; None outside any span. Read here
    through the OpenTelemetry API (not shared.observability, which sits above the event model)."""
    context = trace.get_current_span().get_span_context()
    return format_traceparent(context) if context.is_valid else None


def outgoing_traceparent(traceparent: str | None) -> str:
    """The traceparent of an event sent in answer to one carrying `traceparent`: the current
    span's context (the handler or entry-point span, so the next handler is its child) when
    it belongs to the same trace; outside any span, a new span id in the same trace."""
    current = current_traceparent()
    if current and trace_id_of(traceparent) in (None, trace_id_of(current)):
        return current
    return child_traceparent(traceparent)


def make_event(event_type: str, data: dict, *, tenant: str, job_id: str, function: str,
               traceparent: str | None = None, flags: dict | None = None) -> CloudEvent:
    """Build and check an outgoing event (raises ValidationError naming every problem)."""
    attributes = {
        "type": event_type,
        "source": f"/udb/{function}",
        "subject": job_id,
        "id": str(uuid.uuid4()),
        "time": datetime.now(timezone.utc).isoformat(),
        "datacontenttype": "application/json",
        "tenant": tenant,
        "jobid": job_id,
        "partitionkey": tenant,
        "traceparent": outgoing_traceparent(traceparent),
    }
    for flag in ROUTING_FLAGS:
        if flags and flag in flags:
            attributes[flag] = "true" if flags[flag] else "false"
    event = CloudEvent(attributes, data)
    check_event(event)
    return event


def check_event(event: CloudEvent) -> None:
    """Check attributes and data of a received or outgoing event; all problems at once."""
    problems: dict[str, str] = {}
    attrs = event.get_attributes()
    event_type = attrs.get("type")
    tenant = attrs.get("tenant")
    job_id = attrs.get("jobid")
    if not tenant or not TENANT_RE.fullmatch(str(tenant)):
        problems["tenant"] = f"expected a tenant id matching {TENANT_RE.pattern}, found {tenant!r}"
    if not job_id or not JOB_RE.fullmatch(str(job_id)):
        problems["jobid"] = f"expected a job id matching {JOB_RE.pattern}, found {job_id!r}"
    if attrs.get("partitionkey") not in (None, tenant):
        problems["partitionkey"] = f"expected the tenant {tenant!r}, found {attrs.get('partitionkey')!r}"
    tp = attrs.get("traceparent")
    if tp is not None and not TRACEPARENT_RE.fullmatch(str(tp)):
        problems["traceparent"] = f"expected W3C trace context, found {tp!r}"
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError:
            problems["data"] = "expected JSON data"
            data = None
    if data is None and "data" not in problems:
        problems["data"] = "expected a JSON object, found no data"
    if data is not None:
        problems.update(schema_problems(str(event_type), data))
    if problems:
        raise ValidationError(f"invalid {event_type or 'event'}", problems)


def event_data(event: CloudEvent) -> Any:
    """The event's data as JSON (a dict once `check_event` has passed it)."""
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        data = json.loads(data)
    return data


def flag(event: CloudEvent, name: str, default: bool = True) -> bool:
    value = event.get_attributes().get(name)
    return default if value is None else str(value).lower() == "true"

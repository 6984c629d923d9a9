"""Traces: one OpenTelemetry trace per job, carried from event to event in the CloudEvent
`traceparent` extension (HTTP `ce-traceparent`, Kafka `ce_traceparent`).

- `setup(settings, service)` gives the process its tracer provider and exporter
  (`UDB_OTEL_EXPORTER` = none | otlp | file); `runtime.start` calls it.
- `handler_span(function, attrs)` is the span of one handler, a child of the span that sent the
  incoming event (its `traceparent`); `runtime.invoke` opens it around every handler.
- `stage(name)` / `staged(name)` is a child span of the current span for one stage of the work
  (probe, extract, stage, lease, load, profile, quality, kpi, render), and observes
  `udb_stage_duration_seconds{function, stage}` with the same clock.
- `current_traceparent()` is the W3C traceparent of the current span: `events.make_event` puts
  it on every reply, so the next handler's span is a child of this one.

Only the OpenTelemetry API is imported at module level; the SDK
and the exporters are imported by `setup`.
"""
from __future__ import annotations

import functools
import json
import threading
import time
from contextlib import contextmanager
from typing import Any, Mapping
from pathlib import Path

import opentelemetry.trace as trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from shared.core import events
from shared.observability import logs, metrics

EXPORTERS = ("none", "otlp", "file")
TRACER_NAME = "udb"

_lock = threading.Lock()
_provider = None  # the SDK TracerProvider of the current configuration
_config: tuple | None = None


def setup(settings, service: str) -> None:
    """Configure this process's tracer for `service` (`udb-<function>`) from the settings.

    Idempotent for the same settings; a different configuration (tests, an embedded run with
    other settings) replaces the provider, so spans from then on go to the new exporter.
    """
    global _provider, _config
    config = (settings.otel_exporter, settings.otel_endpoint, str(settings.otel_file), service)
    with _lock:
        if config == _config:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        old = _provider
        provider = TracerProvider(resource=Resource.create({"service.name": f"udb-{service}",
                                                            "service.namespace": "udb"}),
                                  shutdown_on_exit=settings.otel_exporter == "otlp")
        if settings.otel_exporter == "file":
            # Synchronous: a span is on disk when it ends (one short append per span), so a test
            # or an operator tailing the file sees a finished job's whole trace at once.
            from shared.observability.spanfile import JsonLinesSpanExporter
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.otel_file)))
        elif settings.otel_exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint or None)  # None: OTEL_EXPORTER_OTLP_* env
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _provider, _config = provider, config
    if old is not None:
        old.force_flush()


def tracer():
    """The tracer of the configured provider (a provider without exporter until `setup`:
    span ids are real either way, so events carry a proper trace context)."""
    global _provider
    if _provider is None:
        with _lock:
            if _provider is None:
                from opentelemetry.sdk.trace import TracerProvider
                _provider = TracerProvider(shutdown_on_exit=False)
    return _provider.get_tracer(TRACER_NAME)


def flush(timeout_millis: int = 5000) -> bool:
    """Export every finished span now (before a process exits, or before a test reads spans)."""
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def parse_traceparent(traceparent: str | None) -> SpanContext | None:
    """The remote span context a W3C `traceparent` names, or None when absent or malformed."""
    if not traceparent:
        return None
    parts = str(traceparent).strip().split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return context if context.is_valid else None


# The traceparent of a span is part of the event model (shared.core.events, below this layer);
# named here too because spans are this module's subject.
format_traceparent = events.format_traceparent
current_traceparent = events.current_traceparent


@contextmanager
def handler_span(function: str, attrs: Mapping[str, Any]):
    """The span of one handler run on one event, parented by the event's `traceparent`."""
    parent = parse_traceparent(attrs.get("traceparent"))
    parent_context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
    attributes = {"udb.function": function, "udb.tenant": str(attrs.get("tenant")),
                  "udb.job": str(attrs.get("jobid")), "cloudevents.event_type": str(attrs.get("type")),
                  "cloudevents.event_id": str(attrs.get("id")), "cloudevents.event_source": str(attrs.get("source"))}
    with tracer().start_as_current_span(f"{function} {attrs.get('type')}", context=parent_context,
                                        kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


@contextmanager
def request_span(function: str, name: str, traceparent: str | None = None, **attributes):
    """The span of an HTTP entry point that starts work itself (e.g. POST /sources/discover_connect):
    a child of the caller's `traceparent` header when it sent one, else the root of a new trace."""
    parent = parse_traceparent(traceparent)
    parent_context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
    attrs = {"udb.function": function, **{f"udb.{k}": v for k, v in attributes.items() if v is not None}}
    with tracer().start_as_current_span(f"{function} {name}", context=parent_context, kind=SpanKind.SERVER,
                                        attributes=attrs) as span:
        yield span


@contextmanager
def stage(name: str, **attributes):
    """A child span of the current span for one stage, timed into udb_stage_duration_seconds."""
    function = logs.function_var.get() or "unknown"
    attrs = {"udb.stage": name, "udb.function": function,
             **{f"udb.{k}": v for k, v in attributes.items() if v is not None}}
    started = time.perf_counter()
    try:
        with tracer().start_as_current_span(name, attributes=attrs) as span:
            yield span
    except BaseException as exc:
        mark_step(exc, " ".join([name, *(f"{k}={v}" for k, v in attributes.items() if v is not None)]))
        raise
    finally:
        metrics.stage_seconds.labels(function, name).observe(time.perf_counter() - started)


def mark_step(exc: BaseException, step: str) -> None:
    """Remember on `exc` the innermost stage it escaped from (the job document names it)."""
    if getattr(exc, "udb_step", None) is None:
        try:
            # A dynamic attribute by design: any exception type can carry the step it escaped.
            exc.udb_step = step  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # an exception type without a __dict__
            pass


def step_of(exc: BaseException) -> str | None:
    """The stage an exception escaped from, if it passed through `stage`."""
    return getattr(exc, "udb_step", None)


def staged(name: str, describe=None):
    """Decorator form of `stage`; `describe(*args, **kwargs)` may return span attributes."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with stage(name, **(describe(*args, **kwargs) if describe else {})):
                return fn(*args, **kwargs)
        return run
    return wrap


def mark_failed(reason: str) -> None:
    """Set the current span's status to ERROR (a job failed here without an exception escaping)."""
    trace.get_current_span().set_status(Status(StatusCode.ERROR, reason[:500]))


def read_spans(path) -> list[dict]:
    """Every span in a file the file exporter wrote (tests and tools)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

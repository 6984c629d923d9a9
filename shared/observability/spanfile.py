"""The `file` trace exporter (UDB_OTEL_EXPORTER=file): each finished span as one JSON line.

Apart from telemetry.py because it needs the OpenTelemetry SDK, which telemetry imports only
when `setup` configures an exporter (the API alone at module level keeps cold starts short).
"""
from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


def _iso(nanos: int | None) -> str | None:
    if nanos is None:
        return None
    return datetime.fromtimestamp(nanos / 1e9, timezone.utc).isoformat(timespec="microseconds")


def span_record(span: ReadableSpan) -> dict:
    """One finished span as a flat JSON object: what the file exporter writes per line."""
    context = span.get_span_context()
    if context is None:  # only a span made without one, which the SDK never hands an exporter
        raise ValueError(f"span {span.name!r} has no context")
    start, end = span.start_time, span.end_time
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name") if span.resource else None,
        "start": _iso(start),
        "end": _iso(end),
        "duration_ms": round((end - start) / 1e6, 3) if end and start is not None else None,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "pid": os.getpid(),
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to a file (UDB_OTEL_FILE), one file per process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.lock, open(self.path, "a") as fh:
                fh.write(lines)
        except OSError:
            return SpanExportResult.FAILURE  # tracing must never fail the work it watches
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

"""shared/observability/spanfile.py: the `file` trace exporter writes one JSON line per span."""
from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import StatusCode

from shared.observability.spanfile import JsonLinesSpanExporter

pytestmark = pytest.mark.unit


def test_each_finished_span_is_one_json_line_with_its_parent(tmp_path):
    path = tmp_path / "spans" / "trace.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "udb-test"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner", attributes={"udb.rows": 3}) as inner:
            inner.add_event("loaded", {"table": "t1"})
            inner.set_status(StatusCode.ERROR, "boom")
    provider.shutdown()

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    inner_rec, outer_rec = (json.loads(line) for line in lines)  # a child ends before its parent
    assert [inner_rec["name"], outer_rec["name"]] == ["inner", "outer"]
    assert inner_rec["trace_id"] == outer_rec["trace_id"] == f"{outer.get_span_context().trace_id:032x}"
    assert inner_rec["parent_span_id"] == outer_rec["span_id"]
    assert outer_rec["parent_span_id"] is None
    assert inner_rec["attributes"] == {"udb.rows": 3}
    assert inner_rec["events"] == [{"name": "loaded", "attributes": {"table": "t1"}}]
    assert (inner_rec["status"], inner_rec["status_message"]) == ("ERROR", "boom")
    assert inner_rec["service"] == "udb-test" and inner_rec["kind"] == "INTERNAL"
    assert inner_rec["duration_ms"] >= 0

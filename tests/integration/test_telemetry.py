"""Trace context in one process: parsing, the reply's traceparent, log fields, stage metrics."""
from __future__ import annotations

import io
import json
import logging

import pytest

from shared.core import events
from shared.observability import logs, metrics, telemetry

pytestmark = pytest.mark.unit
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("bad", [None, "", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                                 "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                 "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                                 "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                                 "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01"])
def test_a_malformed_traceparent_has_no_parent(bad):
    assert telemetry.parse_traceparent(bad) is None


def test_a_handler_span_is_the_child_of_its_event_and_the_parent_of_its_reply():
    attrs = {"type": events.DISCOVER_REQUESTED, "tenant": "acme", "jobid": "job-0123456789abcdef",
             "id": "e1", "source": "/test", "traceparent": PARENT}
    with telemetry.handler_span("discover", attrs) as span:
        context = span.get_span_context()
        assert f"{context.trace_id:032x}" == PARENT.split("-")[1]
        assert span.parent.span_id == int(PARENT.split("-")[2], 16)
        reply = events.make_event(events.JOB_FAILED, {"stage": "discover", "function": "discover", "reason": "x"},
                                  tenant="acme", job_id="job-0123456789abcdef", function="discover",
                                  traceparent=PARENT)
        assert reply["traceparent"] == telemetry.format_traceparent(context)
        with telemetry.stage("probe") as stage:
            assert stage.parent.span_id == context.span_id
            assert telemetry.current_traceparent().split("-")[2] == f"{stage.get_span_context().span_id:016x}"
    # Outside any span: the same trace, a new span id.
    outside = events.outgoing_traceparent(PARENT)
    assert outside.split("-")[1] == PARENT.split("-")[1] and outside.split("-")[2] != PARENT.split("-")[2]
    assert telemetry.current_traceparent() is None


def test_log_lines_carry_the_span_they_were_written_in():
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    log = logs.get("obs-test")
    log.addHandler(handler)
    try:
        attrs = {"type": events.SYNC_REQUESTED, "tenant": "acme", "jobid": "job-0123456789abcdef", "traceparent": PARENT}
        with logs.bound(tenant="acme", job="job-0123456789abcdef", function="sync"), \
                telemetry.handler_span("sync", attrs) as span:
            with telemetry.stage("extract", stream="orders") as stage:
                log.warning("inside a stage")
            log.warning("inside the handler")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    inside_stage, inside_handler, outside = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert inside_stage["span_id"] == f"{stage.get_span_context().span_id:016x}"
    assert inside_handler["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert inside_stage["trace_id"] == inside_handler["trace_id"] == PARENT.split("-")[1]
    assert {inside_stage["tenant"], inside_stage["job"], inside_stage["function"]} == \
        {"acme", "job-0123456789abcdef", "sync"}
    assert outside["span_id"] is None and outside["job"] is None


def test_a_stage_is_timed_into_the_stage_histogram_even_when_it_fails():
    labels = {"function": "writer", "stage": "load"}
    before = metrics.REGISTRY.get_sample_value("udb_stage_duration_seconds_count", labels) or 0
    with logs.bound(function="writer"):
        with pytest.raises(RuntimeError):
            with telemetry.stage("load"):
                raise RuntimeError("disk full")
    assert metrics.REGISTRY.get_sample_value("udb_stage_duration_seconds_count", labels) == before + 1

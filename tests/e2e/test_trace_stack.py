"""One job is one trace, across HTTP and Kafka, in the real stack.

The client's `dev.udb.discover.requested` carries a W3C traceparent; every function process
writes its spans to .cache/traces/<function>.jsonl (the file exporter stack.function_env sets).
The handler span of each function must be a child of the span that sent its event — discover
of the client's, sync of discover's, writer of sync's, analyze of writer's — and the terminal
`dev.udb.analysis.completed`, read back from the broker's Kafka topic, must carry analyze's
handler span; every stage span must be a child of its handler's span, in the same process.
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from devstack import stack
from shared.core import bindings, events
from shared.core.tenancy import new_job_id
from tests.conftest import write_sales
from tests.observability import ensure_traced_functions, log_offsets, logs_since, wait_for_spans
from tests.stack_fixtures import auth_headers, broker_events, wait_for_job

pytestmark = pytest.mark.e2e
SOURCE_BUCKET = "udb-e2e-sources"
CHAIN = [("discover", events.DISCOVER_REQUESTED), ("sync", events.SOURCE_DISCOVERED),
         ("writer", events.SYNC_STAGED), ("analyze", events.WAREHOUSE_LOADED)]
STAGES = {"discover": {"probe"}, "sync": {"extract", "stage"}, "writer": {"lease", "load", "upload"},
          "analyze": {"profile", "kpi", "render"}}


def test_one_job_is_one_trace_from_discover_to_analysis_completed(running_stack, s3_client, tenant, tmp_path):
    ensure_traced_functions()
    path = write_sales(tmp_path / "trace" / "sales.csv", 1_000)
    try:
        s3_client.create_bucket(Bucket=SOURCE_BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3_client.upload_file(str(path), SOURCE_BUCKET, f"{tenant}/trace.csv")

    job_id = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": f"s3://{SOURCE_BUCKET}/{tenant}/trace.csv"},
                                tenant=tenant, job_id=job_id, function="test")
    _, trace_id, client_span, _ = request["traceparent"].split("-")
    offsets = log_offsets()
    headers, body = bindings.to_http(request)
    headers.update(auth_headers(tenant))
    assert httpx.post(stack.broker_url(), headers=headers, content=body, timeout=10).status_code == 202
    doc = wait_for_job(stack.function_url("artifacts"), tenant, job_id)
    assert doc["state"] == "completed", doc.get("error")
    assert doc["traceparent"] == request["traceparent"]  # the job document keeps the job's trace

    def handler_spans(spans):
        return {f: [s for s in spans[f] if s["name"] == f"{f} {t}"] for f, t in CHAIN}

    spans = wait_for_spans(trace_id, lambda s: all(handler_spans(s).values()))
    handlers = handler_spans(spans)
    assert {f: len(found) for f, found in handlers.items()} == {f: 1 for f, _ in CHAIN}
    handler = {f: found[0] for f, found in handlers.items()}

    # The chain of parents: client -> discover -> sync -> writer -> analyze.
    parent = client_span
    for function, event_type in CHAIN:
        span = handler[function]
        assert span["parent_span_id"] == parent, f"{function}'s handler span is not a child of its event's sender"
        assert span["service"] == f"udb-{function}" and span["kind"] == "CONSUMER"
        assert span["attributes"]["udb.job"] == job_id and span["attributes"]["udb.tenant"] == tenant
        assert span["attributes"]["cloudevents.event_type"] == event_type
        assert span["status"] != "ERROR"
        parent = span["span_id"]

    # Each reply carried its handler's span: the terminal event too, read back from Kafka.
    through_broker = broker_events(tenant, job_id)
    by_type = {event["type"]: (headers, event) for headers, event in through_broker}
    # (and dev.udb.reports.rendered once the reports function, on the side, is done)
    assert set(by_type) - {events.REPORTS_RENDERED} == {t for _, t in CHAIN} | {events.ANALYSIS_COMPLETED}
    for (function, _), (_, next_type) in zip(CHAIN, CHAIN[1:] + [("", events.ANALYSIS_COMPLETED)]):
        headers, event = by_type[next_type]
        expected = f"00-{trace_id}-{handler[function]['span_id']}-01"
        assert event["traceparent"] == expected, f"{next_type} does not carry {function}'s handler span"
        assert headers["ce_traceparent"] == expected.encode()  # the Kafka binding's header

    # Stage spans: children of their handler span, in the same process, the ones documented.
    for function, names in STAGES.items():
        stages = [s for s in spans[function] if s["parent_span_id"] == handler[function]["span_id"]]
        assert {s["name"] for s in stages} == names, function
        for span in stages:
            assert span["attributes"]["udb.stage"] == span["name"] and span["pid"] == handler[function]["pid"]
            assert handler[function]["start"] <= span["start"] <= span["end"] <= handler[function]["end"]
    every = [s for found in spans.values() for s in found]
    assert {s["trace_id"] for s in every} == {trace_id}
    assert len({s["span_id"] for s in every}) == len(every)

    # The logs of the job carry the trace id and the span they were written in.
    time.sleep(0.5)
    span_ids = {s["span_id"] for s in every}
    lines = [json.loads(line) for text in logs_since(offsets).values() for line in text.splitlines()
             if line.startswith("{\"time\": ") and f'"job": "{job_id}"' in line]
    assert lines, "no log line of the job"
    for entry in lines:
        assert entry["trace_id"] == trace_id and entry["span_id"] in span_ids, entry

"""shared/serving/jobevents.py: job-state changes as CloudEvents for the `udb.job-events` topic.

The Kafka producer itself is exercised against a real broker in the integration and e2e tests;
here: the event, its Kafka record, and what publishing does when no Kafka answers (a closed
port on 127.0.0.1).
"""
from __future__ import annotations

import json
import socket
import time
from datetime import datetime

import pytest
from aiokafka.errors import KafkaConnectionError

from shared.core import bindings
from shared.core.errors import TransientError
from shared.serving.jobevents import JOB_EVENT_TYPE, KafkaJobEvents, decode, job_event

pytestmark = pytest.mark.unit

DOC = {"job_id": "job-00000000000000e1", "tenant": "acme", "state": "completed", "stage": "analyze"}


def test_job_event_attributes():
    event = job_event(DOC)
    attrs = event.get_attributes()
    assert (attrs["type"], attrs["source"], attrs["subject"]) == (JOB_EVENT_TYPE, "/udb/jobs", DOC["job_id"])
    assert (attrs["tenant"], attrs["jobid"], attrs["partitionkey"]) == ("acme", DOC["job_id"], "acme")
    assert attrs["datacontenttype"] == "application/json"
    assert datetime.fromisoformat(attrs["time"]).utcoffset().total_seconds() == 0
    assert "traceparent" not in attrs
    assert event.get_data() == DOC
    assert job_event(DOC)["id"] != event["id"]


def test_the_trace_is_carried_when_the_job_has_one():
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert job_event({**DOC, "traceparent": tp})["traceparent"] == tp
    assert "traceparent" not in job_event({**DOC, "traceparent": None}).get_attributes()


def test_the_kafka_record_is_keyed_by_tenant_and_decodes_back():
    key, value, headers = bindings.to_kafka(job_event(DOC))
    assert key == b"acme"
    assert decode(value) == DOC
    assert dict(headers)["ce_type"] == JOB_EVENT_TYPE.encode()
    assert decode(json.dumps({"a": 1}).encode()) == {"a": 1}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_publish_without_kafka_is_a_transient_error_after_its_patience():
    events = KafkaJobEvents(f"127.0.0.1:{_closed_port()}", "udb.job-events", timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(TransientError, match="kafka: cannot publish job event"):
            events.publish(DOC, patience=0)
        assert time.monotonic() - started < 5
        assert events._producer is None   # dropped, so the next publish starts afresh
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):   # readiness: not ready
            events.ping()
    finally:
        events.close()
    assert not events._thread.is_alive()

"""shared/core/bindings.py: UDB events over HTTP (binary mode) and Kafka (binary mode, `ce_*` headers)."""
from __future__ import annotations

import json

import pytest
from cloudevents.http import CloudEvent

from shared.core.bindings import broker_headers, from_http_request, from_kafka, to_http, to_kafka
from shared.core.settings import Settings

pytestmark = pytest.mark.unit

ATTRS = {"type": "udb.sync.requested", "source": "/udb/discover", "id": "ev-1",
         "specversion": "1.0", "partitionkey": "acme"}
DATA = {"tenant": "acme", "jobId": "job-0123456789abcdef", "rows": 3}


def _event(**extra) -> CloudEvent:
    return CloudEvent({**ATTRS, **extra}, DATA)


def test_http_binary_mode_puts_attributes_in_ce_headers_and_data_in_the_body():
    headers, body = to_http(_event(datacontenttype="application/json"))
    assert headers["ce-type"] == "udb.sync.requested"
    assert headers["ce-id"] == "ev-1"
    assert headers["ce-partitionkey"] == "acme"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == DATA


def test_http_round_trip():
    headers, body = to_http(_event(datacontenttype="application/json"))
    back = from_http_request(headers, body)
    assert back["type"] == "udb.sync.requested" and back["partitionkey"] == "acme"
    assert back.get_data() == DATA


def test_kafka_record_is_keyed_by_partitionkey_with_ce_headers():
    key, value, headers = to_kafka(_event())
    assert key == b"acme"
    assert json.loads(value) == DATA
    named = dict(headers)
    assert named["ce_type"] == b"udb.sync.requested"
    assert named["ce_id"] == b"ev-1"
    # datacontenttype is added when the event has none: UDB data is always JSON.
    assert named["content-type"] == b"application/json"
    assert all(isinstance(v, bytes) for _, v in headers)


def test_kafka_round_trip_keeps_attributes_and_data():
    key, value, headers = to_kafka(_event())
    back = from_kafka(key, value, headers)
    assert back["type"] == "udb.sync.requested" and back["source"] == "/udb/discover"
    # The SDK maps the record key back onto `partitionkey` as the raw key bytes, not the
    # string that was sent (the broker forwards it as a header, where bytes go on the wire as is).
    assert back["partitionkey"] == b"acme"
    assert back.get_data() == DATA


def test_kafka_record_without_partitionkey_has_no_key():
    attrs = {k: v for k, v in ATTRS.items() if k != "partitionkey"}
    key, _, _ = to_kafka(CloudEvent(attrs, DATA))
    assert key is None


def test_kafka_data_that_is_not_json_comes_back_as_bytes():
    key, value, headers = to_kafka(CloudEvent(dict(ATTRS), b"\x00raw"))
    assert value == b"\x00raw"
    assert from_kafka(key, value, headers).get_data() == b"\x00raw"


def test_broker_headers_carry_the_token_only_when_set():
    assert broker_headers(Settings()) == {}
    assert broker_headers(Settings(broker_token="tok-123")) == {"Authorization": "Bearer tok-123"}

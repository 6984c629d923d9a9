"""Transport bindings of UDB events: HTTP (binary mode out) and Kafka (binary mode, `ce_*` headers).

Kept apart from `shared.events` so the event model knows nothing of transports.
"""
from __future__ import annotations

import json

from cloudevents import kafka as ce_kafka
from cloudevents.http import CloudEvent, from_http, to_binary


def to_http(event: CloudEvent) -> tuple[dict, bytes]:
    headers, body = to_binary(event)
    return dict(headers), body


def from_http_request(headers, body: bytes) -> CloudEvent:
    return from_http(dict(headers), body)


def _key(event: CloudEvent):
    # Knative's Kafka broker keys records by the `partitionkey` extension: one tenant, one
    # partition, so ordered Triggers see a tenant's events in order.
    return event.get_attributes().get("partitionkey")


def to_kafka(event: CloudEvent) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) for a producer, in CloudEvents Kafka binary mode."""
    if "datacontenttype" not in event.get_attributes():
        # The SDK's Kafka binding reads it unconditionally; our data is always JSON.
        event = CloudEvent({**event.get_attributes(), "datacontenttype": "application/json"}, event.get_data())
    message = ce_kafka.to_binary(event, data_marshaller=_marshal, key_mapper=_key)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in message.headers.items()]
    return key, message.value, headers


def from_kafka(key, value: bytes, headers) -> CloudEvent:
    message = ce_kafka.KafkaMessage(headers={k: v for k, v in headers}, key=key, value=value)
    return ce_kafka.from_binary(message, data_unmarshaller=_unmarshal)


def _marshal(data) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data).encode()


def _unmarshal(raw: bytes):
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return raw

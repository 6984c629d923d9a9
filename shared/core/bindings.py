"""Transport bindings of UDB events: HTTP (binary mode out) and Kafka (binary mode, `ce_*` headers).

Kept apart from `shared.core.events` so the event model knows nothing of transports.
"""
from __future__ import annotations

import json

from cloudevents import kafka as ce_kafka
from cloudevents.http import CloudEvent, from_http, to_binary


def to_http(event: CloudEvent) -> tuple[dict, bytes]:
    headers, body = to_binary(event)
    return dict(headers), body


def broker_headers(settings) -> dict:
    """Headers an internal sender adds when it posts an event to the broker (or the broker to
    a function): the broker token, when one is set. Checked by `shared.security.auth`."""
    return {"Authorization": f"Bearer {settings.broker_token}"} if settings.broker_token else {}


def send_to_broker(settings, event: CloudEvent) -> None:
    """POST an event UDB originates (not a reply) to the broker at K_SINK, with the broker
    token where one is set. The broker being away is a TransientError: the caller's own caller
    (a user's request, a delivery) may try again."""
    import httpx

    from shared.core.errors import TransientError
    headers, body = to_http(event)
    headers.update(broker_headers(settings))
    try:
        response = httpx.post(settings.broker_url, headers=headers, content=body, timeout=10)
    except httpx.HTTPError as exc:
        raise TransientError(f"broker at K_SINK unreachable: {exc}") from None
    if response.status_code >= 300:
        raise TransientError(f"broker at K_SINK answered {response.status_code}")


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
    value = message.value if isinstance(message.value, bytes) else message.value.encode()
    return key, value, headers


def from_kafka(key, value: bytes, headers) -> CloudEvent:
    message = ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value)
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

"""The stack's local broker against real Kafka: Knative Kafka Broker semantics.

Each test gets its own Broker name (so its own topic and consumer groups), a routing table
written as Knative YAML, and a local subscriber (a plain HTTP server) that records what
arrives and answers as the test tells it to.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from cloudevents.http import CloudEvent, to_binary, to_structured

from devstack.broker import Broker
from shared.core import bindings
from shared.core.routing import load_routes
from tests.peers.subscriber import Subscriber

pytestmark = pytest.mark.integration


def routes_yaml(name: str, triggers: str, delivery: str = "") -> str:
    return f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: {name}, namespace: test}}
spec:
  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.1S
    deadLetterSink: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: dls-{name}}}}}
    {delivery}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {{name: dls-{name}, namespace: test}}
spec: {{topic: dls-{name}, bootstrapServers: [x]}}
{triggers}
"""


def trigger(name: str, broker: str, service: str, filter_yaml: str, extra: str = "") -> str:
    return f"""---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {name}-{broker}
  namespace: test
{extra}
spec:
  broker: {broker}
  {filter_yaml}
  subscriber: {{ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: {service}}}}}
"""


@pytest.fixture(scope="module")
def kafka(stack_services):
    return stack_services["kafka"]


def event(type_: str, key: str = "acme", **data) -> CloudEvent:
    return CloudEvent({"type": type_, "source": "/test", "partitionkey": key, "datacontenttype": "application/json"},
                      data or {"n": 0})


async def running(routes, kafka: str, subscribers: dict):
    broker = Broker(routes, kafka, subscribers)
    await broker.start()
    server = uvicorn.Server(uvicorn.Config(broker.asgi, host="127.0.0.1", port=0, log_level="warning",
                                           interface="asgi3", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    ingress = f"http://127.0.0.1:{port}/test/{routes.broker}"

    async def close():
        server.should_exit = True
        await task
        await broker.stop()

    return broker, ingress, close


async def post(ingress: str, ev: CloudEvent, structured: bool = False) -> httpx.Response:
    headers, body = (to_structured if structured else to_binary)(ev)
    async with httpx.AsyncClient() as client:
        return await client.post(ingress, headers=headers, content=body)


async def until(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


async def read_topic(kafka: str, topic: str, expect: int, timeout: float = 20) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expect and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def load(tmp_path: Path, text: str, name: str):
    (tmp_path / "routes.yaml").write_text(text)
    return load_routes(tmp_path, name)


def test_ingress_filters_delivery_and_replies_reentering_the_broker(kafka, tmp_path):
    name = "b" + uuid.uuid4().hex[:8]

    def reply(ev):
        out = CloudEvent({"type": "test.second", "source": "/sub", "partitionkey": ev["partitionkey"]},
                         {"from": ev["id"]})
        headers, body = to_binary(out)
        return 200, dict(headers), body

    first, second = Subscriber(reply), Subscriber()
    routes = load(tmp_path, routes_yaml(name, trigger("one", name, "svc-one", "filter: {attributes: {type: test.first}}")
                                        + trigger("two", name, "svc-two",
                                                  "filters: [{prefix: {type: test.sec}}, {not: {exact: {source: /nope}}}]")),
                  name)

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc-one": first.url, "svc-two": second.url})
        try:
            assert (await post(ingress, event("test.first"))).status_code == 202
            assert (await post(ingress, event("test.first"), structured=True)).status_code == 202
            assert (await post(ingress, event("test.other"))).status_code == 202  # matches no Trigger
            async with httpx.AsyncClient() as client:
                bad = await client.post(ingress, content=b"nope", headers={"content-type": "text/plain"})
                assert bad.status_code == 400 and bad.json()["error"] == "malformed CloudEvent"
                assert (await client.post(ingress.rsplit("/", 1)[0] + "/other", content=b"{}")).status_code == 404
            await until(lambda: len(second.received) == 2)
            await asyncio.sleep(0.5)
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
            await admin.start()
            try:
                return {g[0] for g in await admin.list_consumer_groups()}
            finally:
                await admin.close()
        finally:
            await close()

    groups = asyncio.run(scenario())
    assert first.types() == ["test.first", "test.first"]
    assert second.types() == ["test.second", "test.second"]  # each reply went back through Kafka
    assert {f"knative-trigger-test-one-{name}", f"knative-trigger-test-two-{name}"} <= groups
    assert {e.get_data()["from"] for _, e in second.received} == {e["id"] for _, e in first.received}


def test_retries_with_exponential_backoff_then_succeeds(kafka, tmp_path):
    name = "b" + uuid.uuid4().hex[:8]
    calls = {"n": 0}

    def flaky(ev):
        calls["n"] += 1
        return (503, {}, b"busy") if calls["n"] <= 2 else (202, {}, b"")

    sub = Subscriber(flaky)
    routes = load(tmp_path, routes_yaml(name, trigger("t", name, "svc", "filter: {attributes: {type: test.x}}")), name)

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc": sub.url})
        try:
            await post(ingress, event("test.x"))
            await until(lambda: len(sub.received) == 3)
            await asyncio.sleep(0.5)
        finally:
            await close()

    asyncio.run(scenario())
    times = [t for t, _ in sub.received]
    assert len(times) == 3  # delivered on the third attempt, and not again
    # Knative's exponential backoff: backoffDelay * 2^n before retry n -> 0.2 s, then 0.4 s.
    assert times[1] - times[0] == pytest.approx(0.2, abs=0.15)
    assert times[2] - times[1] == pytest.approx(0.4, abs=0.15)


def test_exhausted_and_non_retryable_deliveries_go_to_the_dead_letter_sink(kafka, tmp_path):
    name = "b" + uuid.uuid4().hex[:8]
    always_500 = Subscriber(lambda ev: (500, {}, b"handler broke"))
    refuses = Subscriber(lambda ev: (400, {}, b'{"error": "bad"}'))
    routes = load(tmp_path, routes_yaml(
        name, trigger("fail", name, "svc-fail", "filter: {attributes: {type: test.fail}}")
        + trigger("bad", name, "svc-bad", "filter: {attributes: {type: test.bad}}",
                  extra="") ), name)

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc-fail": always_500.url, "svc-bad": refuses.url})
        try:
            await post(ingress, event("test.fail"))
            await post(ingress, event("test.bad"))
            return await read_topic(kafka, f"dls-{name}", expect=2)
        finally:
            await close()

    records = asyncio.run(scenario())
    assert len(always_500.received) == 3  # 1 + retry 2
    assert len(refuses.received) == 1     # 400 is not retried
    dead = {e["type"]: e for e in (bindings.from_kafka(r.key, r.value, r.headers) for r in records)}
    assert set(dead) == {"test.fail", "test.bad"}
    assert dead["test.fail"]["knativeerrorcode"] == "500"
    assert dead["test.fail"]["knativeerrordest"] == always_500.url
    assert base64.b64decode(dead["test.fail"]["knativeerrordata"]) == b"handler broke"
    assert dead["test.bad"]["knativeerrorcode"] == "400"
    assert json.loads(base64.b64decode(dead["test.bad"]["knativeerrordata"])) == {"error": "bad"}


def test_ordered_trigger_delivers_one_partition_in_order(kafka, tmp_path):
    name = "b" + uuid.uuid4().hex[:8]

    def slow(ev):
        time.sleep(0.02 if ev.get_data()["n"] % 2 else 0.001)
        return 202, {}, b""

    ordered, unordered = Subscriber(slow), Subscriber(slow)
    routes = load(tmp_path, routes_yaml(
        name,
        trigger("ord", name, "svc-ord", "filter: {attributes: {type: test.seq}}",
                extra="  annotations: {kafka.eventing.knative.dev/delivery.order: ordered}")
        + trigger("unord", name, "svc-unord", "filter: {attributes: {type: test.seq}}")), name)
    assert [t.ordered for t in routes.triggers] == [True, False]

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc-ord": ordered.url, "svc-unord": unordered.url})
        try:
            # Publish while the consumers are paused behind the first batch, so batches hold many records.
            await asyncio.gather(*(post(ingress, event("test.seq", n=i)) for i in range(1)))
            for i in range(1, 40):
                await post(ingress, event("test.seq", n=i))
            await until(lambda: len(ordered.received) == 40 and len(unordered.received) == 40)
        finally:
            await close()

    asyncio.run(scenario())
    assert [e.get_data()["n"] for _, e in ordered.received] == list(range(40))
    assert ordered.max_in_flight == 1
    assert sorted(e.get_data()["n"] for _, e in unordered.received) == list(range(40))


# --- the real data plane's rules (issue 19: eventing-kafka-broker v0.43, Knative's broker spec) ---

def _dead_letters(records) -> list[CloudEvent]:
    return [bindings.from_kafka(r.key, r.value, r.headers) for r in records]


def test_a_trigger_delivery_replaces_the_brokers_it_is_not_merged(kafka, tmp_path):
    """Knative broker spec: a Trigger's `delivery` overrides the Broker's (no field-by-field merge,
    knative/eventing#6277 closed). Here the Trigger sets only a timeout: no retries and no
    dead-letter sink, although the Broker has both."""
    name = "b" + uuid.uuid4().hex[:8]
    broken = Subscriber(lambda ev: (500, {}, b"broke"))
    routes = load(tmp_path, routes_yaml(name, trigger("t", name, "svc", "filter: {attributes: {type: test.x}}")
                                        + "  delivery: {timeout: PT5S}\n"), name)
    assert routes.triggers[0].delivery.retry == 0 and routes.triggers[0].delivery.dead_letter_sink is None

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc": broken.url})
        try:
            await post(ingress, event("test.x"))
            await until(lambda: broker.stats.get("dead-lettered:t-" + name) == 1)
            await asyncio.sleep(1.0)  # the Broker's 2 retries would have come by now (0.2 s, 0.4 s)
            return await read_topic(kafka, f"dls-{name}", expect=1, timeout=2)
        finally:
            await close()

    assert asyncio.run(scenario()) == []  # no dead-letter sink: dropped (and logged)
    assert len(broken.received) == 1


def test_a_new_consumer_group_starts_at_latest_but_keeps_what_the_ingress_accepted(kafka, tmp_path):
    """eventing-kafka-broker's consumers start a new group at `latest`: an event published before
    a Trigger exists never reaches it. Events accepted while the consumers are still joining are
    delivered (the groups' offsets are created at the end before the ingress opens)."""
    name = "b" + uuid.uuid4().hex[:8]
    old, new = Subscriber(), Subscriber()
    first = load(tmp_path, routes_yaml(name, trigger("old", name, "svc-old", "filter: {attributes: {type: test.x}}")), name)
    both = load(tmp_path, routes_yaml(name, trigger("old", name, "svc-old", "filter: {attributes: {type: test.x}}")
                                      + trigger("new", name, "svc-new", "filter: {attributes: {type: test.x}}")), name)

    async def scenario():
        broker, ingress, close = await running(first, kafka, {"svc-old": old.url})
        try:
            await post(ingress, event("test.x", n=1))
            await until(lambda: len(old.received) == 1)
        finally:
            await close()
        # The second broker: its ingress accepts n=2 before any consumer has joined.
        broker = Broker(both, kafka, {"svc-old": old.url, "svc-new": new.url})
        await broker.start_ingress()
        try:
            await broker.publish(event("test.x", n=2))
            await broker.start_dispatch()
            await until(lambda: len(old.received) == 2 and len(new.received) == 1)
            await asyncio.sleep(0.5)
        finally:
            await broker.stop()

    asyncio.run(scenario())
    assert [e.get_data()["n"] for _, e in old.received] == [1, 2]
    assert [e.get_data()["n"] for _, e in new.received] == [2]  # n=1 was before the group existed


def test_each_trigger_has_its_own_timeout_and_no_answer_sets_no_error_code(kafka, tmp_path):
    """`delivery.timeout` is per Trigger (per attempt). eventing-kafka-broker adds
    knativeerrorcode/knativeerrordata only when there was a response; a timeout has none."""
    name = "b" + uuid.uuid4().hex[:8]
    slow = Subscriber(lambda ev: (time.sleep(1.5), (202, {}, b""))[1])
    routes = load(tmp_path, routes_yaml(name, trigger("t", name, "svc", "filter: {attributes: {type: test.x}}")
                                        + f"""  delivery:
    timeout: PT0.3S
    deadLetterSink: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: dls-{name}}}}}
"""), name)

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc": slow.url})
        try:
            await post(ingress, event("test.x"))
            await until(lambda: len(slow.received) == 1)
            started = time.monotonic()
            records = await read_topic(kafka, f"dls-{name}", expect=1)
            return records, time.monotonic() - started
        finally:
            await close()

    records, waited = asyncio.run(scenario())
    (dead,) = _dead_letters(records)
    assert waited < 1.2  # dead-lettered after the 0.3 s timeout, not after the 1.5 s answer
    attrs = dead.get_attributes()
    assert attrs["knativeerrordest"] == slow.url
    assert "knativeerrorcode" not in attrs and "knativeerrordata" not in attrs
    assert len(slow.received) == 1  # no retry set on the Trigger


def test_a_2xx_whose_body_is_not_a_cloudevent_is_dead_lettered(kafka, tmp_path):
    """eventing-kafka-broker: a response body that is not empty and not a CloudEvent fails the
    delivery (dead-lettered with the answer's code and body; not retried). An empty 2xx is a
    success."""
    name = "b" + uuid.uuid4().hex[:8]
    chatty = Subscriber(lambda ev: (200, {"Content-Type": "application/json"}, b'{"ok": true}')
                        if ev["type"] == "test.json" else (200, {}, b""))
    routes = load(tmp_path, routes_yaml(name, trigger("t", name, "svc", "filters: [{prefix: {type: test.}}]")), name)

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc": chatty.url})
        try:
            await post(ingress, event("test.json"))
            await post(ingress, event("test.empty"))
            records = await read_topic(kafka, f"dls-{name}", expect=1)
            await until(lambda: len(chatty.received) == 2)
            await asyncio.sleep(0.5)
            return records, dict(broker.stats)
        finally:
            await close()

    records, stats = asyncio.run(scenario())
    (dead,) = _dead_letters(records)
    assert dead["type"] == "test.json" and dead["knativeerrorcode"] == "200"
    assert base64.b64decode(dead["knativeerrordata"]) == b'{"ok": true}'
    assert sorted(chatty.types()) == ["test.empty", "test.json"]  # each once: not retried
    assert stats[f"delivered:t-{name}"] == 1 and stats[f"invalid-reply:t-{name}"] == 1


def test_partitions_are_dispatched_independently(kafka, tmp_path):
    """eventing-kafka-broker dispatches each partition on its own: a slow ordered delivery holds
    back its own partition only."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner, partitions = DefaultPartitioner(), list(range(4))
    slow_key = "slow"
    fast_key = next(k for k in (f"fast{i}" for i in range(100))
                    if partitioner(k.encode(), partitions, partitions) != partitioner(slow_key.encode(), partitions, partitions))
    name = "b" + uuid.uuid4().hex[:8]
    sub = Subscriber(lambda ev: (time.sleep(2.0 if ev["partitionkey"] == slow_key else 0), (202, {}, b""))[1])
    routes = load(tmp_path, routes_yaml(name, trigger("t", name, "svc", "filter: {attributes: {type: test.x}}",
                                                       extra="  annotations: {kafka.eventing.knative.dev/delivery.order: ordered}")), name)

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc": sub.url})
        try:
            await post(ingress, event("test.x", key=slow_key))
            await until(lambda: len(sub.received) == 1)
            await post(ingress, event("test.x", key=fast_key))
            await until(lambda: len(sub.received) == 2)
            await until(lambda: sub.in_flight == 0)
        finally:
            await close()

    asyncio.run(scenario())
    (t_slow, slow), (t_fast, fast) = sub.received
    assert (slow["partitionkey"], fast["partitionkey"]) == (slow_key, fast_key)
    assert t_fast - t_slow < 1.0  # not held behind the 2 s delivery of the other partition


def test_records_a_trigger_filters_out_are_committed_without_pausing_the_partition(kafka, tmp_path):
    """A record that fails a Trigger's filter is committed past at once and never pauses its
    partition: a paused partition, once resumed, waited for the fetch in flight (up to
    fetch.max.wait, 500 ms) before its next record was seen, a delay on every pipeline hop."""
    name = "b" + uuid.uuid4().hex[:8]
    first, second = Subscriber(), Subscriber()
    routes = load(tmp_path, routes_yaml(name, trigger("a", name, "svc-a", "filter: {attributes: {type: test.a}}")
                                        + trigger("b", name, "svc-b", "filter: {attributes: {type: test.b}}")), name)

    async def scenario():
        broker, ingress, close = await running(routes, kafka, {"svc-a": first.url, "svc-b": second.url})
        paused = {"a": 0, "b": 0}
        for trig, consumer in zip(("a", "b"), broker.consumers):
            real = consumer.pause

            def counting(*tps, _real=real, _trig=trig):
                paused[_trig] += 1
                return _real(*tps)
            consumer.pause = counting
        try:
            for n in range(3):
                assert (await post(ingress, event("test.a", n=n))).status_code == 202
            await until(lambda: len(first.received) == 3)
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
            await admin.start()
            try:
                async def committed(group):
                    return sum(o.offset for o in (await admin.list_consumer_group_offsets(group)).values())
                group_b = f"knative-trigger-test-b-{name}"
                deadline = time.monotonic() + 20
                while await committed(group_b) < 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                committed_b = await committed(group_b)
            finally:
                await admin.close()
            assert (await post(ingress, event("test.b"))).status_code == 202
            await until(lambda: len(second.received) == 1)
            return paused, committed_b
        finally:
            await close()

    paused, committed_b = asyncio.run(scenario())
    assert committed_b == 3           # the three test.a records, committed by Trigger b's group
    assert paused["b"] == 1           # only for its own record, test.b
    assert paused["a"] >= 1           # Trigger a paused its partition while delivering
    assert first.types() == ["test.a"] * 3 and second.types() == ["test.b"]

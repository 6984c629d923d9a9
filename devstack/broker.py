"""A local broker with Knative Kafka Broker semantics, for the stack on one machine.

- Ingress: `POST /<namespace>/<broker>` takes a binary or structured CloudEvent and writes it
  to the topic `knative-broker-<namespace>-<broker>` in CloudEvents Kafka binary mode, keyed
  by the `partitionkey` extension. 202 when Kafka acknowledged it, 400 for a bad event,
  503 when Kafka is down.
- Dispatch: one consumer group per Trigger (`knative-trigger-<namespace>-<trigger>`); each
  record is filtered with `shared.routing` (the code embedded mode uses), delivered over HTTP
  in binary mode, and a reply CloudEvent goes back into the broker topic.
- Delivery: `retry`, `backoffPolicy`, `backoffDelay` from the Trigger (or the Broker); 5xx,
  404, 408, 409, 429 and connection errors are retried, other 4xx are not; exhausted
  deliveries go to the dead-letter KafkaSink's topic with `knativeerrordest`,
  `knativeerrorcode` and `knativeerrordata`.
- PingSources: each posts its data to its Service (+ `uri`) on its cron schedule, as a
  `dev.knative.sources.ping` CloudEvent in binary mode (the redrive sweep, the daily prune).
- Order: Triggers annotated `kafka.eventing.knative.dev/delivery.order: ordered` deliver one
  record at a time per partition; unordered ones deliver a partition's batch concurrently.

Usage: python -m devstack.broker --port 18090 --kafka 127.0.0.1:19092 \
           --subscriber udb-discover=http://127.0.0.1:18081 ...
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import signal
import time
from collections import defaultdict
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from cloudevents.http import CloudEvent, from_http

from shared import auth, bindings
from shared.routing import Routes, Trigger, load_routes

log = logging.getLogger("udb.broker")
RETRYABLE = {404, 408, 409, 429}
MAX_ERROR_DATA = 1024


def retryable(status: int | None) -> bool:
    return status is None or status >= 500 or status in RETRYABLE


class Broker:
    def __init__(self, routes: Routes, kafka: str, subscribers: dict[str, str], *,
                 delivery_timeout: float = 620.0, on_delivery=None, gate: auth.Gatekeeper | None = None,
                 instance: str | None = None):
        self.routes = routes
        # Static group membership (KIP-345): each consumer joins as `<instance>`, so a restarted
        # broker takes its partitions back at once instead of waiting out the dead member's
        # session. None (the in-process test brokers): dynamic membership.
        self.instance = instance
        self.gate = gate  # authentication of the ingress and the token on deliveries; None: none
        self.kafka = kafka
        self.subscribers = subscribers
        self.delivery_timeout = delivery_timeout
        self.on_delivery = on_delivery or (lambda record: None)
        self.producer: AIOKafkaProducer | None = None
        self.consumers: list[AIOKafkaConsumer] = []
        self.tasks: list[asyncio.Task] = []
        self.pings: list[asyncio.Task] = []
        self.http: httpx.AsyncClient | None = None
        self.stats = defaultdict(int)

    @property
    def topic(self) -> str:
        return self.routes.topic

    def dead_letter_topic(self, trigger: Trigger) -> str | None:
        sink = trigger.delivery.dead_letter_sink
        return self.routes.sinks.get(sink, sink) if sink else None

    async def ensure_topics(self, partitions: int = 4) -> None:
        """Create the broker's topic (and the dead-letter topics) as Knative does when a Broker
        is created, so consumers that start first see it at once."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        names = {self.topic} | {t for t in (self.dead_letter_topic(tr) for tr in self.routes.triggers) if t}
        names |= {topic for source in self.routes.sources for topic in source.topics}
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka, request_timeout_ms=10_000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names - existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    async def start(self) -> None:
        await self.start_ingress()
        await self.start_dispatch()

    async def start_ingress(self) -> None:
        """What the ingress needs: the topics and the producer (no consumer group)."""
        await self.ensure_topics()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.kafka, acks="all", enable_idempotence=True,
                                         linger_ms=0, request_timeout_ms=10_000)
        await self.producer.start()
        self.http = httpx.AsyncClient(timeout=self.delivery_timeout)

    async def start_dispatch(self) -> None:
        """One consumer per Trigger and KafkaSource. Joining a group can take a while (with
        dynamic membership, a killed predecessor's session must expire first), so `serve`
        opens the ingress before this runs: events posted meanwhile wait in the topic."""
        subscriptions = [(t, (self.topic,), f"knative-trigger-{self.routes.namespace}-{t.name}")
                         for t in self.routes.triggers]
        # KafkaSources (e.g. dead letters -> job failure) run here too, with their own groups.
        subscriptions += [(s, s.topics, s.group) for s in self.routes.sources]
        for trigger, topics, group in subscriptions:
            if trigger.subscriber not in self.subscribers:
                raise ValueError(f"{trigger.name}: no URL for subscriber {trigger.subscriber!r}")
            consumer = AIOKafkaConsumer(
                *topics, bootstrap_servers=self.kafka,
                group_id=group, group_instance_id=self.instance,
                enable_auto_commit=False, auto_offset_reset="earliest", metadata_max_age_ms=5_000,
                # A long delivery (analyze) must not get the member kicked out of its group.
                max_poll_interval_ms=900_000, session_timeout_ms=30_000, heartbeat_interval_ms=3_000)
            await consumer.start()
            self.consumers.append(consumer)
            self.tasks.append(asyncio.create_task(self._dispatch(trigger, consumer), name=trigger.name))
        self.pings = [asyncio.create_task(self._ping(source), name=source.name) for source in self.routes.pings
                      if source.subscriber in self.subscribers]

    async def stop(self) -> None:
        for task in self.tasks + self.pings:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.pings, return_exceptions=True)
        for consumer in self.consumers:
            await consumer.stop()
        if self.producer:
            await self.producer.stop()
        if self.http:
            await self.http.aclose()

    # ingress -------------------------------------------------------------------------------
    async def publish(self, event: CloudEvent) -> None:
        key, value, headers = bindings.to_kafka(event)
        await self.producer.send_and_wait(self.topic, value=value, key=key, headers=headers)
        self.stats["ingress"] += 1

    async def _publish_until_accepted(self, event: CloudEvent, deadline_s: float = 600) -> None:
        """A reply must not be lost while Kafka restarts: keep trying (the record it answers is
        not committed meanwhile, so even a broker crash here only means redelivery)."""
        deadline = time.monotonic() + deadline_s
        delay = 0.5
        while True:
            try:
                await self.publish(event)
                return
            except KafkaError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("reply %s waiting for Kafka: %s", event["type"], exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def asgi(self, scope, receive, send):
        """The ingress as a minimal ASGI app (served by uvicorn)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        expected = f"/{self.routes.namespace}/{self.routes.broker}"
        if path == "/healthz":
            return await _reply(send, 200, {"ok": True})
        if path == "/readyz":  # the ingress and every Trigger's consumer running
            ready = self.producer is not None and len(self.tasks) == len(self.routes.triggers) + len(self.routes.sources)
            return await _reply(send, 200 if ready else 503, {"ingress": self.producer is not None,
                                                              "consumers": len(self.tasks)})
        if path == "/stats":
            return await _reply(send, 200, dict(self.stats))
        if method != "POST" or path.rstrip("/") != expected:
            return await _reply(send, 404, {"error": f"no broker at {method} {path}; POST {expected}"})
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            event = from_http(headers, body)
        except Exception as exc:  # the SDK raises several types for malformed input
            return await _reply(send, 400, {"error": "malformed CloudEvent", "problems": {"event": str(exc)}})
        if self.gate is not None:  # the broker token, or a tenant credential for its own events
            try:
                client = (scope.get("client") or ("?",))[0]
                await asyncio.to_thread(self.gate.admit_event, headers, event.get_attributes(), client)
            except auth.HTTP_ERRORS as exc:
                error, status, extra = auth.http_error(exc)
                return await _reply(send, status, error, extra)
        try:
            await self.publish(event)
        except KafkaError as exc:
            return await _reply(send, 503, {"error": f"kafka unavailable: {exc}"})
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    # PingSources ---------------------------------------------------------------------------
    async def _ping(self, source) -> None:
        """Post the source's data on its schedule (Knative's PingSource; at most once a tick:
        a failed post is logged, the next tick tries again)."""
        url = self.subscribers[source.subscriber].rstrip("/") + source.uri
        while True:
            await asyncio.sleep(max(0.0, source.next_fire(time.time()) - time.time()))
            event = CloudEvent({"type": "dev.knative.sources.ping", "datacontenttype": source.content_type,
                                "source": f"/apis/v1/namespaces/{self.routes.namespace}/pingsources/{source.name}"},
                               source.data.encode())
            headers, body = bindings.to_http(event)
            if self.gate is not None:
                headers.update(auth.broker_headers(self.gate.settings))
            try:
                response = await self.http.post(url, headers=headers, content=body, timeout=60)
                self.stats[f"ping:{source.name}:{response.status_code}"] += 1
            except httpx.HTTPError as exc:
                self.stats[f"ping:{source.name}:error"] += 1
                log.warning("ping %s to %s failed: %s", source.name, url, exc)

    # dispatch ------------------------------------------------------------------------------
    async def _dispatch(self, trigger, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._dispatch_batch(trigger, consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away (restart, network): keep the loop, retry soon
                log.warning("%s: dispatch paused: %s", trigger.name, exc)
                self.stats["dispatch-errors"] += 1
                await asyncio.sleep(1)

    async def _dispatch_batch(self, trigger, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=500, max_records=50)
        if batches:

            async def partition(records):
                if trigger.ordered:
                    for record in records:
                        await self._handle(trigger, record)
                else:
                    await asyncio.gather(*(self._handle(trigger, r) for r in records))

            await asyncio.gather(*(partition(records) for records in batches.values()))
            # At-least-once: offsets move only after every record of the batch was delivered
            # or dead-lettered (a failed commit means redelivery, never loss).
            await consumer.commit()

    async def _handle(self, trigger, record) -> None:
        try:
            event = bindings.from_kafka(record.key, record.value, record.headers)
        except Exception as exc:
            log.warning("trigger %s: skipping a record that is not a CloudEvent: %s", trigger.name, exc)
            return
        if not trigger.matches(event.get_attributes()):
            return
        url = self.subscribers[trigger.subscriber]
        status, body, reply = await self._deliver(trigger, url, event)
        self.on_delivery({"trigger": trigger.name, "type": event["type"], "status": status,
                          "at": time.time(), "jobid": event.get_attributes().get("jobid")})
        if status is not None and 200 <= status < 300:
            self.stats[f"delivered:{trigger.name}"] += 1
            if reply is not None:
                await self._publish_until_accepted(reply)
            return
        self.stats[f"dead-lettered:{trigger.name}"] += 1
        await self._dead_letter(trigger, url, event, status, body)

    async def _deliver(self, trigger: Trigger, url: str, event: CloudEvent):
        headers, body = bindings.to_http(event)
        if self.gate is not None:
            headers.update(auth.broker_headers(self.gate.settings))
        attempts = 1 + trigger.delivery.retry
        status, text = None, b""
        for attempt in range(1, attempts + 1):
            try:
                response = await self.http.post(url, headers=headers, content=body)
                status, text = response.status_code, response.content
                if 200 <= status < 300:
                    reply = None
                    if response.content and ("ce-type" in response.headers or
                                             response.headers.get("content-type", "").startswith(
                                                 "application/cloudevents")):
                        reply = from_http(dict(response.headers), response.content)
                    return status, text, reply
            except httpx.HTTPError as exc:
                status, text = None, str(exc).encode()
            if not retryable(status) or attempt == attempts:
                break
            await asyncio.sleep(trigger.delivery.delay(attempt))
        return status, text, None

    async def _dead_letter(self, trigger: Trigger, url: str, event: CloudEvent, status, body: bytes) -> None:
        topic = self.dead_letter_topic(trigger)
        log.warning("trigger %s: %s for job %s dead-lettered (status %s)", trigger.name, event["type"],
                    event.get_attributes().get("jobid"), status)
        if not topic:
            return
        attrs = dict(event.get_attributes())
        attrs["knativeerrordest"] = url
        attrs["knativeerrorcode"] = str(status if status is not None else 0)
        attrs["knativeerrordata"] = base64.b64encode(body[:MAX_ERROR_DATA]).decode()
        dead = CloudEvent(attrs, event.get_data())
        key, value, headers = bindings.to_kafka(dead)
        await self.producer.send_and_wait(topic, value=value, key=key, headers=headers)


async def _reply(send, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    extra = [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *extra]})
    await send({"type": "http.response.body", "body": data})


async def serve(routes: Routes, kafka: str, subscribers: dict[str, str], port: int,
                instance: str | None = None) -> None:
    import uvicorn

    broker = Broker(routes, kafka, subscribers, gate=auth.Gatekeeper.from_env(), instance=instance)
    # The ingress listens as soon as the producer is up; the consumers join their groups behind
    # it (docs/reliability.md: a restart used to keep the ingress shut ~28 s while every group
    # waited out the killed member's 30 s session).
    await broker.start_ingress()
    config = uvicorn.Config(broker.asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            interface="asgi3")
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                return await serving  # could not bind: raise what uvicorn raised
            await asyncio.sleep(0.02)
        await broker.start_dispatch()
        await serving
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await broker.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--eventing", default=str(Path(__file__).resolve().parent.parent / "eventing"))
    parser.add_argument("--broker", default="udb")
    parser.add_argument("--subscriber", action="append", default=[], help="SERVICE=URL")
    parser.add_argument("--instance", default=None,
                        help="static consumer-group membership id (one per broker process); none: dynamic")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}')
    subscribers = dict(item.split("=", 1) for item in args.subscriber)
    asyncio.run(serve(load_routes(Path(args.eventing), args.broker), args.kafka, subscribers, args.port,
                      instance=args.instance))


if __name__ == "__main__":
    main()

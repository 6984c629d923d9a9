"""A local broker with Knative Kafka Broker semantics, for the stack on one machine.

- Ingress: `POST /<namespace>/<broker>` takes a binary or structured CloudEvent and writes it
  to the topic `knative-broker-<namespace>-<broker>` in CloudEvents Kafka binary mode, keyed
  by the `partitionkey` extension. 202 when Kafka acknowledged it, 400 for a bad event,
  503 when Kafka is down.
- Dispatch: one consumer group per Trigger (`knative-trigger-<namespace>-<trigger>`); each
  record is filtered with `shared.core.routing` (the code embedded mode uses), delivered over HTTP
  in binary mode, and a reply CloudEvent goes back into the broker topic.
- Delivery: the Trigger's `delivery` whole, or else the Broker's (never merged: Knative's
  broker spec); `retry`, `backoffPolicy`, `backoffDelay` and `timeout` per attempt; 5xx,
  404, 408, 409, 429 and connection errors are retried, other 4xx are not; a 2xx whose body is
  neither empty nor a CloudEvent is a failure (not retried); exhausted deliveries go to the
  dead-letter KafkaSink's topic with `knativeerrordest`, and `knativeerrorcode` and
  `knativeerrordata` only when the subscriber answered (eventing-kafka-broker's rule).
- Offsets: a new consumer group starts at the topic's end (`latest`, Knative's default for
  Triggers and KafkaSources). The groups' offsets are created at the end when the ingress
  starts, before it accepts anything, so an event accepted before the consumers joined waits
  for them instead of being skipped.
- Serving: each delivery passes its Service's queue (ServiceQueue: containerConcurrency slots,
  timeoutSeconds counted from arrival, 504 past it), read from knative/base/services.yaml.
- PingSources: each posts its data to its Service (+ `uri`) on its cron schedule, as a
  `dev.knative.sources.ping` CloudEvent in binary mode (the redrive sweep, the daily prune).
- Order: Triggers annotated `kafka.eventing.knative.dev/delivery.order: ordered` deliver one
  record at a time per partition; unordered ones deliver a partition's batch concurrently.
  Partitions are dispatched independently: a slow delivery holds back only its own partition.

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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from cloudevents.http import CloudEvent, from_http

from shared.security import auth
from shared.core import bindings
from shared.core.settings import Settings
from shared.core.routing import Routes, Trigger, load_routes

log = logging.getLogger("udb.broker")
RETRYABLE = {404, 408, 409, 429}
MAX_ERROR_DATA = 1024
INVALID_REPLY = "invalid-reply"  # a 2xx whose body is neither empty nor a CloudEvent


def retryable(status: int | None) -> bool:
    return status is None or status >= 500 or status in RETRYABLE


class ServiceQueue:
    """Knative Serving in front of one revision, as the broker's deliveries meet it: the
    activator / queue-proxy admits at most `containerConcurrency` requests at a time (0: no
    limit) and queues the rest, and the revision's `timeoutSeconds` runs from when a request
    arrives, so the time spent queued counts toward it. A request over it is answered 504 by
    Knative. Read from knative/base/services.yaml, so the stack has the cluster's backlog."""

    def __init__(self, name: str, concurrency: int, timeout: float):
        self.name, self.concurrency, self.timeout = name, concurrency, timeout
        self._slots = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        self.queued = self.max_queued = 0

    async def acquire(self, budget: float) -> float | None:
        """Wait for a slot up to `budget` seconds; the seconds waited, or None when none came."""
        if self._slots is None:
            return 0.0
        started = time.monotonic()
        self.queued += 1
        self.max_queued = max(self.max_queued, self.queued)
        try:
            await asyncio.wait_for(self._slots.acquire(), budget)
            return time.monotonic() - started
        except asyncio.TimeoutError:
            return None
        finally:
            self.queued -= 1

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()


def service_queues(services_yaml: Path) -> dict[str, ServiceQueue]:
    """One ServiceQueue per Knative Service of `services_yaml` (containerConcurrency, timeoutSeconds)."""
    import yaml

    queues = {}
    for doc in yaml.safe_load_all(Path(services_yaml).read_text()):
        if doc and doc.get("kind") == "Service" and doc.get("apiVersion", "").startswith("serving.knative.dev/"):
            spec = doc["spec"]["template"]["spec"]
            name = doc["metadata"]["name"]
            queues[name] = ServiceQueue(name, int(spec.get("containerConcurrency", 0)),
                                        float(spec.get("timeoutSeconds", 300)))
    return queues


class Broker:
    def __init__(self, routes: Routes, kafka: str, subscribers: dict[str, str], *,
                 delivery_timeout: float = 620.0, on_delivery=None, gate: auth.Gatekeeper | None = None,
                 instance: str | None = None, queues: dict[str, ServiceQueue] | None = None):
        self.routes = routes
        self.queues = queues or {}  # subscriber Service -> its ServiceQueue; none: no limit
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

    def subscriptions(self) -> list:
        """(Trigger or KafkaSource, its topics, its consumer group), in dispatch order."""
        subscriptions = [(t, (self.topic,), f"knative-trigger-{self.routes.namespace}-{t.name}")
                         for t in self.routes.triggers]
        # KafkaSources (e.g. dead letters -> job failure) run here too, with their own groups.
        return subscriptions + [(s, s.topics, s.group) for s in self.routes.sources]

    async def ensure_group_offsets(self) -> None:
        """Create each new consumer group's offsets at the end of its topics.

        A new group starts at `latest` (eventing-kafka-broker's consumers; a KafkaSource's
        `initialOffset` defaults to latest): records published before a Trigger exists are not
        delivered to it. Committing the end offsets here, before the ingress accepts anything,
        pins where "latest" is, so records accepted while the consumers are still joining (the
        ingress opens first, `serve`) are delivered, not skipped. A group that has offsets keeps
        them."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.structs import OffsetAndMetadata

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka, request_timeout_ms=10_000)
        await admin.start()
        try:
            for _, topics, group in self.subscriptions():
                if await self._group_offsets(admin, group):
                    continue
                consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka, group_id=group, enable_auto_commit=False)
                await consumer.start()
                try:
                    partitions = [TopicPartition(topic, p) for topic in topics
                                  for p in sorted(await consumer._client._wait_on_metadata(topic) or ())]
                    consumer.assign(partitions)
                    ends = await consumer.end_offsets(partitions)
                    await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
                finally:
                    await consumer.stop()
        finally:
            await admin.close()

    @staticmethod
    async def _group_offsets(admin, group: str, wait_s: float = 60.0) -> dict:
        """The group's committed offsets. On a freshly formatted Kafka the group coordinator
        (the `__consumer_offsets` topic) is created by the first lookup and answers
        COORDINATOR_NOT_AVAILABLE until it is ready, a retriable error: wait for it rather than
        fail the broker's start."""
        deadline = time.monotonic() + wait_s
        delay = 0.1
        while True:
            try:
                return await admin.list_consumer_group_offsets(group)
            except KafkaError as error:
                if not getattr(error, "retriable", False) or time.monotonic() + delay > deadline:
                    raise
                log.info("consumer group %s: %s; retrying in %.1f s", group, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def start_ingress(self) -> None:
        """What the ingress needs: the topics, the groups' start offsets and the producer."""
        await self.ensure_topics()
        await self.ensure_group_offsets()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.kafka, acks="all", enable_idempotence=True,
                                         linger_ms=0, request_timeout_ms=10_000)
        await self.producer.start()
        self.http = httpx.AsyncClient(timeout=self.delivery_timeout)

    async def start_dispatch(self) -> None:
        """One consumer per Trigger and KafkaSource. Joining a group can take a while (with
        dynamic membership, a killed predecessor's session must expire first), so `serve`
        opens the ingress before this runs: events posted meanwhile wait in the topic."""
        for trigger, topics, group in self.subscriptions():
            if trigger.subscriber not in self.subscribers:
                raise ValueError(f"{trigger.name}: no URL for subscriber {trigger.subscriber!r}")
            consumer = AIOKafkaConsumer(
                *topics, bootstrap_servers=self.kafka,
                group_id=group, group_instance_id=self.instance,
                enable_auto_commit=False, auto_offset_reset="latest", metadata_max_age_ms=5_000,
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
        """Poll, and hand each partition's records to a task of its own (eventing-kafka-broker
        dispatches partitions independently): the partition is paused while its task runs, its
        offset committed when the task ends (at-least-once), then resumed. A slow or retried
        delivery holds back its own partition only."""
        running: dict[TopicPartition, tuple[asyncio.Task, int]] = {}
        try:
            while True:
                try:
                    for tp, (task, first) in list(running.items()):
                        if not task.done():
                            continue
                        del running[tp]
                        assigned = tp in consumer.assignment()
                        if task.exception() is not None:  # Kafka away mid-batch: deliver again
                            log.warning("%s: partition %s paused: %s", trigger.name, tp.partition, task.exception())
                            self.stats["dispatch-errors"] += 1
                            if assigned:
                                consumer.seek(tp, first)
                        elif assigned:
                            await consumer.commit({tp: task.result() + 1})
                        if assigned:
                            consumer.resume(tp)
                    batches = await consumer.getmany(timeout_ms=50 if running else 500, max_records=50)
                    for tp, records in batches.items():
                        if not records:
                            continue
                        wanted = [(r, e) for r in records if (e := self._for(trigger, r)) is not None]
                        if not wanted:
                            # Nothing here passes the filter: commit past it, and do not pause the
                            # partition. A paused partition leaves the fetch in flight; once
                            # resumed, its next record waited up to fetch.max.wait (500 ms) for
                            # that fetch to end: each of the pipeline's hops paid 0.1-0.45 s
                            # behind events meant for other Triggers.
                            await consumer.commit({tp: records[-1].offset + 1})
                            continue
                        consumer.pause(tp)
                        running[tp] = (asyncio.create_task(self._partition(trigger, wanted, records[-1].offset)),
                                       records[0].offset)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Kafka away (restart, network): keep the loop, retry soon
                    log.warning("%s: dispatch paused: %s", trigger.name, exc)
                    self.stats["dispatch-errors"] += 1
                    await asyncio.sleep(1)
        finally:
            for task, _ in running.values():
                task.cancel()
            await asyncio.gather(*(task for task, _ in running.values()), return_exceptions=True)

    @staticmethod
    def _for(trigger, record) -> CloudEvent | None:
        """The record's event when it passes the Trigger's filter; None for one that does not,
        or for a record that is not a CloudEvent (skipped, as eventing-kafka-broker does)."""
        try:
            event = bindings.from_kafka(record.key, record.value, record.headers)
        except Exception as exc:
            log.warning("trigger %s: skipping a record that is not a CloudEvent: %s", trigger.name, exc)
            return None
        return event if trigger.matches(event.get_attributes()) else None

    async def _partition(self, trigger, wanted, last: int) -> int:
        """Deliver one partition's (record, event) pairs that passed the filter, in order if the
        Trigger is ordered; returns `last`, the batch's last offset (committed after)."""
        if trigger.ordered:
            for _, event in wanted:
                await self._handle(trigger, event)
        else:
            await asyncio.gather(*(self._handle(trigger, e) for _, e in wanted))
        return last

    async def _handle(self, trigger, event: CloudEvent) -> None:
        url = self.subscribers[trigger.subscriber]
        status, body, reply = await self._deliver(trigger, url, event)
        self.on_delivery({"trigger": trigger.name, "type": event["type"], "status": status,
                          "at": time.time(), "jobid": event.get_attributes().get("jobid")})
        if reply is INVALID_REPLY:
            self.stats[f"invalid-reply:{trigger.name}"] += 1
        elif status is not None and 200 <= status < 300:
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
        # delivery.timeout per attempt (the Trigger's own); none set: the data plane's default.
        timeout = trigger.delivery.timeout or self.delivery_timeout
        status, text = None, b""
        for attempt in range(1, attempts + 1):
            try:
                response = await self._post(trigger.subscriber, url, headers, body, timeout)
                status, text = response.status_code, response.content
                if 200 <= status < 300:
                    return status, text, self._reply_of(trigger, response)
            except httpx.HTTPError as exc:
                status, text = None, str(exc).encode()
            if not retryable(status) or attempt == attempts:
                break
            await asyncio.sleep(trigger.delivery.delay(attempt))
        return status, text, None

    async def _post(self, service: str, url: str, headers: dict, body: bytes, timeout: float) -> httpx.Response:
        """One attempt through the Service's queue (ServiceQueue): the dispatcher waits `timeout`
        (delivery.timeout) in all; Knative answers 504 once the revision's timeoutSeconds, counted
        from arrival (queue wait included), is spent first."""
        queue = self.queues.get(service)
        if queue is None:
            return await self.http.post(url, headers=headers, content=body, timeout=timeout)
        budget = min(timeout, queue.timeout)
        waited = await queue.acquire(budget)
        if waited is None:
            if queue.timeout <= timeout:
                return httpx.Response(504, content=b"activator request timeout (queued past timeoutSeconds)")
            raise httpx.ReadTimeout("delivery timeout while queued")
        try:
            left = budget - waited
            try:
                return await self.http.post(url, headers=headers, content=body, timeout=left)
            except httpx.TimeoutException:
                if queue.timeout <= timeout:
                    return httpx.Response(504, content=b"revision timeout (timeoutSeconds)")
                raise
        finally:
            queue.release()

    @staticmethod
    def _reply_of(trigger, response: httpx.Response):
        """The reply CloudEvent of a 2xx, None for an empty body, or INVALID_REPLY.

        eventing-kafka-broker treats a response whose body is not empty and cannot be read as a
        CloudEvent as a failed delivery and dead-letters the event (it is not retried: the
        subscriber did answer). A KafkaSource has no reply: its sink's body is discarded."""
        if not response.content or not isinstance(trigger, Trigger):
            return None
        try:
            return from_http(dict(response.headers), response.content)
        except Exception:  # the SDK raises several types for a body that is not a CloudEvent
            return INVALID_REPLY

    async def _dead_letter(self, trigger: Trigger, url: str, event: CloudEvent, status, body: bytes) -> None:
        topic = self.dead_letter_topic(trigger)
        log.warning("trigger %s: %s for job %s dead-lettered (status %s)", trigger.name, event["type"],
                    event.get_attributes().get("jobid"), status)
        if not topic:
            return
        attrs = dict(event.get_attributes())
        attrs["knativeerrordest"] = url
        # eventing-kafka-broker sets the code and the data only from a response: with no answer
        # (connection refused, timeout) the dead letter carries knativeerrordest alone.
        if status is not None:
            attrs["knativeerrorcode"] = str(status)
            if body:
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
                instance: str | None = None, queues: dict[str, ServiceQueue] | None = None) -> None:
    import uvicorn

    gate = auth.Gatekeeper(Settings.from_env())  # the broker process's entry: its settings, built once
    broker = Broker(routes, kafka, subscribers, gate=gate, instance=instance, queues=queues)
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
    parser.add_argument("--services", default=str(Path(__file__).resolve().parent.parent / "knative" / "base" / "services.yaml"),
                        help="Knative Services whose containerConcurrency and timeoutSeconds queue deliveries")
    parser.add_argument("--instance", default=None,
                        help="static consumer-group membership id (one per broker process); none: dynamic")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}')
    subscribers = dict(item.split("=", 1) for item in args.subscriber)
    asyncio.run(serve(load_routes(Path(args.eventing), args.broker), args.kafka, subscribers, args.port,
                      instance=args.instance, queues=service_queues(Path(args.services))))


if __name__ == "__main__":
    main()

"""Job-state changes on the Kafka topic `udb.job-events` (CloudEvents Kafka binary mode, key =
tenant), written with aiokafka.

Functions are synchronous (functions-framework serves Flask), so the producer lives on an event
loop in a daemon thread and `publish` waits for Kafka's acknowledgement there.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any
from datetime import datetime, timezone

from cloudevents.http import CloudEvent

from shared.core import bindings
from shared.core.errors import TransientError

JOB_EVENT_TYPE = "dev.udb.job.changed"


def job_event(doc: dict) -> CloudEvent:
    attrs = {"type": JOB_EVENT_TYPE, "source": "/udb/jobs", "subject": doc["job_id"], "id": str(uuid.uuid4()),
             "time": datetime.now(timezone.utc).isoformat(), "datacontenttype": "application/json",
             "tenant": doc["tenant"], "jobid": doc["job_id"], "partitionkey": doc["tenant"]}
    if doc.get("traceparent"):
        attrs["traceparent"] = doc["traceparent"]
    return CloudEvent(attrs, doc)


class KafkaJobEvents:
    def __init__(self, bootstrap: str, topic: str, timeout: float = 10.0):
        self.bootstrap, self.topic, self.timeout = bootstrap, topic, timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="udb-job-events", daemon=True)
        self._thread.start()
        self._producer: Any = None  # aiokafka's AIOKafkaProducer once started (aiokafka is untyped)
        self._lock = threading.Lock()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout + 5)

    async def _start(self):
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                    request_timeout_ms=int(self.timeout * 1000))
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # its client's tasks and half-open connections go too
            raise
        return producer

    def _producer_now(self):
        """The one long-lived producer, started on first use (publish or ping)."""
        with self._lock:
            if self._producer is None:
                self._producer = self._run(self._start())
            return self._producer

    def _drop_producer(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                self._run(producer.stop())
            except Exception:
                pass

    def publish(self, doc: dict, patience: float = 30.0) -> None:
        """Publish one job-state change, riding out a short Kafka restart; past `patience`
        seconds raise TransientError (the function answers 503 and the broker redelivers)."""
        key, value, headers = bindings.to_kafka(job_event(doc))
        deadline = time.monotonic() + patience
        while True:
            try:
                producer = self._producer_now()
                self._run(producer.send_and_wait(self.topic, value=value, key=key, headers=headers))
                return
            except Exception as exc:  # aiokafka and futures raise several types when Kafka is away
                self._drop_producer()
                if time.monotonic() > deadline:
                    raise TransientError(f"kafka: cannot publish job event: {exc}") from exc
                time.sleep(1)

    def ping(self) -> None:
        """Raise when Kafka does not answer (the readiness checks). A metadata request over the
        producer's own connections: a probe never opens a client of its own (an admin client
        per probe was a new TCP connection, a bootstrap and an API-version handshake each)."""
        producer = self._producer_now()
        self._run(producer.client.fetch_all_metadata())

    def close(self) -> None:
        """Stop the producer (flushing what it holds) and the event loop's thread."""
        self._drop_producer()
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


def decode(value: bytes) -> dict:
    return json.loads(value)

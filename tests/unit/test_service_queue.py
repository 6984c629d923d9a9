"""The stack's model of Knative Serving in front of a function (devstack/broker.ServiceQueue):
containerConcurrency slots, and the revision's timeoutSeconds counted from arrival, so time
queued behind other requests counts (Knative's activator answers 504 past it). The function is a
named test peer: a real HTTP server on loopback that takes a fixed time per request."""
from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cloudevents.http import CloudEvent

from devstack.broker import Broker, ServiceQueue, service_queues
from shared.core.routing import Delivery, Routes, Trigger

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def slow_function():
    """Takes 0.4 s per request; records how many run at once."""
    state = {"in_flight": 0, "max": 0, "lock": threading.Lock()}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"] or 0))
            with state["lock"]:
                state["in_flight"] += 1
                state["max"] = max(state["max"], state["in_flight"])
            time.sleep(0.4)
            with state["lock"]:
                state["in_flight"] -= 1
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", state
    server.shutdown()


def test_the_queues_come_from_the_knative_services():
    queues = service_queues(REPO / "knative" / "base" / "services.yaml")
    assert {n: (q.concurrency, q.timeout) for n, q in queues.items()} == {
        "udb-discover": (0, 120.0), "udb-sync": (4, 600.0), "udb-writer": (1, 600.0), "udb-analyze": (1, 600.0), "udb-reports": (1, 600.0),
        "udb-artifacts": (0, 300.0), "udb-discover-api": (0, 120.0), "udb-artifacts-api": (0, 300.0)}


def _deliveries(url: str, queue: ServiceQueue, delivery_timeout: float, n: int) -> list:
    trigger = Trigger(name="t", broker="b", subscriber="svc", delivery=Delivery(retry=0, timeout=delivery_timeout))
    broker = Broker(Routes("b", "ns", [trigger], Delivery()), "unused:0", {"svc": url}, queues={"svc": queue})
    event = CloudEvent({"type": "test.x", "source": "/t"}, {"n": 1})

    async def run():
        broker.http = httpx.AsyncClient()
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(broker._deliver(trigger, url, event) for _ in range(n)))
            return [status for status, _, _ in results], time.monotonic() - started
        finally:
            await broker.http.aclose()

    return asyncio.run(run())


def test_container_concurrency_one_serializes_and_the_queue_wait_counts_toward_the_timeout(slow_function):
    url, state = slow_function
    # Revision timeout 1.0 s, concurrency 1, 0.4 s per request: 2 fit (0.4, 0.8 s), the third
    # would end at 1.2 s after it arrived, so Knative answers it 504.
    queue = ServiceQueue("svc", concurrency=1, timeout=1.0)
    statuses, took = _deliveries(url, queue, delivery_timeout=10, n=3)
    assert sorted(statuses) == [202, 202, 504]
    assert state["max"] == 1 and queue.max_queued == 3
    assert 0.95 <= took < 1.5


def test_a_shorter_delivery_timeout_gives_up_without_an_answer(slow_function):
    url, state = slow_function
    # The Trigger's delivery.timeout (0.6 s) is shorter than the revision's: the dispatcher
    # gives up on the queued request itself (no answer, None), not Knative (504).
    statuses, _ = _deliveries(url, ServiceQueue("svc", concurrency=1, timeout=30), delivery_timeout=0.6, n=2)
    assert sorted(statuses, key=str) == [202, None]


def test_no_limit_runs_all_at_once(slow_function):
    url, state = slow_function
    statuses, took = _deliveries(url, ServiceQueue("svc", concurrency=0, timeout=1.0), delivery_timeout=10, n=4)
    assert statuses == [202] * 4 and state["max"] == 4 and took < 0.9

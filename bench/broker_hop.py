"""Latency of one broker hop: HTTP ingress -> Kafka -> Trigger consumer -> subscriber.

Needs Kafka (`python -m devstack.services up kafka`). Runs the local broker in-process with a
one-Trigger routing table and a subscriber that notes when each event arrives.
Usage: python bench/broker_hop.py [N]
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn
from cloudevents.http import CloudEvent, to_binary

from devstack import services
from devstack.broker import Broker
from shared.core.routing import load_routes

ROUTES = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: bench, namespace: bench-%(run)s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: ping-%(run)s, namespace: bench-%(run)s}
spec:
  broker: bench
  filter: {attributes: {type: dev.udb.bench.ping}}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: udb-bench}}
"""


def main(n: int = 200) -> None:
    services.up(["kafka"])
    arrived: dict[str, float] = {}

    class Subscriber(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"] or 0))
            arrived[self.headers["ce-id"]] = time.perf_counter()
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    sub = ThreadingHTTPServer(("127.0.0.1", 0), Subscriber)
    threading.Thread(target=sub.serve_forever, daemon=True).start()
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "routes.yaml").write_text(ROUTES % {"run": run})
        routes = load_routes(Path(tmp), "bench")
    sent = asyncio.run(_drive(routes, f"http://127.0.0.1:{sub.server_address[1]}/", n, arrived))
    sub.shutdown()
    hops = sorted((arrived[i] - t) * 1000 for i, t in sent.items() if i in arrived)
    q = statistics.quantiles(hops, n=100)
    print(f"| events | delivered | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|\n"
          f"| {n} | {len(hops)} | {q[49]:.1f} | {q[94]:.1f} | {hops[-1]:.1f} |")


async def _drive(routes, url: str, n: int, arrived: dict) -> dict:
    broker = Broker(routes, services.endpoints()["kafka"], {"udb-bench": url})
    await broker.start()
    server = uvicorn.Server(uvicorn.Config(broker.asgi, host="127.0.0.1", port=0, log_level="warning",
                                             interface="asgi3", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    ingress = f"http://127.0.0.1:{port}/{routes.namespace}/{routes.broker}"
    sent = {}
    async with httpx.AsyncClient() as client:
        for i in range(n + 20):  # the first 20 warm the consumer group up and are not counted
            event = CloudEvent({"type": "dev.udb.bench.ping", "source": "/bench", "partitionkey": "bench"}, {"i": i})
            headers, body = to_binary(event)
            t = time.perf_counter()
            response = await client.post(ingress, headers=headers, content=body)
            assert response.status_code == 202, response.text
            if i >= 20:
                sent[event["id"]] = t
            deadline = time.monotonic() + 10
            while event["id"] not in arrived and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
    server.should_exit = True
    await task
    await broker.stop()
    return sent


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)

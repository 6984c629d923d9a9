"""A subscriber of the broker, as a test peer: an HTTP server on 127.0.0.1 that records every
CloudEvent delivered to it and answers as the test says (tests of the stack's broker)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.http import CloudEvent, from_http


class Subscriber:
    """Records every delivery; `answer(event) -> (status, headers, body)` decides the reply."""

    def __init__(self, answer=None):
        self.received: list[tuple[float, CloudEvent]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.answer = answer or (lambda event: (202, {}, b""))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"] or 0))
                event = from_http(dict(self.headers), body)
                with owner.lock:
                    owner.received.append((time.monotonic(), event))
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    status, headers, data = owner.answer(event)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.received]

    def times(self, job: str) -> list[float]:
        """When each delivery for `job` arrived."""
        return [t for t, e in self.received if e["jobid"] == job]

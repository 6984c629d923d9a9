"""An S3 endpoint with one bucket and no objects, as a test peer: an HTTP/1.1 server on
127.0.0.1 that answers HeadBucket (HEAD /<bucket>) and counts every request and every TCP
connection, so a test can say how often a function reached its object store and over how many
connections (the lifecycle's readiness tests)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class S3Bucket:
    def __init__(self, bucket: str = "udb"):
        self.bucket = bucket
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.connections = 0   # accepted
        self.open = 0          # accepted and not yet closed by either side
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3 does: a client reuses its connection

            def setup(self):
                super().setup()
                with owner.lock:
                    owner.connections += 1
                    owner.open += 1

            def finish(self):
                try:
                    super().finish()
                finally:
                    with owner.lock:
                        owner.open -= 1

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if body:
                    self.send_header("Content-Type", "application/xml")
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                with owner.lock:
                    owner.requests.append(("HEAD", self.path))
                self._answer(200 if self.path.rstrip("/") == f"/{owner.bucket}" else 404)

            def do_GET(self):
                with owner.lock:
                    owner.requests.append(("GET", self.path))
                self._answer(404, b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="s3-bucket-peer", daemon=True)

    def head_bucket_count(self) -> int:
        with self.lock:
            return sum(1 for method, path in self.requests
                       if method == "HEAD" and path.rstrip("/") == f"/{self.bucket}")

    def __enter__(self) -> "S3Bucket":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A scripted OAuth 2.0 token endpoint (RFC 6749 section 5) on 127.0.0.1, for tests of the
token calls themselves: each POST gets the next scripted (status, body) answer and its form is
recorded. `with TokenEndpoint() as peer: peer.answers.append((200, {...}))`; `peer.url`.
(The full authorization server with real grants is tests/peers/oauth_server.py.)"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class TokenEndpoint:
    def __init__(self) -> None:
        self.answers: list[tuple[int, dict | list | bytes]] = []
        self.forms: list[dict[str, str]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                peer.forms.append({k: v[0] for k, v in parse_qs(body).items()})
                status, answer = peer.answers.pop(0) if peer.answers else (500, {"error": "no_answer_scripted"})
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "TokenEndpoint":
        # A short poll so that shutdown() returns at once, not after the default half second.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

"""The guarded egress proxy (shared/security/egressproxy.py) that DuckDB and boto3 use for an S3 named in a
hint: every destination, CONNECT or plain http, is checked by the SSRF guard before connecting."""
from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from shared.security.egressproxy import EgressProxy
from shared.core.settings import Settings

pytestmark = pytest.mark.security


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(1024):
            self.request.sendall(data.upper())


@pytest.fixture
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _ask(proxy: EgressProxy, request: bytes) -> tuple[socket.socket, bytes]:
    host, port = proxy.address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(request)
    return sock, sock.recv(4096)


def test_connect_tunnels_to_an_admitted_address_and_refuses_the_rest(echo):
    with EgressProxy(Settings.from_env(env={"UDB_NET_ALLOWLIST": "127.0.0.1"})) as proxy:
        sock, answer = _ask(proxy, f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
        sock.sendall(b"tls bytes")
        assert sock.recv(1024) == b"TLS BYTES"
        sock.close()
        for target in (f"127.0.0.2:{echo}", "169.254.169.254:80", "10.0.0.1:443"):
            sock, answer = _ask(proxy, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 403 Forbidden") and b"refused to connect" in answer, target
            sock.close()
        assert len(proxy.refused) == 3


def test_plain_http_is_checked_and_forwarded_in_origin_form(echo):
    with EgressProxy(Settings.from_env(env={"UDB_NET_ALLOWLIST": "127.0.0.1"})) as proxy:
        sock, answer = _ask(proxy, f"GET http://127.0.0.1:{echo}/b/k?x=1 HTTP/1.1\r\nHost: h\r\n"
                                   f"Connection: keep-alive\r\n\r\n".encode())
        # The echo server upper-cases what it got: the request as the origin sees it.
        assert answer.startswith(b"GET /B/K?X=1 HTTP/1.1\r\nHOST: H\r\nCONNECTION: CLOSE\r\n\r\n")
        sock.close()
        sock, answer = _ask(proxy, b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 403") and b"metadata" in answer
        sock.close()
        sock, answer = _ask(proxy, b"GET /relative HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
        sock.close()

"""A local forward proxy that puts the SSRF guard in front of connections UDB does not open itself.

DuckDB's httpfs makes its own connections and follows redirects on its own: an S3 endpoint named
in a hint's options could answer `302 Location: http://169.254.169.254/...` and DuckDB would read
the metadata service as if it were the object (tried: it does). `netguard.check_url` on the
endpoint cannot see that. So DuckDB is told to use this proxy (`SET http_proxy`), and the proxy
checks the destination of every connection DuckDB asks for — the first request and each
redirect hop — with the same guard, then connects to the checked address (no second lookup):

- `CONNECT host:port` (https): checked, then a blind TCP tunnel (TLS stays end to end);
- `GET http://host:port/path` (plain http, absolute form): checked, then the request is sent on
  in origin form with `Connection: close`, and the answer piped back.

A refused destination gets `403` with the guard's reason, which DuckDB reports as an HTTP error.
The proxy listens on 127.0.0.1 on a free port, lives for one `with` block and serves only the
process that opened it.
"""
from __future__ import annotations

import socket
import socketserver
import threading
from urllib.parse import urlsplit

from shared.security import netguard
from shared.core.errors import SourceError

HEAD_LIMIT = 64 * 1024      # a request head larger than this is refused
IDLE_SECONDS = 60.0         # a tunnel with no bytes either way for this long is closed


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        client = self.request
        client.settimeout(IDLE_SECONDS)
        try:
            head = _read_head(client)
        except (OSError, ValueError):
            return
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            return _answer(client, 400, "malformed request line")
        try:
            if method.upper() == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = self.server.connect(host.strip("[]"), int(port))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pipe(client, upstream, b"")
                return
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                return _answer(client, 400, "absolute http:// URL or CONNECT expected")
            upstream = self.server.connect(url.hostname, url.port or 80)
        except SourceError as exc:
            self.server.refused.append(str(exc))
            return _answer(client, 403, str(exc))
        except (OSError, ValueError) as exc:
            return _answer(client, 502, f"cannot connect: {exc}")
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        headers = [line for line in rest.split(b"\r\n") if line and not line.lower().startswith(
            (b"connection:", b"proxy-connection:", b"keep-alive:"))]
        forwarded = f"{method} {path} {version}\r\n".encode("latin-1") + b"\r\n".join(
            headers + [b"Connection: close"]) + b"\r\n\r\n"
        _pipe(client, upstream, forwarded)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, settings):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.settings = settings
        self.refused: list[str] = []

    def connect(self, host: str, port: int) -> socket.socket:
        addresses = netguard.check_host(host, port, self.settings)  # raises BlockedAddress
        last: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout=netguard.CONNECT_TIMEOUT)
            except OSError as exc:
                last = exc
        raise last or OSError(f"no address of {host}")


class EgressProxy:
    """`with EgressProxy(settings) as proxy:` then `SET http_proxy = proxy.address`."""

    def __init__(self, settings=None):
        self._server = _Server(settings)
        self._thread = threading.Thread(target=self._server.serve_forever, name="udb-egress-proxy", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def refused(self) -> list[str]:
        """The guard's reasons for every destination refused so far (to name in an error)."""
        return list(self._server.refused)

    def __enter__(self) -> "EgressProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ValueError("connection closed before the request head ended")
        data += chunk
        if len(data) > HEAD_LIMIT:
            raise ValueError("request head too large")
    head, _, body = data.partition(b"\r\n\r\n")
    if body:
        # Only bodiless requests (GET, HEAD) are expected from DuckDB's reads; keep any body.
        sock._udb_pending = body  # type: ignore[attr-defined]
    return head


def _answer(sock: socket.socket, status: int, reason: str) -> None:
    body = reason.encode("utf-8", "replace")
    phrase = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    try:
        sock.sendall(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    except OSError:
        pass


def _pipe(client: socket.socket, upstream: socket.socket, first: bytes) -> None:
    """Copy bytes both ways until either side closes or stays idle past IDLE_SECONDS."""
    upstream.settimeout(IDLE_SECONDS)
    pending = getattr(client, "_udb_pending", b"")
    try:
        if first or pending:
            upstream.sendall(first + pending)

        def up() -> None:
            try:
                while chunk := client.recv(65536):
                    upstream.sendall(chunk)
            except OSError:
                pass
            finally:
                try:
                    upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        sender = threading.Thread(target=up, daemon=True)
        sender.start()
        try:
            while chunk := upstream.recv(65536):
                client.sendall(chunk)
        except OSError:
            pass
        try:
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sender.join(timeout=IDLE_SECONDS)
    finally:
        upstream.close()

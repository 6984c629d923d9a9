"""A WSGI layer ahead of functions-framework: nothing reads a request body before it is allowed.

functions-framework reads every body whole (its `after_request` calls `get_data()`), after the
function answered, so a 401 or 413 used to go out only once the body was in memory, and a
client sending slowly kept a gunicorn thread for as long as it liked. This layer runs first
(`FunctionApp` wraps the Flask app's `wsgi_app` with it) and, from the headers alone:

1. refuses a declared body above its cap (UDB_MAX_BODY_BYTES, UDB_MAX_UPLOAD_BYTES): 413;
2. checks the credentials (`Gatekeeper.pre_admit`): a bad one is 401, a caller without any is
   rate-limited per client address (429) and, on a route that needs credentials, refused (401)
   — both without reading a byte of the body;
3. lets one address without credentials send at most UDB_ANON_BODY_READERS bodies at once, and
   all such addresses together UDB_ANON_BODY_READERS_TOTAL (429), so however slow they are,
   the rest of gunicorn's THREADS serve probes and callers with credentials;
4. reads the body into a spooled buffer under a deadline of UDB_BODY_TIMEOUT_SECONDS plus its
   size at UDB_BODY_MIN_RATE: a sender slower than that gets 408.

Every refusal here closes the connection (gunicorn's `Body.failed`), so gunicorn does not drain
a body nobody wants to read. The application then reads the buffered body from memory (or a
temporary file above 1 MiB), never from the socket.
"""
from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections import Counter

from shared.security import auth
from shared.core.errors import TransientError

SPOOL_BYTES = 1024 * 1024  # bodies above this are buffered in a temporary file
CHUNK = 64 * 1024


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class BodyGuard:
    """WSGI middleware: `BodyGuard(app, gate)`, `gate()` returning the process's Gatekeeper."""

    def __init__(self, app, gate):
        self.app = app
        self.gate = gate
        self._readers: Counter[str] = Counter()  # anonymous address -> bodies being read now
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        try:
            body = self._admit(environ)
        except _Refused as refused:
            return self._refuse(environ, start_response, refused)
        if body is not None:
            environ["wsgi.input"] = body
        return self.app(environ, start_response)

    # -- the checks, from the headers first
    def _admit(self, environ):
        gate = self.gate()
        length, chunked = _declared_length(environ)
        has_body = chunked or (length or 0) > 0
        path = environ.get("PATH_INFO") or "/"
        limit, setting = gate.body_limit(path)
        if length is not None and 0 < limit < length:
            raise _Refused(413, f"request body of {length:,} bytes is above the limit of {limit:,} bytes ({setting})")
        try:
            principal = gate.pre_admit(environ, has_body=has_body)
        except auth.HTTP_ERRORS as exc:
            body, status, headers = auth.http_error(exc)
            raise _Refused(status, body["error"], headers) from None
        except TransientError:  # the key store is down: no credential can be checked now
            raise _Refused(503, "a dependency of UDB is unavailable; retry later", {"Retry-After": "1"}) from None
        if not has_body:
            return None
        address = environ.get("REMOTE_ADDR") or "?"
        anonymous = principal is None
        if anonymous:
            self._enter(address, gate.settings.anon_body_readers, gate.settings.anon_body_readers_total)
        try:
            return self._read(environ, gate, length, limit, setting)
        finally:
            if anonymous:
                self._leave(address)

    def _enter(self, address: str, cap: int, total: int) -> None:
        with self._lock:
            if cap > 0 and self._readers[address] >= cap:
                raise _Refused(429, f"{address} is already sending {cap} request bodies without credentials "
                                    f"(UDB_ANON_BODY_READERS); retry when one has arrived", {"Retry-After": "1"})
            if total > 0 and sum(self._readers.values()) >= total:
                # Many addresses at once: the threads left stay for probes and callers with credentials.
                raise _Refused(429, f"{total} request bodies without credentials are arriving already "
                                    f"(UDB_ANON_BODY_READERS_TOTAL); retry shortly", {"Retry-After": "1"})
            self._readers[address] += 1

    def _leave(self, address: str) -> None:
        with self._lock:
            self._readers[address] -= 1
            if self._readers[address] <= 0:
                del self._readers[address]

    # -- reading under a deadline
    def _read(self, environ, gate, length: int | None, limit: int, setting: str):
        settings = gate.settings
        expected = length if length is not None else limit
        allowed = settings.body_timeout_seconds + (expected or 0) / max(1, settings.body_min_rate)
        deadline = time.monotonic() + allowed
        sock = environ.get("gunicorn.socket")
        # At the deadline the read side is shut: a blocked recv() returns at once, whatever
        # pace the sender keeps (a per-recv timeout would restart with every byte it drips).
        timed = sock is not None and settings.body_timeout_seconds > 0  # 0 turns the deadline off
        timer = threading.Timer(allowed, _shut_reading, (sock,)) if timed else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        stream = environ["wsgi.input"]
        buffer = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        received = 0
        try:
            while length is None or received < length:
                want = CHUNK if length is None else min(CHUNK, length - received)
                try:
                    block = stream.read(want)
                except Exception as exc:  # a reset, a malformed chunk (gunicorn's parse errors)
                    if time.monotonic() >= deadline:
                        block = b""
                    else:
                        raise _Refused(400, f"request body could not be read: {type(exc).__name__}") from None
                if not block:
                    break
                received += len(block)
                if 0 < limit < received:
                    raise _Refused(413, f"request body is above the limit of {limit:,} bytes ({setting})")
                buffer.write(block)
        except BaseException:
            buffer.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if length is not None and received < length:
            buffer.close()
            if timer is not None and time.monotonic() >= deadline - 0.05:
                raise _Refused(408, f"request body too slow: {received:,} of {length:,} bytes in {allowed:.0f} s "
                                    f"(UDB_BODY_TIMEOUT_SECONDS, UDB_BODY_MIN_RATE)")
            raise _Refused(400, f"request body ended after {received:,} of {length:,} bytes")
        buffer.seek(0)
        environ["CONTENT_LENGTH"] = str(received)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = True
        return buffer

    # -- answering without the application
    @staticmethod
    def _refuse(environ, start_response, refused: _Refused):
        _close_after(environ)
        payload = json.dumps({"error": str(refused)}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                   ("Connection", "close"), *refused.headers.items()]
        start_response(f"{refused.status} {_REASONS.get(refused.status, 'Error')}", headers)
        return _ClosingAnswer(payload, environ.get("gunicorn.socket"))


class _ClosingAnswer:
    """A refusal's body; once gunicorn has sent it (and calls `close()`), both directions of the
    socket are shut. gunicorn's own graceful close lingers up to 2 s on its main loop for a
    client that keeps the connection open, which is exactly what a slow attacker does."""

    def __init__(self, payload: bytes, sock):
        self.payload, self.sock = payload, sock

    def __iter__(self):
        yield self.payload

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 408: "Request Timeout",
            413: "Content Too Large", 429: "Too Many Requests"}


def _declared_length(environ) -> tuple[int | None, bool]:
    chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    raw = environ.get("CONTENT_LENGTH") or ""
    if chunked or not raw:
        return None, chunked
    try:
        return max(0, int(raw)), False
    except ValueError:
        return None, False


def _shut_reading(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # closed meanwhile


def _close_after(environ) -> None:
    """Make gunicorn close the connection after this answer instead of draining the unread body
    to find the next request: it does so for a body whose reading failed (`Body.failed`)."""
    body = environ.get("wsgi.input")
    if hasattr(body, "failed"):
        body.failed = True


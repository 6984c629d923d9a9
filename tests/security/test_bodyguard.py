"""Pre-authentication denial of service (issue 16, finding 2), attacked over sockets on a real
functions-framework (gunicorn gthread) process: slow bodies, a huge declared body, floods."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest

from tests.function_server import serve

pytestmark = pytest.mark.security


def _open(server, request_head: str, body: bytes = b"", source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0))
    sock.sendall(request_head.encode() + body)
    return sock


def _status(sock: socket.socket, timeout: float) -> int | None:
    """The status code the server answered on `sock` within `timeout` s; None: no answer yet."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(4096)
    except (TimeoutError, socket.timeout):
        return None
    except ConnectionResetError:
        return -1
    return int(head.split(b" ", 2)[1]) if head else 0


def _closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` within `timeout` s. What it still sends before closing
    (the rest of a response already started: a head can arrive in one segment and its body in
    the next) is read and dropped."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except (TimeoutError, socket.timeout):
        return False
    return False


def _timed_healthz(server) -> float:
    started = time.monotonic()
    status, body, _ = server.get("/healthz", timeout=1)
    assert (status, body) == (200, b"ok")
    return time.monotonic() - started


def test_slow_bodies_never_starve_healthz_and_are_cut_off(tmp_path):
    with serve("discover", tmp_path / "home", UDB_BODY_TIMEOUT_SECONDS=3) as server:
        # Ten anonymous callers declare 1000 bytes and send 3 to the job entry point, and six
        # more do the same to a public route (which does read an anonymous body), all at once,
        # more than the 8 threads the server has.
        slow = [_open(server, "POST /sources/discover_connect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                              "\r\nContent-Length: 1000\r\n\r\n", b'{"h') for _ in range(10)]
        public = [_open(server, "GET /openapi.json HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"abc")
                  for _ in range(6)]
        try:
            time.sleep(0.5)
            latencies = [_timed_healthz(server) for _ in range(5)]
            assert max(latencies) < 1.0, latencies
            # The job entry point refused them at once without reading (credentials come first);
            # of the public route's six, two are being read (UDB_ANON_BODY_READERS) and four refused.
            assert [_status(s, 2) for s in slow] == [401] * 10
            early = [_status(s, 0.5) for s in public]
            assert sorted(early, key=str) == sorted([429] * 4 + [None] * 2, key=str), early
            latencies += [_timed_healthz(server) for _ in range(3)]
            # Those two get 408 once their 3 s are up, and the connection is closed.
            waiting = [s for s, status in zip(public, early) if status is None]
            assert [_status(s, 5) for s in waiting] == [408, 408]
            for sock in slow + waiting:
                assert _closed(sock, 2)  # closed: nothing more is read from it
            assert max(latencies) < 1.0, latencies
        finally:
            for sock in slow + public:
                sock.close()


def test_slow_bodies_from_many_addresses_leave_threads_for_healthz(tmp_path):
    with serve("discover", tmp_path / "home", UDB_BODY_TIMEOUT_SECONDS=3) as server:
        # Twelve slow senders from six loopback addresses (two each, within the per-address cap).
        slow = [_open(server, "GET /openapi.json HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"abc",
                      source=f"127.0.0.{2 + i // 2}") for i in range(12)]
        try:
            time.sleep(0.5)
            latencies = [_timed_healthz(server) for _ in range(5)]
            early = [_status(s, 0.5) for s in slow]
            # Four are being read (UDB_ANON_BODY_READERS_TOTAL), eight refused at once.
            assert (early.count(None), early.count(429)) == (4, 8), early
            assert max(latencies) < 1.0, latencies
            assert [_status(s, 5) for s, status in zip(slow, early) if status is None] == [408] * 4
        finally:
            for sock in slow:
                sock.close()


def test_a_huge_anonymous_body_gets_413_without_growing_the_worker(tmp_path):
    declared = 300 * 1024 * 1024
    with serve("discover", tmp_path / "home") as server:
        assert server.get("/healthz")[0] == 200
        before = server.rss_bytes(peak=True)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(f"POST /sources/discover_connect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode())
        answer, sent = [], [0]

        def read_answer():
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                        data.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]):
                    more = sock.recv(65536)
                    if not more:
                        break
                    data += more
            answer.append(data)

        reader = threading.Thread(target=read_answer)
        reader.start()
        block = b"x" * (1024 * 1024)
        with contextlib.suppress(OSError):  # the server closes the connection: reset or broken pipe
            while sent[0] < declared:
                sock.sendall(block)
                sent[0] += len(block)
        reader.join(30)
        sock.close()
        after = server.rss_bytes(peak=True)
        print(f"worker peak RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB; {sent[0] / 2**20:.0f} MiB sent")
        assert answer and answer[0].startswith(b"HTTP/1.1 413 "), answer
        body = json.loads(answer[0].split(b"\r\n\r\n", 1)[1])
        assert body == {"error": f"request body of {declared:,} bytes is above the limit of 4,194,304 bytes "
                                 f"(UDB_MAX_BODY_BYTES)"}
        assert after - before < 20 * 1024 * 1024, (before, after)  # peak resident set (VmHWM)
        assert sent[0] < declared  # the server stopped taking it
        assert server.get("/healthz")[0] == 200


def test_anonymous_floods_are_limited_per_address(tmp_path):
    with serve("discover", tmp_path / "home", UDB_RATE_LIMIT=1, UDB_RATE_BURST=5) as server:
        statuses, retry_after = [], set()
        for _ in range(30):
            sock = _open(server, "POST /sources/discover_connect HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                 "application/json\r\nContent-Length: 2\r\n\r\n", b"{}")
            sock.settimeout(5)
            head = sock.recv(4096)
            sock.close()
            statuses.append(int(head.split(b" ", 2)[1]))
            if b"Retry-After:" in head:
                retry_after.add(head.split(b"Retry-After: ", 1)[1].split(b"\r\n")[0])
        assert statuses == [401] * 5 + [429] * 25
        assert retry_after == {b"60"}  # one token a minute
        # The probes are never limited; a caller with credentials has its tenant's bucket.
        assert [server.get("/healthz")[0] for _ in range(10)] == [200] * 10


def test_callers_with_credentials_get_the_same_deadline_and_caps(tmp_path):
    from shared.security import auth
    from tests.function_server import JWT_SECRET
    token = auth.mint_jwt(JWT_SECRET, "acme", "analyst")
    with serve("discover", tmp_path / "home", UDB_BODY_TIMEOUT_SECONDS=2, UDB_MAX_BODY_BYTES=100_000) as server:
        head = (f"POST /sources/discover_connect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\n")
        slow = _open(server, head + "Content-Length: 1000\r\n\r\n", b'{"h')
        chunk = b"x" * 50_000
        chunked = _open(server, head + "Transfer-Encoding: chunked\r\n\r\n",
                        (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
        try:
            assert _status(chunked, 5) == 413  # 150,000 bytes of chunks, above the 100,000 cap
            assert _status(slow, 1) is None    # still being read...
            assert _status(slow, 5) == 408     # ...until its 2 s are up
        finally:
            slow.close()
            chunked.close()

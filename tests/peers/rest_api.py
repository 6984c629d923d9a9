"""A local REST/JSON API test peer: paginated JSON in each common style, with auth, rate limits,
server errors and bad answers, plus static files. Built on http.server; runs in a thread
(`RestPeer().start()`) or as a process (`python -m tests.peers.rest_api --port 18099`).

Records are computed from their index, never held: record(i) for i in 1..total is
    {"id": i, "name": "item i", "price": i * 0.25, "active": i % 3 == 0,
     "updated_at": 2025-01-01T00:00:00Z + i minutes (ISO 8601, UTC),
     "owner": {"name": "owner (i % 7)", "address": {"city": "city (i % 5)", "geo": {"lat": i % 90, "lon": i % 180}}},
     "tags": ["t(i % 4)", "x"]}

Endpoints (query `total` and the page size override the defaults, `key` scopes counters):
    /link/items?page=&per_page=        top-level array, Link: <...>; rel="next"
    /next/items?after=&limit=          {"data": [...], "next": "<absolute URL>" | null}
    /odata/items?skip=&top=            {"value": [...], "@odata.nextLink": "..."}
    /cursor/items?cursor=&limit=       {"items": [...], "next_cursor": "c<n>" | null, "has_more": bool}
    /offset/items?offset=&limit=       {"results": [...], "offset": o, "limit": l, "total": N}
    /page/items?page=&per_page=        {"page": p, "per_page": k, "records": [...]} ([] past the end)
    /single/items                      {"meta": {...}, "data": {"rows": [...]}} (no pagination)
    /since/items?updated_since=&page=  page style; with updated_since only newer records
    /auth/bearer/items                 needs Authorization: Bearer <peer.token>
    /auth/key/items                    needs X-API-Key: <peer.api_key> or ?api_key=<peer.api_key>
    /auth/basic/items                  needs basic auth peer.user / peer.password
    /forbidden/items                   403
    /flaky/items?key=                  429 (Retry-After: 1), then 503, then the page style
    /down/items                        always 503
    /empty                             {"data": []}
    /notjson                           an HTML page
    /badjson                           Content-Type application/json, a cut-off body
    /huge?mb=                          one JSON page of about `mb` MiB
    /redirect?to=                      302 to `to`
    /files/<name>                      bytes registered in peer.files[name] = (body, content type)
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import threading
import sys
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

BASE_TIME = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
DEFAULT_TOTAL = 250
DEFAULT_PAGE = 50


def record(i: int) -> dict:
    return {"id": i, "name": f"item {i}", "price": i * 0.25, "active": i % 3 == 0,
            "updated_at": (BASE_TIME + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "owner": {"name": f"owner {i % 7}", "address": {"city": f"city {i % 5}",
                                                             "geo": {"lat": i % 90, "lon": i % 180}}},
            "tags": [f"t{i % 4}", "x"]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that stops reading early (a probe reads only the first bytes) is normal here.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class RestPeer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, total: int = DEFAULT_TOTAL):
        self.total = total
        self.token, self.api_key, self.user, self.password = "tok-3141", "key-2718", "ada", "lovelace"
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits: Counter = Counter()
        self.seen: list[tuple[str, str]] = []      # (path, query) of every request
        self.lock = threading.Lock()
        self.server = _Server((host, port), self._handler())
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "RestPeer":
        self.thread = threading.Thread(target=self.server.serve_forever, name="rest-peer", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ pages

    def _handler(self):
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                with peer.lock:
                    peer.hits[parts.path] += 1
                    peer.seen.append((parts.path, parts.query))
                try:
                    peer.route(self, parts.path, query)
                except BrokenPipeError:
                    pass

            do_HEAD = do_GET

            def do_PROPFIND(self):
                self.send_response(405)
                self.send_header("Allow", "GET, HEAD")
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def base(self, handler) -> str:
        return f"http://{handler.headers.get('Host') or self.url.split('://', 1)[1]}"

    @staticmethod
    def send(handler, status: int, body: bytes | str | dict | list, ctype: str = "application/json",
             headers: dict | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def route(self, h, path: str, q: dict) -> None:
        total = int(q.get("total", self.total))
        if path.startswith("/files/"):
            name = path[len("/files/"):]
            if name not in self.files:
                return self.send(h, 404, {"error": "no such file"})
            body, ctype = self.files[name]
            return self.send(h, 200, body, ctype)
        if path == "/link/items":
            page, size = int(q.get("page", 1)), int(q.get("per_page", DEFAULT_PAGE))
            start = (page - 1) * size
            rows = [record(i) for i in range(start + 1, min(total, start + size) + 1)]
            headers = {}
            if start + size < total:
                nxt = {**q, "page": page + 1, "per_page": size}
                headers["Link"] = f'<{self.base(h)}/link/items?{urlencode(nxt)}>; rel="next"'
            return self.send(h, 200, rows, headers=headers)
        if path == "/next/items":
            after, size = int(q.get("after", 0)), int(q.get("limit", DEFAULT_PAGE))
            rows = [record(i) for i in range(after + 1, min(total, after + size) + 1)]
            nxt = f"{self.base(h)}/next/items?{urlencode({**q, 'after': after + size, 'limit': size})}" \
                if after + size < total else None
            return self.send(h, 200, {"data": rows, "next": nxt})
        if path == "/odata/items":
            skip, top = int(q.get("skip", 0)), int(q.get("top", DEFAULT_PAGE))
            rows = [record(i) for i in range(skip + 1, min(total, skip + top) + 1)]
            body = {"@odata.context": "items", "value": rows}
            if skip + top < total:
                body["@odata.nextLink"] = f"/odata/items?{urlencode({**q, 'skip': skip + top, 'top': top})}"
            return self.send(h, 200, body)
        if path == "/cursor/items":
            at = int(q.get("cursor", "c0")[1:] or 0)
            size = int(q.get("limit", DEFAULT_PAGE))
            rows = [record(i) for i in range(at + 1, min(total, at + size) + 1)]
            more = at + size < total
            return self.send(h, 200, {"items": rows, "next_cursor": f"c{at + size}" if more else None,
                                      "has_more": more})
        if path == "/offset/items":
            offset, limit = int(q.get("offset", 0)), int(q.get("limit", DEFAULT_PAGE))
            rows = [record(i) for i in range(offset + 1, min(total, offset + limit) + 1)]
            return self.send(h, 200, {"results": rows, "offset": offset, "limit": limit, "total": total})
        if path in ("/page/items", "/flaky/items", "/auth/bearer/items", "/auth/key/items",
                    "/auth/basic/items", "/since/items"):
            if path == "/flaky/items":
                n = self.hits[f"flaky:{q.get('key', '')}"] = self.hits[f"flaky:{q.get('key', '')}"] + 1
                if n == 1:
                    return self.send(h, 429, {"error": "slow down"}, headers={"Retry-After": "1"})
                if n == 2:
                    return self.send(h, 503, {"error": "try again"})
            if path == "/auth/bearer/items" and h.headers.get("Authorization") != f"Bearer {self.token}":
                return self.send(h, 401, {"error": "bearer token required"}, headers={"WWW-Authenticate": "Bearer"})
            if path == "/auth/key/items" and self.api_key not in (h.headers.get("X-API-Key"), q.get("api_key")):
                return self.send(h, 401, {"error": "api key required"})
            if path == "/auth/basic/items":
                wanted = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
                if h.headers.get("Authorization") != wanted:
                    return self.send(h, 401, {"error": "login"}, headers={"WWW-Authenticate": 'Basic realm="peer"'})
            page, size = int(q.get("page", 1)), int(q.get("per_page", DEFAULT_PAGE))
            first = 1
            if path == "/since/items" and q.get("updated_since"):
                since = dt.datetime.strptime(q["updated_since"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
                first = int((since - BASE_TIME).total_seconds() // 60) + 1
            start = first - 1 + (page - 1) * size
            rows = [record(i) for i in range(start + 1, min(total, start + size) + 1)]
            return self.send(h, 200, {"page": page, "per_page": size, "records": rows})
        if path == "/single/items":
            return self.send(h, 200, {"meta": {"count": total, "generated": "now"},
                                      "data": {"rows": [record(i) for i in range(1, total + 1)]}})
        if path == "/forbidden/items":
            return self.send(h, 403, {"error": "forbidden"})
        if path == "/down/items":
            return self.send(h, 503, {"error": "down"})
        if path == "/empty":
            return self.send(h, 200, {"data": [], "total": 0})
        if path == "/badjson":
            return self.send(h, 200, '{"data": [{"id": 1}, {"id": 2', "application/json")
        if path == "/notjson":
            return self.send(h, 200, "<html><body><h1>Welcome</h1><p>Not an API.</p></body></html>", "text/html")
        if path == "/huge":
            target = int(float(q.get("mb", 2)) * 1024 * 1024)
            one = json.dumps(record(1)).encode()
            n = target // (len(one) + 1) + 1
            body = b'{"data": [' + b",".join(one for _ in range(n)) + b"]}"
            return self.send(h, 200, body)
        if path == "/redirect":
            h.send_response(302)
            h.send_header("Location", q.get("to", "/"))
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if path == "/slow":
            time.sleep(float(q.get("s", 1)))
            return self.send(h, 200, {"data": [record(1)]})
        return self.send(h, 404, {"error": f"no route {path}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18099)
    parser.add_argument("--total", type=int, default=DEFAULT_TOTAL)
    args = parser.parse_args()
    peer = RestPeer(args.host, args.port, args.total)
    print(f"rest peer at {peer.url}", flush=True)
    try:
        peer.server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

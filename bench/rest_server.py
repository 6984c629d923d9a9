"""The REST case's API: tests/peers/rest_api.py's page style (`/page/items?page=&per_page=`,
`{"page", "per_page", "records"}`, an empty page past the end) with every page rendered once
at start, so serving a page costs the server a write and the client's work is what is timed.

    python -m bench.rest_server --port P --total N --per-page K     (prints "listening" when ready)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers.rest_api import RestPeer, record  # noqa: E402


class PrerenderedPeer(RestPeer):
    def __init__(self, port: int, total: int, per_page: int):
        super().__init__("127.0.0.1", port, total)
        self.per_page = per_page
        pages = -(-total // per_page)
        self.pages = {page: json.dumps({"page": page, "per_page": per_page, "records": [
            record(i) for i in range((page - 1) * per_page + 1, min(total, page * per_page) + 1)]}).encode()
            for page in range(1, pages + 2)}

    def route(self, h, path: str, q: dict) -> None:
        if path == "/page/items" and q.get("per_page") == str(self.per_page) and "total" not in q:
            self.seen.clear()  # the base class keeps every request; nothing here reads them
            body = self.pages.get(int(q.get("page", 1)), self.pages[max(self.pages)])
            # Head and body in one write: written apart (as http.server does), the client's
            # delayed ACK holds every keep-alive response about 40 ms, which would time the
            # server instead of the client.
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body))
            return None
        return super().route(h, path, q)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--per-page", type=int, default=100)
    args = parser.parse_args()
    peer = PrerenderedPeer(args.port, args.total, args.per_page)
    print(f"listening at {peer.url}", flush=True)
    peer.server.serve_forever()


if __name__ == "__main__":
    main()

"""A job the broker never took never exists (issue 23, point 2), on a real discover process whose
broker address (K_SINK) is a closed port, then a broker peer listening there."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from shared.security import auth
from shared.security.ratelimit import live_jobs
from shared.core.settings import Settings
from shared.storage.backends import open_store
from shared.storage.store import TenantStore
from tests.conftest import write_sales
from tests.function_server import JWT_SECRET, free_port, serve

pytestmark = [pytest.mark.security, pytest.mark.reliability]
TENANT = "acme"


class BrokerPeer(BaseHTTPRequestHandler):
    """The broker ingress as a test peer: takes every event (202) and keeps its headers."""
    received: list[dict] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        BrokerPeer.received.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_starts_the_broker_never_took_are_failed_at_once_and_count_against_nothing(tmp_path):
    data = write_sales(tmp_path / "data" / "sales.csv", 100)
    broker_port = free_port()  # nothing listens here yet
    home = tmp_path / "home"
    token = auth.mint_jwt(JWT_SECRET, TENANT, "analyst")
    with serve("discover", home, K_SINK=f"http://127.0.0.1:{broker_port}/udb/udb", UDB_FILE_ROOTS=data.parent,
               UDB_MAX_CONCURRENT_JOBS=16) as server:
        def start() -> httpx.Response:
            return httpx.post(server.url + "/sources/discover_connect", json={"hint": str(data)},
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)

        answers = [start() for _ in range(20)]
        assert [a.status_code for a in answers] == [503] * 20
        assert {a.headers.get("Retry-After") for a in answers} == {"5"}
        reason = "the broker did not take the job, so nothing was started: start it again"
        assert [a.json()["state"] for a in answers] == ["failed"] * 20
        assert {a.json()["error"] for a in answers} == {reason}

        store = TenantStore(open_store(Settings.from_env(env={}, home=home)), TENANT)
        assert live_jobs(store, stale_after=3600) == []
        docs = [json.loads(store.get(f"jobs/{a.json()['jobId']}.json").data) for a in answers]
        assert [(d["state"], d["error"]["stage"], d["error"]["reason"], d["accepted"]) for d in docs] == \
            [("failed", "discover", reason, False)] * 20

        # The broker is back: the next start is accepted (not 429), and the broker holds it.
        BrokerPeer.received = []
        peer = ThreadingHTTPServer(("127.0.0.1", broker_port), BrokerPeer)
        threading.Thread(target=peer.serve_forever, daemon=True).start()
        try:
            accepted = start()
        finally:
            peer.shutdown()
            peer.server_close()
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["jobId"]
        assert accepted.json()["sent"] is True
        assert [(e["ce-type"], e["ce-jobid"]) for e in BrokerPeer.received] == [("dev.udb.source.discovered", job_id)]
        doc = json.loads(store.get(f"jobs/{job_id}.json").data)
        assert (doc["state"], doc["accepted"]) == ("discovered", True)
        assert live_jobs(store, stale_after=3600) == [job_id]

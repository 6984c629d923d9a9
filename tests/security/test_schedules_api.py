"""The schedule API on a real artifacts process (functions-framework over a socket, auth on):
roles (viewer reads, analyst writes, admin or the broker token ticks), tenant isolation, bad
input named, and the tick sending each due slot's dev.udb.sync.requested to the broker once
(a named test peer stands in for the broker ingress at K_SINK and records what it takes)."""
from __future__ import annotations

import http.server
import json
import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from shared.security import auth
from shared.core.settings import Settings
from shared.storage.backends import open_store
from shared.storage.store import TenantStore
from tests.function_server import BROKER_TOKEN, JWT_SECRET, free_port, serve

pytestmark = pytest.mark.security
SOURCE = "sales-0a1b2c3d"


class BrokerPeer(http.server.ThreadingHTTPServer):
    """Takes binary-mode CloudEvents as the broker ingress would (202) and keeps their headers."""

    def __init__(self):
        self.received: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(inner):
                body = inner.rfile.read(int(inner.headers.get("Content-Length") or 0))
                self.received.append({"type": inner.headers.get("ce-type"), "tenant": inner.headers.get("ce-tenant"),
                                      "data": json.loads(body)})
                inner.send_response(202)
                inner.end_headers()

            def log_message(inner, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def _bearer(tenant: str, role: str) -> dict:
    return {"Authorization": f"Bearer {auth.mint_jwt(JWT_SECRET, tenant, role)}"}


def test_schedule_routes_roles_isolation_and_tick(tmp_path):
    home = tmp_path / "home"
    store = open_store(Settings.from_env(env={"UDB_HOME": str(home), "UDB_STORE": "local"}))
    TenantStore(store, "acme").put(f"sources/{SOURCE}.json", json.dumps({"id": SOURCE}).encode())
    with BrokerPeer() as broker, serve("artifacts", home, K_SINK=f"http://127.0.0.1:{broker.server_address[1]}/udb/udb") \
            as server:
        url = f"{server.url}/sources/{SOURCE}/schedule"
        body = {"cron": "* * * * *", "timezone": "Europe/Paris"}
        assert httpx.put(url, json=body, timeout=10).status_code == 401
        viewer = httpx.put(url, json=body, headers=_bearer("acme", "viewer"), timeout=10)
        assert (viewer.status_code, viewer.json()) == (403, {"error": f"role viewer may not PUT /sources/{SOURCE}/schedule "
                                                                      f"(needs analyst)"})
        bad = httpx.put(url, json={"cron": "* * *", "timezone": "Nowhere/X"}, headers=_bearer("acme", "analyst"),
                        timeout=10)
        assert bad.status_code == 400 and set(bad.json()["problems"]) == {"cron", "timezone"}
        created = httpx.put(url, json=body, headers=_bearer("acme", "analyst"), timeout=10)
        assert created.status_code == 201 and created.json()["timezone"] == "Europe/Paris"
        assert httpx.put(url, json=body, headers=_bearer("acme", "analyst"), timeout=10).status_code == 200
        read = httpx.get(url, headers=_bearer("acme", "viewer"), timeout=10)
        assert read.status_code == 200 and read.json()["cron"] == "* * * * *" and len(read.json()["next"]) == 3
        # Another tenant neither sees nor sets it (its source does not exist there).
        assert httpx.get(url, headers=_bearer("other", "admin"), timeout=10).status_code == 404
        assert httpx.put(url, json=body, headers=_bearer("other", "analyst"), timeout=10).status_code == 404

        # A slot before the schedule was set never fires: date it two minutes back, as if set then.
        tenant_store = TenantStore(store, "acme")
        doc = json.loads(tenant_store.get(f"schedules/{SOURCE}.json").data)
        doc["updated_at"] = (datetime.now(timezone.utc) - timedelta(minutes=2)).isoformat()
        tenant_store.put(f"schedules/{SOURCE}.json", json.dumps(doc).encode())
        # The tick: analysts may not; the broker token fires acme's latest slot once.
        tick = f"{server.url}/admin/schedules/tick"
        assert httpx.post(tick, headers=_bearer("acme", "analyst"), timeout=10).status_code == 403
        fired = httpx.post(tick, headers={"Authorization": f"Bearer {BROKER_TOKEN}"}, timeout=30)
        assert fired.status_code == 200, fired.text
        again = httpx.post(tick, headers=_bearer("acme", "admin"), timeout=30).json()
        assert fired.json()["fired"] == 1
        # The same minute: already fired (a new minute, should the clock have turned: its own slot).
        assert again["fired"] + again["already_fired"] == 1 and len(broker.received) == 1 + again["fired"]
        assert [(e["type"], e["tenant"], e["data"]) for e in broker.received][:1] == \
            [("dev.udb.sync.requested", "acme", {"source_id": SOURCE, "autoanalyze": True})]

        assert httpx.delete(url, headers=_bearer("acme", "viewer"), timeout=10).status_code == 403
        assert httpx.delete(url, headers=_bearer("acme", "analyst"), timeout=10).status_code == 204
        assert httpx.get(url, headers=_bearer("acme", "viewer"), timeout=10).status_code == 404

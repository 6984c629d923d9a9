"""No job is left live behind an error answer (issue 16, finding 7), on a real discover process:
a CSV field above Python's csv limit is a clear, quick 422; a 500 at the door fails its job."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from shared.security import auth
from shared.security.ratelimit import live_jobs
from shared.core.settings import Settings
from shared.storage.backends import open_store
from shared.storage.store import TenantStore
from tests.function_server import JWT_SECRET, serve

pytestmark = pytest.mark.security
TENANT = "acme"


def _start(server, hint: str) -> httpx.Response:
    token = auth.mint_jwt(JWT_SECRET, TENANT, "analyst")
    return httpx.post(server.url + "/sources/discover_connect", json={"hint": hint},
                      headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _doc(home, job_id: str) -> dict:
    store = TenantStore(open_store(Settings.from_env(env={}, home=home)), TENANT)
    return json.loads(store.get(f"jobs/{job_id}.json").data)


def test_a_csv_field_above_the_csv_readers_limit_fails_the_job_naming_the_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    # A quote that never closes: the rest of the file (2 MB) becomes one field.
    (data / "quote.csv").write_text('a,b\n1,2\n3,"' + "x" * 2_000_000 + "\n5,6\n")
    home = tmp_path / "home"
    with serve("discover", home, UDB_FILE_ROOTS=data) as server:
        started = time.monotonic()
        answer = _start(server, str(data / "quote.csv"))
        took = time.monotonic() - started
    reason = ("quote.csv: line 3 has a field longer than 131,072 characters, the CSV reader's limit "
              "(a quote that is never closed?)")
    assert (answer.status_code, answer.json()["state"], answer.json()["error"]) == (422, "failed", reason)
    assert took < 15, took
    doc = _doc(home, answer.json()["jobId"])
    assert (doc["state"], doc["error"]["stage"], doc["error"]["reason"]) == ("failed", "discover", reason)


def test_a_500_at_the_door_fails_its_job_at_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sales.csv").write_text("order_id,amount\n1,10\n2,20\n")
    home = tmp_path / "home"
    # The tenant's sources/ folder is a file: writing the discovered source crashes (a bug's stand-in).
    blocker = home / "store" / "udb" / "tenants" / TENANT / "sources"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    with serve("discover", home, UDB_FILE_ROOTS=data) as server:
        answer = _start(server, str(data / "sales.csv"))
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("internal error: ")
    store = TenantStore(open_store(Settings.from_env(env={}, home=home)), TENANT)
    jobs = [json.loads(store.get(info.key).data) for info in store.list("jobs/")]
    assert [(d["state"], d["error"]["stage"], d["error"]["reason"]) for d in jobs] == \
        [("failed", "discover", answer.json()["error"])]
    assert live_jobs(store, stale_after=3600) == []

"""Jobs an outage dead-lettered wait for their function and are resumed (issue 23, point 5):
parked by the dead-letter handler, sent back to the broker by the sweep once the function's
/readyz answers, exactly once; deterministic failures and exhausted budgets still fail the job.

The function's /readyz and the broker's ingress are a named test peer: a real HTTP server on
127.0.0.1 (below), not a mock."""
from __future__ import annotations

import base64
import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cloudevents.http import CloudEvent, from_http

from functions.artifacts import deadletters, redrive
from shared.core import events
from shared.core.routing import PingSource

pytestmark = pytest.mark.unit
TENANT, JOB = "acme", "job-00000000000000b7"


class Peer(BaseHTTPRequestHandler):
    """GET /readyz answers `ready`; POST /udb/udb (the broker ingress) records the event."""
    ready = 503
    received: list = []

    def do_GET(self):
        self.send_response(Peer.ready if self.path == "/readyz" else 404)
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Peer.received.append(from_http(dict(self.headers), body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def peer():
    Peer.ready, Peer.received = 503, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Peer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def ctx(ctx_for, peer):
    ctx = ctx_for("artifacts")
    ctx.settings = dataclasses.replace(ctx.settings, broker_url=f"{peer}/udb/udb")
    ctx.jobs(TENANT).create(JOB)
    ctx.jobs(TENANT).move(JOB, "loaded", tables={"csv__sales": {"rows": 300}})
    return ctx


def dead_letter(dest: str, code: str, *, detail: bytes = b"", **extra) -> CloudEvent:
    event = events.make_event(events.WAREHOUSE_LOADED, {"source_id": "csv", "autoanalyze": True,
                               "tables": [{"table": "csv__sales", "rows": 300, "applied": True}]},
                              tenant=TENANT, job_id=JOB, function="writer", flags={"autoanalyze": True})
    attrs = {**event.get_attributes(), "knativeerrordest": dest, "knativeerrorcode": code,
             "knativeerrordata": base64.b64encode(detail).decode(), **extra}
    return CloudEvent(attrs, event.get_data())


def letters(ctx) -> list[str]:
    """The parked letters; each has its marker in the sweep's index, and no marker is left over."""
    found = [info.key for info in ctx.store.list(f"tenants/{TENANT}/deadletters/")]
    markers = [info.key for info in ctx.store.list("redrive/")]
    assert [k.rsplit("/", 1)[1].removesuffix(".json") for k in found] == [m.rsplit("/", 1)[1] for m in markers]
    return found


def test_an_outage_parks_the_job_and_the_sweep_resumes_it_once_ready(ctx, peer):
    letter = dead_letter(f"{peer}/", "0", detail=b"connection refused")
    assert deadletters.handle(letter, ctx) is None
    doc = ctx.jobs(TENANT).get(JOB)
    assert doc["state"] == "loaded" and doc["error"] is None  # not failed: waiting
    assert doc["redrive"]["state"] == "waiting" and doc["redrive"]["redrives"] == 0
    assert doc["redrive"]["function"] == "analyze"
    assert doc["redrive"]["reason"] == ("delivery of dev.udb.warehouse.loaded to " f"{peer}/"
                                        " failed after all retries (no answer): connection refused")
    assert len(letters(ctx)) == 1

    # Still down: nothing is sent, the letter stays.
    assert redrive.sweep(ctx) == {"parked": 1, "redriven": 0, "waiting": 1, "finished": 0}
    assert Peer.received == [] and len(letters(ctx)) == 1

    Peer.ready = 200
    assert redrive.sweep(ctx) == {"parked": 1, "redriven": 1, "waiting": 0, "finished": 0}
    (sent,) = Peer.received
    attrs = sent.get_attributes()
    assert (attrs["type"], attrs["tenant"], attrs["jobid"], attrs["id"]) == (
        events.WAREHOUSE_LOADED, TENANT, JOB, letter["id"])
    assert attrs["udbredrives"] == "1" and attrs["autoanalyze"] == "true"
    assert not any(k.startswith("knativeerror") for k in attrs)
    assert events.event_data(sent) == events.event_data(letter)
    assert letters(ctx) == []
    assert ctx.jobs(TENANT).get(JOB)["redrive"]["state"] == "redriven"
    # A second sweep (or a concurrent one) finds nothing: sent exactly once.
    assert redrive.sweep(ctx) == {"parked": 0, "redriven": 0, "waiting": 0, "finished": 0}
    assert len(Peer.received) == 1


@pytest.mark.parametrize("code", ["500", "400", "422"])
def test_a_deterministic_failure_fails_the_job_at_once(ctx, peer, code):
    deadletters.handle(dead_letter(f"{peer}/", code, detail=b'{"error": "bad"}'), ctx)
    doc = ctx.jobs(TENANT).get(JOB)
    assert doc["state"] == "failed"
    assert doc["error"]["reason"] == (f"delivery of dev.udb.warehouse.loaded to {peer}/ failed after all retries "
                                      f'(HTTP {code}): {{"error": "bad"}}')
    assert letters(ctx) == []


@pytest.mark.parametrize("code", ["0", "502", "503", "504", "408", "429"])
def test_every_outage_code_is_parked(ctx, peer, code):
    deadletters.handle(dead_letter(f"{peer}/", code), ctx)
    assert ctx.jobs(TENANT).get(JOB)["state"] == "loaded" and len(letters(ctx)) == 1


def test_past_the_redrive_budget_the_job_fails_with_the_cause(ctx, peer):
    budget = ctx.settings.redrive_max
    deadletters.handle(dead_letter(f"{peer}/", "503", detail=b"storage down", udbredrives=str(budget)), ctx)
    doc = ctx.jobs(TENANT).get(JOB)
    assert doc["state"] == "failed" and letters(ctx) == []
    assert doc["error"]["reason"].startswith(
        f"delivery of dev.udb.warehouse.loaded to {peer}/ failed after all retries (HTTP 503): storage down "
        f"(resumed {budget} times over ")


def test_a_job_waiting_past_the_maximum_age_fails(ctx, peer):
    long_ago = str(int(__import__("time").time()) - ctx.settings.redrive_max_age_seconds - 5)
    deadletters.handle(dead_letter(f"{peer}/", "0", udbwaitsince=long_ago), ctx)
    assert ctx.jobs(TENANT).get(JOB)["state"] == "failed"


@pytest.mark.parametrize("dest", ["http://example.com/", "http://10.0.0.7:8080/", "file:///etc/passwd", "",
                                  "http://user:pw@127.0.0.1:1/"])
def test_only_udb_functions_are_probed(ctx, dest):
    deadletters.handle(dead_letter(dest, "0"), ctx)
    assert ctx.jobs(TENANT).get(JOB)["state"] == "failed" and letters(ctx) == []


def test_probe_urls():
    assert redrive.probe_url("http://127.0.0.1:18084/") == "http://127.0.0.1:18084/readyz"
    assert redrive.probe_url("http://[::1]:8080/x") == "http://[::1]:8080/readyz"
    assert redrive.probe_url("http://udb-analyze.udb.svc.cluster.local") == \
        "http://udb-analyze.udb.svc.cluster.local/readyz"
    assert redrive.probe_url("https://udb-writer.udb.svc/") == "https://udb-writer.udb.svc/readyz"
    assert redrive.probe_url("http://169.254.169.254/") is None


def test_a_letter_of_a_job_finished_meanwhile_is_dropped_unsent(ctx, peer):
    deadletters.handle(dead_letter(f"{peer}/", "0"), ctx)
    ctx.jobs(TENANT).move(JOB, "completed")
    Peer.ready = 200
    assert redrive.sweep(ctx) == {"parked": 1, "redriven": 0, "waiting": 0, "finished": 1}
    assert Peer.received == [] and letters(ctx) == []


def test_a_letter_whose_broker_is_down_is_kept_for_the_next_sweep(ctx, peer):
    deadletters.handle(dead_letter(f"{peer}/", "0"), ctx)
    ctx.settings = dataclasses.replace(ctx.settings, broker_url="http://127.0.0.1:9/udb/udb")  # nothing listens
    Peer.ready = 200
    assert redrive.sweep(ctx) == {"parked": 1, "redriven": 0, "waiting": 1, "finished": 0}
    assert len(letters(ctx)) == 1


@pytest.mark.parametrize("schedule, now, expected", [
    ("* * * * *", "2026-01-01T10:00:30", "2026-01-01T10:01:00"),
    ("* * * * *", "2026-01-01T10:00:00", "2026-01-01T10:01:00"),
    ("17 3 * * *", "2026-01-01T10:00:00", "2026-01-02T03:17:00"),
    ("*/15 * * * *", "2026-01-01T10:16:00", "2026-01-01T10:30:00"),
    ("0 9-17/4 * * 1-5", "2026-01-02T18:00:00", "2026-01-05T09:00:00"),  # Friday evening -> Monday 9:00
])
def test_ping_schedules(schedule, now, expected):
    from datetime import datetime, timezone
    at = datetime.fromisoformat(now).replace(tzinfo=timezone.utc).timestamp()
    fired = PingSource("p", schedule, "udb-artifacts").next_fire(at)
    assert datetime.fromtimestamp(fired, timezone.utc).isoformat() == expected + "+00:00"


def test_a_tenant_admin_sweeps_only_its_own_tenant(ctx, peer):
    from shared.security import auth

    assert auth.required_role("POST", "/admin/redrive") == "admin"
    assert ("POST", "/admin/redrive") in auth.SYSTEM_ROUTES  # the PingSource (broker token) sweeps all
    deadletters.handle(dead_letter(f"{peer}/", "0"), ctx)
    Peer.ready = 200
    assert redrive.sweep(ctx, tenant="beta") == {"parked": 0, "redriven": 0, "waiting": 0, "finished": 0}
    assert Peer.received == [] and len(letters(ctx)) == 1
    assert redrive.sweep(ctx, tenant=TENANT)["redriven"] == 1 and len(Peer.received) == 1

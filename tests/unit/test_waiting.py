"""shared/sources/oauth/waiting.py: a job waiting for OAuth authorization: what it waits for,
its document, and how it resumes (to a broker on 127.0.0.1) or fails."""
from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from cloudevents.http import from_http

from shared.core import events
from shared.core.errors import InputError, NotFound
from shared.sources.oauth import waiting

pytestmark = pytest.mark.unit
TENANT, JOB = "acme", "job-00000000000000a9"
RESUME = {"hint": "https://drive.google.com/file/d/1AbC/view", "autosync": False, "autoanalyze": True,
          "options": {"sheet": "A", "headers": {"Authorization": "x"}}}


class Broker(BaseHTTPRequestHandler):
    """The broker ingress: records each CloudEvent and answers 202."""
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Broker.received.append(from_http(dict(self.headers), body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def broker():
    Broker.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Broker)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/udb/udb"
    server.shutdown()
    server.server_close()


@pytest.fixture
def ctx(ctx_for):
    ctx = ctx_for("discover")
    ctx.settings = dataclasses.replace(ctx.settings, google_client_id="udb-google-client",
                                       jwt_secret="waiting-test-secret-" + "w" * 20)
    ctx.jobs(TENANT).create(JOB)
    return ctx


def test_job_name():
    assert waiting.job_name(JOB) == f"oauth.job.{JOB}"
    with pytest.raises(InputError, match="invalid job id"):
        waiting.job_name("../x")


def test_a_job_without_a_token_waits_with_an_oauth_url(ctx):
    wait = waiting.request_authorization(ctx, TENANT, JOB, "gdrive", RESUME)
    assert {k: wait[k] for k in ("waiting", "provider", "stage", "function")} == \
        {"waiting": "authorization", "provider": "gdrive", "stage": "discover", "function": "discover"}
    assert wait["reason"] == ("waiting for authorization: gdrive links need Google (Drive) OAuth; open the oauthUrl "
                              "(valid 15 min) or start the device-code flow (POST /oauth/device)")
    query = parse_qs(urlparse(wait["oauthUrl"]).query)
    assert query["client_id"] == ["udb-google-client"] and query["code_challenge_method"] == ["S256"]
    kept = json.loads(ctx.secrets.get(TENANT, waiting.job_name(JOB)))
    assert kept["hint"] == RESUME["hint"] and kept["source_provider"] == "gdrive"
    doc = waiting.mark_waiting(ctx.jobs(TENANT), JOB, wait)
    assert doc["state"] == "discovering" and doc["error"]["waiting"] == "authorization"
    waiting.clear_waiting(ctx.jobs(TENANT), JOB)
    cleared = ctx.jobs(TENANT).get(JOB)
    assert (cleared["state"], cleared["error"], cleared["version"]) == ("discovering", None, doc["version"] + 1)
    waiting.clear_waiting(ctx.jobs(TENANT), JOB)             # nothing waits: unchanged
    assert ctx.jobs(TENANT).get(JOB)["version"] == cleared["version"]
    waiting.clear_waiting(ctx.jobs(TENANT), "job-00000000000000ff")   # no such job: nothing to do


def test_authorization_resumes_the_job_through_the_broker(ctx, broker):
    waiting.mark_waiting(ctx.jobs(TENANT), JOB, waiting.request_authorization(ctx, TENANT, JOB, "gdrive", RESUME))
    ctx.settings = dataclasses.replace(ctx.settings, broker_url=broker)
    assert waiting.resume_job(ctx, TENANT, JOB) == {"resumed": True, "via": "broker", "state": "discovering"}
    [event] = Broker.received
    assert (event["type"], event["tenant"], event["jobid"]) == (events.DISCOVER_REQUESTED, TENANT, JOB)
    # The request's credentials are not sent on: the stored tokens are used instead.
    assert event.get_data() == {"hint": RESUME["hint"], "autosync": False, "autoanalyze": True,
                                "options": {"sheet": "A"}}
    assert ctx.jobs(TENANT).get(JOB)["accepted"] is True
    with pytest.raises(NotFound):
        ctx.secrets.get(TENANT, waiting.job_name(JOB))
    # Only once: the record is gone.
    assert waiting.resume_job(ctx, TENANT, JOB) == {"resumed": False, "state": "discovering"}


def test_a_stack_function_without_a_broker_keeps_the_tokens_and_does_not_resume(ctx):
    ctx.settings = dataclasses.replace(ctx.settings, mode="stack", broker_url="")
    assert waiting.resume_job(ctx, TENANT, JOB) == {
        "resumed": False, "state": None, "error": "no broker (K_SINK) here to resume the job: discover the link again"}


def test_a_job_not_waiting_is_not_resumed(ctx, broker):
    ctx.settings = dataclasses.replace(ctx.settings, broker_url=broker)
    assert waiting.resume_job(ctx, TENANT, JOB) == {"resumed": False, "state": "requested"}
    assert waiting.resume_job(ctx, TENANT, "job-00000000000000fe") == {"resumed": False, "state": None}
    assert Broker.received == []


def test_an_authorization_that_ends_without_tokens_fails_the_job(ctx):
    waiting.mark_waiting(ctx.jobs(TENANT), JOB, waiting.request_authorization(ctx, TENANT, JOB, "gdrive", RESUME))
    waiting.fail_waiting_job(ctx, TENANT, JOB, "access_denied: the user refused")
    doc = ctx.jobs(TENANT).get(JOB)
    assert doc["state"] == "failed"
    assert (doc["error"]["stage"], doc["error"]["function"], doc["error"]["reason"]) == \
        ("discover", "artifacts", "access_denied: the user refused")
    with pytest.raises(NotFound):
        ctx.secrets.get(TENANT, waiting.job_name(JOB))
    waiting.fail_waiting_job(ctx, TENANT, "job-00000000000000fd", "no such job")   # nothing to fail

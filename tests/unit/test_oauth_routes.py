"""shared/sources/oauth/routes.py: GET /oauth/callback and POST /oauth/device[/{id}] as the
artifacts function serves them, called with real werkzeug requests; the provider's token endpoint
and the broker are scripted peers on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from werkzeug.test import EnvironBuilder

from shared.core.errors import InputError, NotFound
from shared.sources.oauth import routes, waiting
from tests.peers.token_endpoint import TokenEndpoint
from tests.unit.test_waiting import RESUME, Broker, broker  # noqa: F401  (the broker fixture)

pytestmark = pytest.mark.unit
TENANT, JOB = "acme", "job-00000000000000c9"


@pytest.fixture
def peer():
    with TokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def ctx(ctx_for, peer, broker):  # noqa: F811
    ctx = ctx_for("artifacts")
    ctx.settings = dataclasses.replace(ctx.settings, google_client_id="gcid", google_token_url=f"{peer.url}/token",
                                       google_device_url=f"{peer.url}/device", broker_url=broker,
                                       jwt_secret="routes-test-secret-" + "r" * 20)
    ctx.jobs(TENANT).create(JOB)
    wait = waiting.request_authorization(ctx, TENANT, JOB, "gdrive", RESUME)
    waiting.mark_waiting(ctx.jobs(TENANT), JOB, wait)
    ctx.state = parse_qs(urlparse(wait["oauthUrl"]).query)["state"][0]
    return ctx


def _request(method: str, path: str, *, query: dict | None = None, body: dict | None = None, tenant: str = TENANT):
    builder = EnvironBuilder(method=method, path=path, query_string=urlencode(query or {}),
                             json=body, headers={"X-UDB-Tenant": tenant})
    return builder.get_request()


def _call(route, request, ctx) -> tuple[dict, int]:
    text, status, headers = route(request, ctx)
    assert headers["Content-Type"] == "application/json"
    return json.loads(text), status


def test_the_callback_stores_the_tokens_and_resumes_the_job(ctx, peer):
    peer.answers.append((200, {"access_token": "at", "refresh_token": "rt", "expires_in": 3600}))
    body, status = _call(routes.callback, _request("GET", "/oauth/callback",
                                                   query={"code": "c-1", "state": ctx.state}), ctx)
    assert status == 200
    assert body == {"jobId": JOB, "provider": "gdrive", "authorized": True, "resumed": True, "via": "broker",
                    "state": "discovering"}
    assert json.loads(ctx.secrets.get(TENANT, "oauth.google"))["access_token"] == "at"
    [event] = Broker.received
    assert (event["type"], event["jobid"]) == ("dev.udb.discover.requested", JOB)


def test_a_refused_callback_fails_the_waiting_job(ctx):
    body, status = _call(routes.callback, _request("GET", "/oauth/callback", query={
        "error": "access_denied", "error_description": "no", "state": ctx.state}), ctx)
    assert status == 400
    assert body == {"jobId": JOB, "state": "failed", "error": "authorization refused at Google (Drive): access_denied (no)"}
    doc = ctx.jobs(TENANT).get(JOB)
    assert doc["state"] == "failed" and doc["error"]["reason"] == body["error"]
    # The same state again: already used, the job is left as it is.
    body, status = _call(routes.callback, _request("GET", "/oauth/callback", query={"code": "c", "state": ctx.state}), ctx)
    assert (status, body["state"]) == (400, "unchanged")
    assert body["error"].startswith("this authorization was completed already")
    assert Broker.received == []


def test_the_device_routes(ctx, peer):
    peer.answers.append((200, {"device_code": "dc", "user_code": "WXYZ", "verification_uri": "https://x.example/d",
                               "interval": 1}))
    started, status = _call(routes.device, _request("POST", "/oauth/device", body={"provider": "gdrive", "jobId": JOB}),
                            ctx)
    assert status == 201
    assert (started["user_code"], started["jobId"], started["provider"]) == ("WXYZ", JOB, "gdrive")
    session = json.loads(ctx.secrets.get(TENANT, f"oauth.device.{started['deviceId']}"))
    session["next_poll_at"] = 0    # poll now, not after the interval
    ctx.secrets.put(TENANT, f"oauth.device.{started['deviceId']}", json.dumps(session))
    peer.answers.append((200, {"access_token": "at-d", "expires_in": 3600}))
    polled, status = _call(routes.device, _request("POST", f"/oauth/device/{started['deviceId']}"), ctx)
    assert status == 200
    assert (polled["status"], polled["job"]) == ("authorized", {"resumed": True, "via": "broker", "state": "discovering"})


@pytest.mark.parametrize("body,error,message", [
    ({"provider": "gdrive", "jobId": "job-00000000000000ee"}, NotFound, "is not waiting for authorization"),
    ({"provider": "onedrive", "jobId": JOB}, InputError, "waits for gdrive authorization, not onedrive"),
    ({"provider": "gdrive", "jobId": 7}, InputError, '"jobId" must be a job id string'),
    ({"provider": "gdrive", "extra": 1}, InputError, r"unknown fields \['extra'\]"),
    ({"provider": "dropbox"}, InputError, "no OAuth provider for 'dropbox'"),
])
def test_device_requests_that_are_refused(ctx, body, error, message):
    with pytest.raises(error, match=message):
        routes.device(_request("POST", "/oauth/device", body=body), ctx)


def test_device_paths_and_tenant(ctx):
    with pytest.raises(NotFound, match="no route /oauth/device/a/b"):
        routes.device(_request("POST", "/oauth/device/a/b"), ctx)
    with pytest.raises(InputError, match="invalid device authorization id 'dev-0': expected dev- and 16 hex digits"):
        routes.device(_request("POST", "/oauth/device/dev-0"), ctx)
    with pytest.raises(NotFound, match="no device authorization dev-0123456789abcdef for tenant acme"):
        routes.device(_request("POST", "/oauth/device/dev-0123456789abcdef"), ctx)
    request = EnvironBuilder(method="POST", path="/oauth/device", json={"provider": "gdrive"}).get_request()
    with pytest.raises(InputError, match="missing X-UDB-Tenant header"):
        routes.device(request, ctx)

"""shared/sources/oauth/flow.py: the authorization-code flow with PKCE and a signed state, and the
device-code flow (RFC 8628), against a scripted token endpoint on 127.0.0.1
(tests/peers/token_endpoint.py)."""
from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlparse

import pytest

from shared.core.errors import NotFound
from shared.security import auth
from shared.security.secrets import LocalSecretStore
from shared.sources.oauth import flow
from shared.sources.oauth.providers import OAuthError
from tests.peers.token_endpoint import TokenEndpoint

pytestmark = pytest.mark.unit
TENANT, JOB = "acme", "job-00000000000000b1"
NOW = 1_700_000_000.0


@pytest.fixture
def peer():
    with TokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def secrets(tmp_path):
    return LocalSecretStore(tmp_path / "secrets")


@pytest.fixture
def settings(settings, peer):
    return dataclasses.replace(settings, google_client_id="gcid", google_client_secret="gsecret",
                               google_token_url=f"{peer.url}/token", google_device_url=f"{peer.url}/device",
                               oauth_redirect_url="https://udb.example/oauth/callback")


def _state(settings, secrets) -> tuple[str, str]:
    url = flow.authorization_url(settings, secrets, TENANT, JOB, "gdrive")
    query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    return url, query


def test_the_authorization_url(settings, secrets):
    url, query = _state(settings, secrets)
    assert url.startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    assert {k: query[k] for k in ("client_id", "response_type", "redirect_uri", "scope", "code_challenge_method",
                                  "access_type", "prompt")} == {
        "client_id": "gcid", "response_type": "code", "redirect_uri": "https://udb.example/oauth/callback",
        "scope": "https://www.googleapis.com/auth/drive.readonly", "code_challenge_method": "S256",
        "access_type": "offline", "prompt": "consent"}
    pending = json.loads(secrets.get(TENANT, flow.pending_name(query["state"])))
    assert flow.code_challenge(pending["verifier"]) == query["code_challenge"]
    assert pending["verifier"] not in url
    principal = flow.verify_state(settings, secrets, query["state"])
    assert (principal.tenant, principal.subject) == (TENANT, JOB)


def test_the_callback_exchanges_the_code_once(settings, secrets, peer):
    _, query = _state(settings, secrets)
    pending = json.loads(secrets.get(TENANT, flow.pending_name(query["state"])))
    peer.answers.append((200, {"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600}))
    principal, used = flow.complete_authorization(settings, secrets, query["state"], code="the-code")
    assert (principal.tenant, used["job_id"], used["source_provider"]) == (TENANT, JOB, "gdrive")
    assert peer.forms == [{"grant_type": "authorization_code", "code": "the-code",
                           "redirect_uri": "https://udb.example/oauth/callback", "code_verifier": pending["verifier"],
                           "client_id": "gcid", "client_secret": "gsecret"}]
    stored = json.loads(secrets.get(TENANT, "oauth.google"))
    assert (stored["access_token"], stored["refresh_token"]) == ("at-1", "rt-1")
    with pytest.raises(flow.AuthorizationRefused, match="this authorization was completed already"):
        flow.complete_authorization(settings, secrets, query["state"], code="the-code")


@pytest.mark.parametrize("kw,answer,reason", [
    ({"code": None, "error": "access_denied", "error_description": "user said no"}, None,
     "authorization refused at Google (Drive): access_denied (user said no)"),
    ({"code": None}, None, "Google (Drive) redirected back without a code"),
    ({"code": "c"}, (400, {"error": "invalid_grant", "error_description": "code expired"}),
     "Google (Drive) refused the authorization code: invalid_grant (code expired)"),
])
def test_a_refused_callback_says_why_and_spends_the_state(settings, secrets, peer, kw, answer, reason):
    _, query = _state(settings, secrets)
    if answer:
        peer.answers.append(answer)
    with pytest.raises(flow.AuthorizationRefused) as refused:
        flow.complete_authorization(settings, secrets, query["state"], **kw)
    assert str(refused.value) == reason and refused.value.source_provider == "gdrive"
    with pytest.raises(NotFound):
        secrets.get(TENANT, flow.pending_name(query["state"]))
    with pytest.raises(NotFound):
        secrets.get(TENANT, "oauth.google")


def test_a_forged_state_is_unauthorized(settings, secrets):
    with pytest.raises(auth.Unauthorized):
        flow.complete_authorization(settings, secrets, "not-a-state", code="c")


def test_the_device_flow(settings, secrets, peer):
    peer.answers.append((200, {"device_code": "dc-1", "user_code": "ABCD-EFGH", "verification_url":
                               "https://www.google.com/device", "expires_in": 600, "interval": 5}))
    started = flow.device_start(settings, secrets, TENANT, "gdrive", job_id=JOB, now=NOW)
    device_id = started["deviceId"]
    assert device_id.startswith(flow.DEVICE_ID_PREFIX)
    assert {k: v for k, v in started.items() if k != "deviceId"} == {
        "provider": "gdrive", "verification_uri": "https://www.google.com/device", "user_code": "ABCD-EFGH",
        "expires_in": 600, "interval": 5, "jobId": JOB}
    assert peer.forms[0] == {"client_id": "gcid", "scope": "https://www.googleapis.com/auth/drive.readonly"}

    def poll(at):
        return flow.device_poll(settings, secrets, TENANT, device_id, now=NOW + at)

    assert poll(1) == {"deviceId": device_id, "provider": "gdrive", "interval": 5, "jobId": JOB,
                       "status": "pending", "retryAfter": 4}                       # too soon: no call
    assert len(peer.forms) == 1
    peer.answers.append((400, {"error": "authorization_pending"}))
    assert poll(5)["status"] == "pending"
    peer.answers.append((400, {"error": "slow_down"}))
    assert {k: v for k, v in poll(10).items() if k in ("status", "interval", "retryAfter")} == \
        {"status": "slow_down", "interval": 10, "retryAfter": 10}
    slowed = json.loads(secrets.get(TENANT, flow.device_name(device_id)))
    assert slowed["interval"] == 10 and slowed["next_poll_at"] == NOW + 20
    peer.answers.append((200, {"access_token": "at-d", "refresh_token": "rt-d", "expires_in": 3600}))
    assert poll(20)["status"] == "authorized"
    assert peer.forms[-1] == {"grant_type": flow.DEVICE_GRANT, "device_code": "dc-1", "client_id": "gcid",
                              "client_secret": "gsecret"}
    assert json.loads(secrets.get(TENANT, "oauth.google"))["access_token"] == "at-d"
    with pytest.raises(NotFound, match=f"no device authorization {device_id} for tenant acme"):
        poll(30)


@pytest.mark.parametrize("error,status", [("access_denied", "denied"), ("expired_token", "expired")])
def test_a_device_flow_that_ends_without_tokens(settings, secrets, peer, error, status):
    peer.answers.append((200, {"device_code": "dc", "user_code": "U", "verification_uri": "https://x/device"}))
    device_id = flow.device_start(settings, secrets, TENANT, "gdrive", now=NOW)["deviceId"]
    peer.answers.append((400, {"error": error}))
    assert flow.device_poll(settings, secrets, TENANT, device_id, now=NOW + 5)["status"] == status
    with pytest.raises(NotFound):
        secrets.get(TENANT, flow.device_name(device_id))


def test_a_device_code_past_its_expiry_is_not_polled(settings, secrets, peer):
    peer.answers.append((200, {"device_code": "dc", "user_code": "U", "expires_in": 60, "interval": 5}))
    device_id = flow.device_start(settings, secrets, TENANT, "gdrive", now=NOW)["deviceId"]
    assert flow.device_poll(settings, secrets, TENANT, device_id, now=NOW + 61) == {
        "deviceId": device_id, "provider": "gdrive", "interval": 5, "status": "expired",
        "reason": "the Google (Drive) device code expired before it was approved"}
    assert len(peer.forms) == 1


def test_a_device_endpoint_error(settings, secrets, peer):
    peer.answers.append((400, {"error": "invalid_client"}))
    with pytest.raises(OAuthError, match="invalid_client"):
        flow.device_start(settings, secrets, TENANT, "gdrive")

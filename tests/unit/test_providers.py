"""shared/sources/oauth/providers.py: which OAuth provider a source uses, its endpoints from the
settings, and the token-endpoint call (RFC 6749 5.2 errors as OAuthError) through the SSRF guard,
against a scripted token endpoint on 127.0.0.1 (tests/peers/token_endpoint.py)."""
from __future__ import annotations

import dataclasses
import re

import pytest

from shared.core.errors import InputError, SourceError
from shared.core.settings import Settings
from shared.security import netguard
from shared.sources.oauth import providers
from tests.peers.token_endpoint import TokenEndpoint

pytestmark = pytest.mark.unit


@pytest.fixture
def peer():
    with TokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def cfg(settings, peer):
    configured = dataclasses.replace(settings, google_client_id="udb-client", google_client_secret="udb-secret",
                                     google_token_url=f"{peer.url}/token")
    return providers.config("gdrive", configured)


@pytest.mark.parametrize("name,provider", [("onedrive", "microsoft"), ("sharepoint", "microsoft"),
                                           ("microsoft", "microsoft"), ("gdrive", "google"), ("google", "google")])
def test_provider_of(name, provider):
    assert providers.provider_of(name) == provider


def test_an_unknown_provider_names_the_known_ones():
    with pytest.raises(InputError) as error:
        providers.provider_of("dropbox")
    message = str(error.value)
    assert message.startswith("no OAuth provider for 'dropbox'; known: ")
    assert all(n in message for n in ("onedrive", "sharepoint", "gdrive", "microsoft", "google"))


def test_config_needs_a_client_unless_told_otherwise():
    bare = Settings()
    with pytest.raises(SourceError, match=r"Google \(Drive\) OAuth is not configured: set UDB_OAUTH_GOOGLE_CLIENT_ID"):
        providers.config("gdrive", bare)
    cfg = providers.config("onedrive", bare, require=False)
    assert (cfg.name, cfg.client_id, cfg.client_setting, cfg.refresh_scopes) == \
        ("microsoft", "", "UDB_OAUTH_MS_CLIENT_ID", True)
    assert cfg.settings is bare


def test_a_token_request_sends_the_client_and_returns_the_answer(cfg, peer):
    peer.answers.append((200, {"access_token": "at-1", "expires_in": 3600}))
    answer = providers.token_request(cfg, {"grant_type": "refresh_token", "refresh_token": "rt-1"})
    assert answer == {"access_token": "at-1", "expires_in": 3600}
    assert peer.forms == [{"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "udb-client",
                           "client_secret": "udb-secret"}]


def test_a_public_client_sends_no_secret(cfg, peer):
    public = dataclasses.replace(cfg, client_secret="")
    peer.answers.append((200, {"access_token": "x"}))
    providers.token_request(public, {"grant_type": "device_code"}, url=f"{peer.url}/elsewhere")
    assert peer.forms == [{"grant_type": "device_code", "client_id": "udb-client"}]


@pytest.mark.parametrize("status,body,error,description,message", [
    (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, "invalid_grant",
     "Token has been expired or revoked.",
     "Google (Drive): the token endpoint answered invalid_grant (Token has been expired or revoked.)"),
    (200, {"error": "authorization_pending"}, "authorization_pending", "",
     "Google (Drive): the token endpoint answered authorization_pending"),
    (401, {"error": {"code": "unauthorized", "message": "no"}}, "unauthorized", "",
     "Google (Drive): the token endpoint answered unauthorized"),
    (503, b"", "http_503", "", "Google (Drive): the token endpoint answered http_503"),
    (400, {"error": "invalid_request", "error_description": "d" * 500}, "invalid_request", "d" * 300, None),
])
def test_error_answers_are_oauth_errors(cfg, peer, status, body, error, description, message):
    peer.answers.append((status, body))
    with pytest.raises(providers.OAuthError) as raised:
        providers.token_request(cfg, {"grant_type": "refresh_token"})
    assert (raised.value.error, raised.value.description) == (error, description)
    if message:
        assert str(raised.value) == message
    assert isinstance(raised.value, SourceError)


@pytest.mark.parametrize("body,says", [(b"<html>oops</html>", "answered 502 without JSON"),
                                       (b"[1, 2]", "answered 502 with JSON that is not an object")])
def test_answers_that_are_not_a_json_object(cfg, peer, body, says):
    peer.answers.append((502, body))
    with pytest.raises(SourceError, match=f"^Google \\(Drive\\): {re.escape(cfg.token_url)} {says}$"):
        providers.token_request(cfg, {"grant_type": "refresh_token"})


def test_an_oversized_answer_is_refused(cfg, peer):
    peer.answers.append((200, b'{"access_token": "' + b"a" * providers.MAX_TOKEN_ANSWER + b'"}'))
    with pytest.raises(SourceError, match=r"Google \(Drive\) token endpoint"):
        providers.token_request(cfg, {"grant_type": "refresh_token"})


def test_the_call_goes_through_the_ssrf_guard(cfg, peer):
    # Without loopback in the allowlist, 127.0.0.1 is not a public address: refused before any request.
    guarded = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, net_allowlist=""))
    with pytest.raises(netguard.BlockedAddress):
        providers.token_request(guarded, {"grant_type": "refresh_token"})
    assert peer.forms == []


def test_an_endpoint_that_does_not_answer(cfg, peer):
    gone = dataclasses.replace(cfg, token_url="http://127.0.0.1:9/token")
    with pytest.raises(SourceError, match=r"^Google \(Drive\): "):
        providers.token_request(gone, {"grant_type": "refresh_token"})

"""shared/sources/oauth/tokens.py: a tenant's OAuth tokens in the secret store, refreshed on
expiry against a scripted token endpoint on 127.0.0.1 (tests/peers/token_endpoint.py); a
refused refresh deletes the pair and says why."""
from __future__ import annotations

import dataclasses
import json

import pytest

from shared.core.errors import InputError, NotFound, SourceError
from shared.security.secrets import LocalSecretStore
from shared.sources.oauth import providers, tokens
from shared.sources.oauth.providers import OAuthError
from tests.peers.token_endpoint import TokenEndpoint

pytestmark = pytest.mark.unit
TENANT = "acme"


@pytest.fixture
def peer():
    with TokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def secrets(tmp_path):
    return LocalSecretStore(tmp_path / "secrets")


def _settings(settings, peer):
    return dataclasses.replace(settings, google_client_id="cid", google_client_secret="csecret",
                               google_token_url=f"{peer.url}/token", ms_client_id="ms-cid",
                               ms_authority=f"{peer.url}/ms")


@pytest.fixture
def clock():
    return [1_000_000.0]


@pytest.fixture
def google(settings, peer, secrets, clock):
    return tokens.Tokens(secrets, TENANT, providers.config("gdrive", _settings(settings, peer)), clock=lambda: clock[0])


def test_save_stores_the_answer_under_the_providers_name(google, secrets, clock):
    record = google.save({"access_token": "a1", "refresh_token": "r1", "expires_in": "120", "scope": "drive"})
    assert record == {"access_token": "a1", "refresh_token": "r1", "token_type": "Bearer", "scope": "drive",
                      "obtained_at": clock[0], "lifetime": 120, "expires_at": clock[0] + 120}
    assert tokens.tokens_name("google") == "oauth.google"
    assert json.loads(secrets.get(TENANT, "oauth.google")) == record
    assert google.exists() and google.load() == record


def test_save_defaults_and_refusals(google):
    record = google.save({"access_token": "a1", "expires_in": "soon"})
    assert (record["lifetime"], record["refresh_token"], record["scope"]) == \
        (3600, None, "https://www.googleapis.com/auth/drive.readonly")
    assert google.save({"access_token": "a2", "expires_in": -5})["lifetime"] == 0
    kept = google.save({"access_token": "a3"}, previous={"refresh_token": "old-r"})
    assert kept["refresh_token"] == "old-r"
    with pytest.raises(SourceError, match=r"Google \(Drive\): the token endpoint answered without an access_token"):
        google.save({"token_type": "Bearer"})


def test_expiry_has_a_skew_of_at_most_sixty_seconds_or_a_tenth_of_the_life(google, clock):
    hour = google.save({"access_token": "a", "expires_in": 3600})
    clock[0] += 3600 - 61
    assert not google.expired(hour)
    clock[0] += 1
    assert google.expired(hour)                 # 60 s before the end
    short = google.save({"access_token": "a", "expires_in": 100})
    clock[0] += 89
    assert not google.expired(short)
    clock[0] += 1
    assert google.expired(short)                # 10 s (a tenth of 100) before the end


def test_a_valid_token_is_used_without_calling_the_endpoint(google, peer):
    google.save({"access_token": "a1", "refresh_token": "r1", "expires_in": 3600})
    assert google.access_token() == "a1"
    assert peer.forms == []


def test_an_expired_token_is_refreshed_and_the_refresh_token_kept(google, peer, clock, secrets):
    google.save({"access_token": "a1", "refresh_token": "r1", "expires_in": 3600})
    clock[0] += 3600
    peer.answers.append((200, {"access_token": "a2", "expires_in": 3600}))
    assert google.access_token() == "a2"
    assert peer.forms == [{"grant_type": "refresh_token", "refresh_token": "r1", "client_id": "cid",
                           "client_secret": "csecret"}]
    stored = json.loads(secrets.get(TENANT, "oauth.google"))
    assert (stored["access_token"], stored["refresh_token"], stored["expires_at"]) == ("a2", "r1", clock[0] + 3600)
    # force_refresh: the API refused the token; a rotated refresh token replaces the old.
    peer.answers.append((200, {"access_token": "a3", "refresh_token": "r2", "expires_in": 3600}))
    assert google.access_token(force_refresh=True) == "a3"
    assert peer.forms[-1]["refresh_token"] == "r1"
    assert json.loads(secrets.get(TENANT, "oauth.google"))["refresh_token"] == "r2"


def test_microsoft_refreshes_send_the_scopes_again(settings, peer, secrets, clock):
    ms = tokens.Tokens(secrets, TENANT, providers.config("onedrive", _settings(settings, peer)), clock=lambda: clock[0])
    ms.save({"access_token": "a1", "refresh_token": "r1", "expires_in": 0})
    peer.answers.append((200, {"access_token": "a2", "expires_in": 3600}))
    assert ms.access_token() == "a2"
    assert peer.forms == [{"grant_type": "refresh_token", "refresh_token": "r1", "scope": "Files.Read.All offline_access",
                           "client_id": "ms-cid"}]


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "consent_required"])
def test_a_refused_refresh_deletes_the_tokens_and_says_so(google, peer, secrets, error):
    google.save({"access_token": "a1", "refresh_token": "r1", "expires_in": 0})
    peer.answers.append((400, {"error": error, "error_description": "revoked by user"}))
    with pytest.raises(SourceError) as raised:
        google.access_token()
    assert str(raised.value) == (f"Google (Drive): the authorization of tenant acme was revoked or has expired "
                                 f"(refresh refused: {error}, revoked by user): discover the link again to "
                                 "authorize anew")
    with pytest.raises(NotFound):
        secrets.get(TENANT, "oauth.google")
    assert not google.exists()


def test_a_passing_refresh_error_keeps_the_tokens(google, peer, secrets):
    google.save({"access_token": "a1", "refresh_token": "r1", "expires_in": 0})
    peer.answers.append((503, {"error": "temporarily_unavailable"}))
    with pytest.raises(OAuthError, match="temporarily_unavailable"):
        google.access_token()
    assert json.loads(secrets.get(TENANT, "oauth.google"))["refresh_token"] == "r1"


def test_no_refresh_token_or_no_tokens(google, peer):
    with pytest.raises(SourceError, match=r"no Google \(Drive\) authorization for tenant acme: discover the link"):
        google.access_token()
    google.save({"access_token": "a1", "expires_in": 0})
    with pytest.raises(SourceError, match="expired and there is no refresh token"):
        google.access_token()
    assert not google.exists() and peer.forms == []


def test_authorized_and_tenant_checks(settings, peer, secrets, google):
    configured = _settings(settings, peer)
    assert tokens.authorized(configured, secrets, TENANT, "gdrive") is False
    google.save({"access_token": "a1"})
    assert tokens.authorized(configured, secrets, TENANT, "gdrive") is True
    assert tokens.authorized(configured, secrets, TENANT, "onedrive") is False
    assert tokens.authorized(configured, secrets, "other", "gdrive") is False
    with pytest.raises(InputError, match="invalid tenant id"):
        tokens.Tokens(secrets, "Not A Tenant", google.cfg)

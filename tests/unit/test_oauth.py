"""The pure parts of OAuth and the share-link connectors: PKCE, Graph share ids, Drive link
parsing, the authorization URL and its server-side verifier, the signed state, token refresh
and the device-code polling loop (against a scripted token endpoint and a fake clock)."""
from __future__ import annotations

import json
import re

import pytest

from shared.security import auth
from shared.sources import oauth
from shared.core.errors import InputError, SourceError
from shared.security.secrets import LocalSecretStore
from shared.core.settings import Settings
from shared.sources import gdrive, msgraph

pytestmark = pytest.mark.unit

TENANT, JOB = "acme", "job-0123456789abcdef"


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env(env={}, home=tmp_path / "udb", ms_client_id="ms-app", google_client_id="g-app",
                             google_client_secret="g-secret", oauth_redirect_url="https://udb.example.com/oauth/callback")


@pytest.fixture
def secrets(tmp_path):
    return LocalSecretStore(tmp_path / "secrets")


# ---------------------------------------------------------------- PKCE

def test_pkce_s256_matches_rfc_7636_appendix_b():
    assert oauth.code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_code_verifiers_are_long_random_and_unreserved():
    verifiers = {oauth.new_code_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for v in verifiers:
        assert 43 <= len(v) <= 128 and re.fullmatch(r"[A-Za-z0-9\-._~]+", v)
        challenge = oauth.code_challenge(v)
        assert len(challenge) == 43 and "=" not in challenge and re.fullmatch(r"[A-Za-z0-9_-]+", challenge)


# ---------------------------------------------------------------- links

def test_graph_share_id_of_the_documented_example():
    # learn.microsoft.com, "Access shared items": the encoded form of this sharing URL.
    assert msgraph.share_id("https://onedrive.live.com/redir?resid=1231244193912!12&authKey=1201919!12921!1") == \
        "u!aHR0cHM6Ly9vbmVkcml2ZS5saXZlLmNvbS9yZWRpcj9yZXNpZD0xMjMxMjQ0MTkzOTEyITEyJmF1dGhLZXk9MTIwMTkxOSExMjkyMSEx"


@pytest.mark.parametrize("link", ["https://contoso.sharepoint.com/:x:/s/team/EaB?e=z~?>", "https://1drv.ms/u/s!A",
                                  "https://1drv.ms/x/s!AbCd", "https://1drv.ms/f/s!AbCdE?e=x_y-z"])
def test_graph_share_ids_are_unpadded_base64url_and_round_trip(link):
    import base64
    sid = msgraph.share_id(link)
    assert sid.startswith("u!") and not set(sid[2:]) & set("=+/")
    assert base64.urlsafe_b64decode(sid[2:] + "=" * (-len(sid[2:]) % 4)).decode() == link


@pytest.mark.parametrize("link, provider", [
    ("https://1drv.ms/u/s!AbC", "onedrive"), ("https://onedrive.live.com/redir?resid=1", "onedrive"),
    ("https://contoso-my.sharepoint.com/:x:/p/ada/EaBc", "onedrive"),
    ("https://contoso.sharepoint.com/:f:/s/team/EaBc", "sharepoint"),
])
def test_graph_links_name_their_provider_as_detect_does(link, provider):
    from functions.discover.detect import detect
    assert msgraph.provider_of(link) == provider == detect(link, probe=False)["candidates"][0]["provider"]


@pytest.mark.parametrize("link, file_id", [
    ("https://drive.google.com/file/d/1AbC_d-E/view?usp=sharing", "1AbC_d-E"),
    ("https://drive.google.com/file/d/1AbC_d-E", "1AbC_d-E"),
    ("https://drive.google.com/open?id=1XyZ", "1XyZ"),
    ("https://drive.google.com/uc?id=1XyZ&export=download", "1XyZ"),
    ("https://drive.google.com/drive/folders/0BFold3r?usp=drive_link", "0BFold3r"),
    ("https://drive.google.com/drive/u/0/folders/0BFold3r", "0BFold3r"),
    ("https://docs.google.com/spreadsheets/d/1Sheet_9/edit#gid=0", "1Sheet_9"),
    ("https://docs.google.com/document/d/1Doc-7/edit", "1Doc-7"),
])
def test_drive_links_give_the_file_id(link, file_id):
    assert gdrive.file_id(link) == file_id


@pytest.mark.parametrize("link", ["https://drive.google.com/drive/my-drive", "https://docs.google.com/",
                                  "https://example.com/file/d/1AbC/view", "https://drive.google.com/open?id=a'b"])
def test_drive_links_without_an_id_are_refused(link):
    with pytest.raises(SourceError):
        gdrive.file_id(link)


def test_drive_plans_exports_and_skips():
    assert gdrive.plan({"id": "1S", "name": "Budget", "mimeType": gdrive.SHEET}) == \
        ("/files/1S/export?mimeType=text%2Fcsv", "Budget.csv")
    assert gdrive.plan({"id": "1D", "name": "Plan", "mimeType": gdrive.DOC})[1] == "Plan.docx"
    assert gdrive.plan({"id": "1F", "name": "a.csv", "mimeType": "text/csv"}) == \
        ("/files/1F?alt=media&supportsAllDrives=true", "a.csv")
    for skipped in ({"id": "1P", "name": "Deck", "mimeType": "application/vnd.google-apps.presentation"},
                    {"id": "1J", "name": "photo.jpg", "mimeType": "image/jpeg"},
                    {"id": "1H", "name": ".hidden.csv", "mimeType": "text/csv"}):
        assert gdrive.plan(skipped) is None


# ---------------------------------------------------------------- provider settings

def test_provider_endpoints_come_from_the_settings(settings):
    ms = oauth.config("sharepoint", settings)
    assert (ms.authorize_url, ms.token_url, ms.device_url) == tuple(
        f"https://login.microsoftonline.com/common/oauth2/v2.0/{p}" for p in ("authorize", "token", "devicecode"))
    assert ms.scopes == "Files.Read.All offline_access" and ms.client_secret == ""
    google = oauth.config("gdrive", settings)
    assert (google.authorize_url, google.token_url, google.device_url) == (
        "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
        "https://oauth2.googleapis.com/device/code")
    assert google.scopes == "https://www.googleapis.com/auth/drive.readonly"
    with pytest.raises(SourceError, match="OAuth is not configured: set UDB_OAUTH_MS_CLIENT_ID"):
        oauth.config("onedrive", Settings.from_env(env={}))
    with pytest.raises(InputError, match="no OAuth provider for 'dropbox'"):
        oauth.config("dropbox", settings)


# ---------------------------------------------------------------- authorization URL and state

def test_the_authorization_url_carries_the_challenge_and_a_signed_state_not_the_verifier(settings, secrets):
    import httpx
    url = httpx.URL(oauth.authorization_url(settings, secrets, TENANT, JOB, "onedrive", now=1_000_000))
    params = dict(url.params)
    assert str(url).startswith("https://login.microsoftonline.com/common/oauth2/v2.0/authorize?")
    assert params == {"client_id": "ms-app", "response_type": "code",
                      "redirect_uri": "https://udb.example.com/oauth/callback",
                      "scope": "Files.Read.All offline_access", "state": params["state"],
                      "code_challenge": params["code_challenge"], "code_challenge_method": "S256",
                      "response_mode": "query"}
    pending = json.loads(secrets.get(TENANT, oauth.pending_name(params["state"])))
    assert oauth.code_challenge(pending["verifier"]) == params["code_challenge"]
    assert pending["verifier"] not in str(url) and pending["job_id"] == JOB
    # Embedded mode without UDB_JWT_SECRET: the state is signed with a per-tenant key.
    assert oauth.STATE_KEY_NAME in secrets.names(TENANT)
    fresh = httpx.URL(oauth.authorization_url(settings, secrets, TENANT, JOB, "gdrive")).params["state"]
    assert oauth.verify_state(settings, secrets, fresh) == auth.Principal(TENANT, "analyst", "oauth-state", JOB)
    with pytest.raises(auth.Unauthorized, match="expired"):
        oauth.verify_state(settings, secrets, params["state"])
    tampered = fresh.replace(JOB, "job-fedcba9876543210")
    with pytest.raises(auth.Unauthorized, match="does not verify"):
        oauth.verify_state(settings, secrets, tampered)
    with pytest.raises(auth.Unauthorized):
        oauth.verify_state(settings, secrets, "beta" + fresh[4:])


def test_with_authentication_on_the_state_needs_the_jwt_secret(settings, secrets):
    import dataclasses
    on = dataclasses.replace(settings, auth="on")
    with pytest.raises(SourceError, match="OAuth needs UDB_JWT_SECRET"):
        oauth.authorization_url(on, secrets, TENANT, JOB, "onedrive")
    signed = dataclasses.replace(on, jwt_secret="s" * 40)
    import httpx
    state = httpx.URL(oauth.authorization_url(signed, secrets, TENANT, JOB, "onedrive")).params["state"]
    assert auth.verify_state(state, "s" * 40).tenant == TENANT  # what the gatekeeper checks


# ---------------------------------------------------------------- tokens

class Script:
    """A scripted token endpoint: each call pops the next answer (a dict, or an error code)."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, cfg, form, url=None):
        self.calls.append(dict(form))
        answer = self.answers.pop(0)
        if isinstance(answer, str):
            raise oauth.OAuthError(cfg.label, answer)
        return answer


def test_tokens_refresh_on_expiry_and_keep_the_refresh_token(settings, secrets, monkeypatch):
    now = [1000.0]
    tokens = oauth.Tokens(secrets, TENANT, oauth.config("onedrive", settings), clock=lambda: now[0])
    tokens.save({"access_token": "a1", "refresh_token": "r1", "expires_in": 3600})
    script = Script({"access_token": "a2", "expires_in": 3600})  # no new refresh token: keep r1
    monkeypatch.setattr(oauth.providers, "token_request", script)
    assert tokens.access_token() == "a1" and script.calls == []
    now[0] += 3600 - 59  # within the skew (60 s): refresh
    assert tokens.access_token() == "a2"
    assert script.calls == [{"grant_type": "refresh_token", "refresh_token": "r1",
                             "scope": "Files.Read.All offline_access"}]
    stored = json.loads(secrets.get(TENANT, "oauth.microsoft"))
    assert stored["refresh_token"] == "r1" and stored["expires_at"] == now[0] + 3600


def test_a_refused_refresh_deletes_the_tokens_and_says_so(settings, secrets, monkeypatch):
    tokens = oauth.Tokens(secrets, TENANT, oauth.config("gdrive", settings), clock=lambda: 10_000.0)
    tokens.save({"access_token": "a1", "refresh_token": "r1", "expires_in": 0})
    monkeypatch.setattr(oauth.providers, "token_request", Script("invalid_grant"))
    with pytest.raises(SourceError, match=r"Google \(Drive\): the authorization of tenant acme was revoked or has "
                                          r"expired \(refresh refused: invalid_grant\): discover the link again"):
        tokens.access_token()
    assert "oauth.google" not in secrets.names(TENANT)
    with pytest.raises(SourceError, match="no Google \\(Drive\\) authorization for tenant acme"):
        tokens.access_token()


# ---------------------------------------------------------------- device code

def _start(settings, secrets, monkeypatch, interval=5, expires_in=600):
    monkeypatch.setattr(oauth.providers, "_post_form", lambda cfg, url, form: (200, {
        "device_code": "dc-1", "user_code": "ABCD-EFGH", "verification_url": "https://www.google.com/device",
        "expires_in": expires_in, "interval": interval}))
    return oauth.device_start(settings, secrets, TENANT, "gdrive", now=0.0)


def test_device_wait_honours_interval_slow_down_and_pending(settings, secrets, monkeypatch):
    started = _start(settings, secrets, monkeypatch)
    assert started["verification_uri"] == "https://www.google.com/device" and started["user_code"] == "ABCD-EFGH"
    script = Script("authorization_pending", "slow_down", "authorization_pending",
                    {"access_token": "at", "refresh_token": "rt", "expires_in": 3599})
    clock, sleeps, polled_at = [0.0], [], []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    def spy(cfg, form, url=None):
        polled_at.append(clock[0])
        return script(cfg, form, url)

    monkeypatch.setattr(oauth.providers, "token_request", spy)
    result = oauth.device_wait(settings, secrets, TENANT, started["deviceId"], sleep=sleep, clock=lambda: clock[0])
    assert result["status"] == "authorized"
    # First poll after the interval; slow_down adds 5 s to this and every later interval.
    assert polled_at == [5.0, 10.0, 20.0, 30.0] and sleeps == [5, 5, 10, 10]
    assert all(c["grant_type"] == oauth.DEVICE_GRANT and c["device_code"] == "dc-1" for c in script.calls)
    assert json.loads(secrets.get(TENANT, "oauth.google"))["access_token"] == "at"
    assert not [n for n in secrets.names(TENANT) if n.startswith("oauth.device.")]


@pytest.mark.parametrize("answer, status, message", [("expired_token", "expired", "device code expired"),
                                                     ("access_denied", "denied", "access_denied")])
def test_device_wait_stops_on_expired_token_and_denial(settings, secrets, monkeypatch, answer, status, message):
    started = _start(settings, secrets, monkeypatch)
    monkeypatch.setattr(oauth.providers, "token_request", Script("authorization_pending", answer))
    clock = [0.0]
    with pytest.raises(SourceError, match=message):
        oauth.device_wait(settings, secrets, TENANT, started["deviceId"], sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                          clock=lambda: clock[0])
    with pytest.raises(Exception, match="no device authorization"):
        oauth.device_poll(settings, secrets, TENANT, started["deviceId"], now=clock[0])


def test_device_code_past_its_expiry_is_not_polled(settings, secrets, monkeypatch):
    started = _start(settings, secrets, monkeypatch, expires_in=30)
    script = Script()
    monkeypatch.setattr(oauth.providers, "token_request", script)
    assert oauth.device_poll(settings, secrets, TENANT, started["deviceId"], now=31.0)["status"] == "expired"
    assert script.calls == []
    with pytest.raises(InputError, match="invalid device authorization id"):
        oauth.device_poll(settings, secrets, TENANT, "../etc")


# ---------------------------------------------------------------- the SSRF guard

def test_token_calls_go_through_the_ssrf_guard(settings, monkeypatch):
    import dataclasses
    from shared.security import netguard
    settings = dataclasses.replace(settings, net_allowlist="")  # the caller's allowlist guards the token calls
    local = oauth.config("onedrive", dataclasses.replace(settings, ms_authority="http://127.0.0.1:9/ms"))
    with pytest.raises(netguard.BlockedAddress, match="refused to connect to 127.0.0.1: a loopback address"):
        oauth.token_request(local, {"grant_type": "refresh_token", "refresh_token": "r"})
    metadata = oauth.config("gdrive", dataclasses.replace(settings, google_token_url="http://169.254.169.254/token"))
    with pytest.raises(netguard.BlockedAddress, match="cloud metadata"):
        oauth.token_request(metadata, {"grant_type": "refresh_token", "refresh_token": "r"})


def test_without_a_broker_a_stack_function_keeps_the_tokens_but_does_not_resume(settings, secrets):
    import dataclasses
    from types import SimpleNamespace
    ctx = SimpleNamespace(settings=dataclasses.replace(settings, mode="cluster"), secrets=secrets,
                          jobs=lambda tenant: None)
    assert oauth.resume_job(ctx, TENANT, JOB) == {
        "resumed": False, "state": None, "error": "no broker (K_SINK) here to resume the job: discover the link again"}


def test_the_oauth_package_keeps_the_public_names_of_the_old_module():
    """oauth.py became a package split by responsibility; `oauth.<name>` still reaches each public
    name it had, from the module that now defines it. Its provider constants (MICROSOFT, GOOGLE,
    SOURCE_PROVIDERS, LABELS) moved to the connectors (`Connector.oauth`)."""
    import importlib

    old = ["ApiSession", "AuthorizationNeeded", "AuthorizationRefused", "DEFAULT_INTERVAL", "DEVICE_GRANT",
           "DEVICE_ID_PREFIX", "EXPIRY_SKEW", "MAX_LISTING_BYTES", "MAX_TOKEN_ANSWER", "OAuthError",
           "ProviderConfig", "ROUTES", "SLOW_DOWN_STEP", "STATE_KEY_NAME", "STATE_SECONDS", "TOKEN_DEADLINE",
           "Tokens", "authorization_url", "authorized", "callback", "clear_waiting", "code_challenge",
           "complete_authorization", "config", "device", "device_name", "device_poll", "device_start", "device_wait",
           "fail_waiting_job", "job_name", "mark_waiting", "new_code_verifier", "pending_name", "provider_of",
           "request_authorization", "resume_job", "state_secret", "token_request", "tokens_name", "verify_state"]
    homes = {name: getattr(oauth, name).__module__ for name in old if callable(getattr(oauth, name))}
    assert set(old) <= set(oauth.__all__)
    assert {homes[n] for n in ("config", "provider_of", "token_request", "OAuthError")} == {
        "shared.sources.oauth.providers"}
    assert {homes[n] for n in ("Tokens", "authorized")} == {"shared.sources.oauth.tokens"}
    assert {homes[n] for n in ("authorization_url", "complete_authorization", "device_poll")} == {
        "shared.sources.oauth.flow"}
    assert {homes[n] for n in ("request_authorization", "resume_job", "AuthorizationNeeded")} == {
        "shared.sources.oauth.waiting"}
    assert homes["ApiSession"] == "shared.sources.oauth.api" and homes["callback"] == "shared.sources.oauth.routes"
    for module in ("providers", "tokens", "flow", "waiting", "api", "routes"):
        assert getattr(oauth, module) is importlib.import_module(f"shared.sources.oauth.{module}")
    with pytest.raises(AttributeError, match="has no attribute 'SOURCE_PROVIDERS'"):
        oauth.SOURCE_PROVIDERS
    assert oauth.provider_of("onedrive") == oauth.provider_of("sharepoint") == "microsoft"
    assert oauth.provider_of("gdrive") == "google" and oauth.provider_of("google") == "google"

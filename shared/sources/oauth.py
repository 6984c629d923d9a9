"""OAuth 2.0 for the share-link providers: OneDrive and SharePoint (Microsoft identity platform
v2, Graph) and Google Drive.

Flows (README, "OAuth"):
- **Authorization code with PKCE (S256)**: discover, finding no token for the tenant, builds the
  provider's authorization URL (`oauthUrl`) whose `state` is `shared.security.auth.sign_state` (tenant,
  job, expiry, HMAC-signed); the PKCE `code_verifier` stays server-side, in the tenant's secret
  store under a name derived from the state's hash (never in the URL, an event or a log). The
  provider redirects the browser to `GET /oauth/callback?code&state` on the artifacts function,
  which verifies the state, exchanges the code (with the verifier) and stores the tokens.
- **Device code (RFC 8628)**, the fallback where no browser can reach the callback: start
  answers `verification_uri` + `user_code`; each poll honours `interval` (never calls the
  provider sooner), `authorization_pending`, `slow_down` (+5 s, for this and every later poll)
  and `expired_token`.
- **Tokens** live per tenant in the secret store (`oauth.microsoft`, `oauth.google`), never in
  job or source documents, events or logs; an access token past its expiry is refreshed with
  the refresh_token grant and the new pair stored. A refresh the provider refuses
  (`invalid_grant`: revoked, expired) deletes the stored pair and fails with the reason.
- **Resuming**: a job whose discover found no token waits in `discovering` with
  `error.waiting = "authorization"` (and the `oauthUrl` or the device code). When the callback (or
  a device poll) stores the tokens, it re-emits the job's `dev.udb.discover.requested` — to the
  broker at `K_SINK` when there is one, else through the in-process embedded dispatcher — so
  the same job goes on to discover, sync and load.

Every call to a provider goes through the SSRF guard (`shared.security.netguard`) with its timeouts.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets as _random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx

from shared.security import auth, netguard
from shared.core.errors import InputError, NotFound, PreconditionFailed, SourceError, UDBError
from shared.core.tenancy import validate_job_id, validate_tenant

MICROSOFT, GOOGLE = "microsoft", "google"
# Source provider (what detect names) -> the OAuth provider that authorizes it.
SOURCE_PROVIDERS = {"onedrive": MICROSOFT, "sharepoint": MICROSOFT, "gdrive": GOOGLE}
LABELS = {MICROSOFT: "Microsoft (OneDrive/SharePoint)", GOOGLE: "Google (Drive)"}
STATE_SECONDS = 900          # how long an oauthUrl (its signed state) may be completed
EXPIRY_SKEW = 60             # refresh this long before the access token's expiry (at most 10% of its life)
TOKEN_DEADLINE = 30.0        # one call to a token or device endpoint, all in
MAX_TOKEN_ANSWER = 1 << 20   # bytes of a token endpoint's answer
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5           # RFC 8628 3.5: seconds added to the interval on slow_down
DEFAULT_INTERVAL = 5
DEVICE_ID_PREFIX = "dev-"


class AuthorizationNeeded(UDBError):
    """Discover found no token for the tenant: the job waits for the user (see `wait`)."""

    def __init__(self, wait: dict):
        self.wait = wait
        super().__init__(wait["reason"])


class OAuthError(SourceError):
    """An error answer of a token or device endpoint (RFC 6749 5.2)."""

    def __init__(self, label: str, error: str, description: str = ""):
        self.error, self.description = error, description
        super().__init__(f"{label}: the token endpoint answered {error}" + (f" ({description})" if description else ""))


# ---------------------------------------------------------------- providers

@dataclass(frozen=True)
class ProviderConfig:
    name: str
    authorize_url: str
    token_url: str
    device_url: str
    client_id: str
    client_secret: str
    scopes: str
    auth_params: tuple = ()
    client_setting: str = ""
    # The settings this config came from: their SSRF allowlist guards the token calls.
    settings: Any = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return LABELS[self.name]


def provider_of(name: str) -> str:
    """The OAuth provider (microsoft, google) of a source provider or of itself."""
    if name in (MICROSOFT, GOOGLE):
        return name
    try:
        return SOURCE_PROVIDERS[name]
    except KeyError:
        raise InputError(f"no OAuth provider for {name!r}; known: {', '.join([*SOURCE_PROVIDERS, MICROSOFT, GOOGLE])}") from None


def config(name: str, settings, *, require: bool = True) -> ProviderConfig:
    """The provider's endpoints and client from the settings (InputError when no client id is
    configured and `require`)."""
    provider = provider_of(name)
    if provider == MICROSOFT:
        base = settings.ms_authority.rstrip("/")
        cfg = ProviderConfig(MICROSOFT, f"{base}/authorize", f"{base}/token", f"{base}/devicecode",
                             settings.ms_client_id, settings.ms_client_secret, settings.ms_scopes,
                             (("response_mode", "query"),), "UDB_OAUTH_MS_CLIENT_ID", settings)
    else:
        # offline + consent: Google returns a refresh token only then.
        cfg = ProviderConfig(GOOGLE, settings.google_auth_url, settings.google_token_url, settings.google_device_url,
                             settings.google_client_id, settings.google_client_secret, settings.google_scopes,
                             (("access_type", "offline"), ("prompt", "consent"), ("include_granted_scopes", "true")),
                             "UDB_OAUTH_GOOGLE_CLIENT_ID", settings)
    if require and not cfg.client_id:
        raise SourceError(f"{cfg.label} OAuth is not configured: set {cfg.client_setting} (and its secret) to "
                         f"UDB's registered app (README: OAuth)")
    return cfg


# ---------------------------------------------------------------- PKCE

def new_code_verifier() -> str:
    """RFC 7636 4.1: 43-128 unreserved characters; here 86 from 64 random bytes."""
    return _random.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """S256: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


# ---------------------------------------------------------------- names in the secret store

def tokens_name(provider: str) -> str:
    return f"oauth.{provider}"


def pending_name(state: str) -> str:
    return "oauth.pending." + hashlib.sha256(state.encode()).hexdigest()[:32]


def job_name(job_id: str) -> str:
    return f"oauth.job.{validate_job_id(job_id)}"


def device_name(device_id: str) -> str:
    if not (isinstance(device_id, str) and device_id.startswith(DEVICE_ID_PREFIX) and len(device_id) == 20
            and all(c in "0123456789abcdef" for c in device_id[4:])):
        raise InputError(f"invalid device authorization id {device_id!r}: expected dev- and 16 hex digits")
    return f"oauth.device.{device_id}"


STATE_KEY_NAME = "oauth.state-key"


def _get_json(secrets, tenant: str, name: str) -> dict | None:
    try:
        return json.loads(secrets.get(tenant, name))
    except NotFound:
        return None


def _put_json(secrets, tenant: str, name: str, value: dict) -> None:
    secrets.put(tenant, name, json.dumps(value, sort_keys=True))


# ---------------------------------------------------------------- state

def state_secret(settings, secrets, tenant: str) -> str:
    """The key that signs and verifies OAuth states: UDB_JWT_SECRET; without one, and with
    authentication off (embedded mode), a random key kept in the tenant's secret store."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if auth.enabled(settings):
        raise SourceError("OAuth needs UDB_JWT_SECRET (at least 32 characters) to sign its state")
    try:
        return secrets.get(tenant, STATE_KEY_NAME)
    except NotFound:
        key = _random.token_urlsafe(48)
        secrets.put(tenant, STATE_KEY_NAME, key)
        return key


def verify_state(settings, secrets, state: str) -> auth.Principal:
    """The principal (tenant, job) of a signed state; auth.Unauthorized when it does not verify."""
    tenant = (state or "").split(".", 1)[0]
    try:
        validate_tenant(tenant)
    except InputError:
        raise auth.Unauthorized("missing or malformed OAuth state") from None
    if settings.jwt_secret or auth.enabled(settings):
        secret = settings.jwt_secret
    else:
        try:
            secret = secrets.get(tenant, STATE_KEY_NAME)
        except NotFound:
            raise auth.Unauthorized("OAuth state does not verify") from None
    return auth.verify_state(state, secret)


# ---------------------------------------------------------------- token endpoint

def _post_form(cfg: ProviderConfig, url: str, form: dict) -> tuple[int, dict]:
    """POST a form to one of the provider's endpoints through the SSRF guard: (status, JSON)."""
    from shared.sources import http as web

    try:
        with netguard.client(cfg.settings, deadline=TOKEN_DEADLINE) as http:
            response = netguard.send(http, "POST", url, data=form, stream=True,
                                     headers={"Accept": "application/json"})
            try:
                body = web.read_capped(response, MAX_TOKEN_ANSWER, f"{cfg.label} token endpoint")
            finally:
                response.close()
    except netguard.BlockedAddress:
        raise
    except httpx.HTTPError as exc:
        raise SourceError(f"{cfg.label}: {web.describe_error(url, exc)}") from None
    try:
        answer = json.loads(body) if body.strip() else {}
    except ValueError:
        raise SourceError(f"{cfg.label}: {url} answered {response.status_code} without JSON") from None
    if not isinstance(answer, dict):
        raise SourceError(f"{cfg.label}: {url} answered {response.status_code} with JSON that is not an object")
    return response.status_code, answer


def token_request(cfg: ProviderConfig, form: dict, url: str | None = None) -> dict:
    """One call to the token endpoint (or `url`) with the client's credentials; the answer, or
    OAuthError naming the provider's error code."""
    form = {**form, "client_id": cfg.client_id}
    if cfg.client_secret:
        form["client_secret"] = cfg.client_secret
    status, answer = _post_form(cfg, url or cfg.token_url, form)
    if status >= 400 or answer.get("error"):
        error = answer.get("error")
        if isinstance(error, dict):  # not RFC 6749, but some gateways answer so
            error = error.get("code") or error.get("message")
        raise OAuthError(cfg.label, str(error or f"http_{status}"), str(answer.get("error_description") or "")[:300])
    return answer


# ---------------------------------------------------------------- tokens

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(tenant: str, provider: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((tenant, provider), threading.Lock())


class Tokens:
    """The tenant's tokens of one OAuth provider in the secret store, refreshed on expiry."""

    def __init__(self, secrets, tenant: str, cfg: ProviderConfig, *, clock=time.time):
        self.secrets, self.tenant, self.cfg, self.clock = secrets, validate_tenant(tenant), cfg, clock
        self.name = tokens_name(cfg.name)
        self._record: dict | None = None

    @classmethod
    def of_env(cls, env, source_provider: str) -> "Tokens":
        return cls(env.secret_store(), env.tenant, config(source_provider, env.settings))

    def load(self) -> dict | None:
        self._record = _get_json(self.secrets, self.tenant, self.name)
        return self._record

    def exists(self) -> bool:
        return self.load() is not None

    def save(self, answer: dict, previous: dict | None = None) -> dict:
        """Store a token endpoint's answer; a refresh that returns no new refresh token keeps the old."""
        if not answer.get("access_token"):
            raise SourceError(f"{self.cfg.label}: the token endpoint answered without an access_token")
        now = self.clock()
        lifetime = _seconds(answer.get("expires_in"), 3600)
        record = {"access_token": answer["access_token"],
                  "refresh_token": answer.get("refresh_token") or (previous or {}).get("refresh_token"),
                  "token_type": answer.get("token_type", "Bearer"), "scope": answer.get("scope", self.cfg.scopes),
                  "obtained_at": now, "lifetime": lifetime, "expires_at": now + lifetime}
        _put_json(self.secrets, self.tenant, self.name, record)
        self._record = record
        return record

    def delete(self) -> None:
        self.secrets.delete(self.tenant, self.name)
        self._record = None

    def expired(self, record: dict) -> bool:
        skew = min(EXPIRY_SKEW, 0.1 * float(record.get("lifetime") or 0))
        return self.clock() >= float(record.get("expires_at") or 0) - skew

    def access_token(self, *, force_refresh: bool = False) -> str:
        """A valid access token: the stored one, or a refreshed one when it has expired (or
        when `force_refresh`, after the API refused it)."""
        with _lock(self.tenant, self.cfg.name):
            record = self._record if (self._record is not None and not force_refresh) else self.load()
            if record is None:
                raise SourceError(f"no {self.cfg.label} authorization for tenant {self.tenant}: discover the "
                                  f"link to get an oauthUrl (or start the device-code flow: POST /oauth/device)")
            if force_refresh or self.expired(record):
                record = self._refresh(record)
            return record["access_token"]

    def _refresh(self, record: dict) -> dict:
        if not record.get("refresh_token"):
            self.delete()
            raise SourceError(f"{self.cfg.label}: the access token of tenant {self.tenant} expired and there is no "
                              f"refresh token: discover the link again to authorize anew")
        form = {"grant_type": "refresh_token", "refresh_token": record["refresh_token"]}
        if self.cfg.name == MICROSOFT:
            form["scope"] = self.cfg.scopes  # v2 endpoints want the scopes again
        try:
            answer = token_request(self.cfg, form)
        except OAuthError as exc:
            if exc.error in ("invalid_grant", "invalid_token", "unauthorized_client", "invalid_client",
                             "interaction_required", "consent_required"):
                self.delete()
                raise SourceError(f"{self.cfg.label}: the authorization of tenant {self.tenant} was revoked or has "
                                  f"expired (refresh refused: {exc.error}"
                                  + (f", {exc.description}" if exc.description else "")
                                  + "): discover the link again to authorize anew") from None
            raise
        return self.save(answer, previous=record)


def _seconds(value, default: int) -> int:
    try:
        return max(0, int(float(value)))
    except (TypeError, ValueError):
        return default


def authorized(settings, secrets, tenant: str, source_provider: str) -> bool:
    """True when the tenant holds tokens of the source provider's OAuth provider."""
    return _get_json(secrets, tenant, tokens_name(provider_of(source_provider))) is not None


# ---------------------------------------------------------------- authorization code + PKCE

def _drop_expired(secrets, tenant: str, prefix: str, now: float) -> None:
    """Forget abandoned pending authorizations and device sessions of the tenant."""
    for name in secrets.names(tenant):
        if name.startswith(prefix):
            record = _get_json(secrets, tenant, name)
            if record is None or float(record.get("expires_at", 0)) < now:
                secrets.delete(tenant, name)


def authorization_url(settings, secrets, tenant: str, job_id: str, source_provider: str,
                      *, now: float | None = None) -> str:
    """The provider's authorization URL for the tenant's job (PKCE S256, signed state); the
    code verifier is kept in the tenant's secret store, keyed by the state's hash."""
    cfg = config(source_provider, settings)
    now = time.time() if now is None else now
    state = auth.sign_state(state_secret(settings, secrets, tenant), tenant, job_id, STATE_SECONDS, now=now)
    verifier = new_code_verifier()
    _drop_expired(secrets, tenant, "oauth.pending.", now)
    _put_json(secrets, tenant, pending_name(state),
              {"provider": cfg.name, "source_provider": source_provider, "job_id": job_id, "verifier": verifier,
               "redirect_uri": settings.oauth_redirect_url, "expires_at": now + STATE_SECONDS})
    params = {"client_id": cfg.client_id, "response_type": "code", "redirect_uri": settings.oauth_redirect_url,
              "scope": cfg.scopes, "state": state, "code_challenge": code_challenge(verifier),
              "code_challenge_method": "S256", **dict(cfg.auth_params)}
    return cfg.authorize_url + ("&" if "?" in cfg.authorize_url else "?") + urlencode(params, quote_via=quote)


def complete_authorization(settings, secrets, state: str, *, code: str | None, error: str | None = None,
                           error_description: str | None = None) -> tuple[auth.Principal, dict]:
    """The callback's work: verify the state, take (once) its pending record, and exchange the
    code with the verifier; returns (principal, pending). Raises auth.Unauthorized for a bad
    state, AuthorizationRefused for a provider's error or a state already used."""
    principal = verify_state(settings, secrets, state)
    tenant = principal.tenant
    name = pending_name(state)
    pending = _get_json(secrets, tenant, name)
    if pending is None:
        raise AuthorizationRefused(principal, "", "this authorization was completed already (an oauthUrl works "
                                                  "once): discover the link again for a new one")
    secrets.delete(tenant, name)  # one use, whatever comes next
    cfg = config(pending["source_provider"], settings)
    if error:
        text = f"authorization refused at {cfg.label}: {error}"
        if error_description:
            text += f" ({error_description[:300]})"
        raise AuthorizationRefused(principal, pending["source_provider"], text)
    if not code:
        raise AuthorizationRefused(principal, pending["source_provider"],
                                   f"{cfg.label} redirected back without a code")
    try:
        answer = token_request(cfg, {"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": pending["redirect_uri"], "code_verifier": pending["verifier"]})
    except OAuthError as exc:
        raise AuthorizationRefused(principal, pending["source_provider"],
                                   f"{cfg.label} refused the authorization code: {exc.error}"
                                   + (f" ({exc.description})" if exc.description else "")) from None
    except SourceError as exc:  # the token endpoint unreachable, refused by the SSRF guard...
        # The code is spent either way: the job cannot finish this authorization.
        raise AuthorizationRefused(principal, pending["source_provider"],
                                   f"cannot exchange the authorization code: {exc}") from None
    Tokens(secrets, tenant, cfg).save(answer)
    return principal, pending


class AuthorizationRefused(InputError):
    """The callback cannot complete: the provider's error (access_denied...) or a used state."""

    def __init__(self, principal: auth.Principal, source_provider: str, reason: str):
        self.principal, self.source_provider = principal, source_provider
        super().__init__(reason)


# ---------------------------------------------------------------- device code (RFC 8628)

def device_start(settings, secrets, tenant: str, source_provider: str, *, job_id: str | None = None,
                 now: float | None = None) -> dict:
    """Start a device authorization: what the user must open and type, and the id to poll."""
    cfg = config(source_provider, settings)
    now = time.time() if now is None else now
    form = {"client_id": cfg.client_id, "scope": cfg.scopes}
    status, answer = _post_form(cfg, cfg.device_url, form)
    if status >= 400 or answer.get("error") or not answer.get("device_code"):
        error = answer.get("error") or f"http_{status}"
        raise OAuthError(cfg.label, str(error), str(answer.get("error_description") or "")[:300])
    interval = max(1, _seconds(answer.get("interval"), DEFAULT_INTERVAL))
    expires_in = _seconds(answer.get("expires_in"), 900)
    device_id = DEVICE_ID_PREFIX + _random.token_hex(8)
    _drop_expired(secrets, tenant, "oauth.device.", now)
    _put_json(secrets, tenant, device_name(device_id),
              {"provider": cfg.name, "source_provider": source_provider, "device_code": answer["device_code"],
               "interval": interval, "expires_at": now + expires_in, "next_poll_at": now + interval,
               "job_id": job_id})
    started = {"deviceId": device_id, "provider": source_provider,
               # Google names it verification_url
               "verification_uri": answer.get("verification_uri") or answer.get("verification_url") or "",
               "user_code": answer.get("user_code", ""), "expires_in": expires_in, "interval": interval}
    if answer.get("verification_uri_complete"):
        started["verification_uri_complete"] = answer["verification_uri_complete"]
    if job_id:
        started["jobId"] = job_id
    return started


def device_poll(settings, secrets, tenant: str, device_id: str, *, now: float | None = None) -> dict:
    """Poll once, never sooner than the interval: {deviceId, status: pending | slow_down |
    authorized | expired | denied, interval, retryAfter?, jobId?}. Tokens are stored when
    authorized; the session is forgotten once it ends."""
    name = device_name(device_id)
    session = _get_json(secrets, tenant, name)
    if session is None:
        raise NotFound(f"no device authorization {device_id} for tenant {tenant} (finished, expired or never started)")
    now = time.time() if now is None else now
    cfg = config(session["source_provider"], settings)
    out = {"deviceId": device_id, "provider": session["source_provider"], "interval": session["interval"]}
    if session.get("job_id"):
        out["jobId"] = session["job_id"]
    if now >= session["expires_at"]:
        secrets.delete(tenant, name)
        return {**out, "status": "expired", "reason": f"the {cfg.label} device code expired before it was approved"}
    if now < session["next_poll_at"]:
        return {**out, "status": "pending", "retryAfter": max(1, math.ceil(session["next_poll_at"] - now))}
    try:
        answer = token_request(cfg, {"grant_type": DEVICE_GRANT, "device_code": session["device_code"]})
    except OAuthError as exc:
        if exc.error in ("authorization_pending", "slow_down"):
            if exc.error == "slow_down":
                session["interval"] += SLOW_DOWN_STEP
            session["next_poll_at"] = now + session["interval"]
            _put_json(secrets, tenant, name, session)
            return {**out, "status": "pending" if exc.error == "authorization_pending" else "slow_down",
                    "interval": session["interval"], "retryAfter": session["interval"]}
        secrets.delete(tenant, name)
        if exc.error == "expired_token":
            return {**out, "status": "expired", "reason": f"the {cfg.label} device code expired before it was approved"}
        if exc.error == "access_denied":
            return {**out, "status": "denied", "reason": f"authorization refused at {cfg.label}: access_denied"}
        raise
    Tokens(secrets, tenant, cfg, clock=lambda: now).save(answer)
    secrets.delete(tenant, name)
    return {**out, "status": "authorized"}


def device_wait(settings, secrets, tenant: str, device_id: str, *, sleep=time.sleep, clock=time.time,
                timeout: float | None = None) -> dict:
    """Poll until the user approved (the final poll's answer), sleeping the interval (and
    longer after slow_down) between polls; SourceError when denied, expired or past `timeout`."""
    started = clock()
    while True:
        result = device_poll(settings, secrets, tenant, device_id, now=clock())
        if result["status"] == "authorized":
            return result
        if result["status"] in ("expired", "denied"):
            raise SourceError(result["reason"])
        if timeout is not None and clock() - started > timeout:
            raise SourceError(f"device authorization {device_id}: not approved within {timeout:.0f} s")
        sleep(result.get("retryAfter") or result["interval"])



# ---------------------------------------------------------------- API calls with the tenant's token

class ApiSession:
    """GET requests to a provider's API (Graph, Drive) with the tenant's bearer token, through
    the SSRF guard: 429 (Retry-After) and 5xx retried with backoff as the other web sources do,
    one refresh and retry when the API answers 401, redirects followed hop by hop (the token is
    not sent to another host: a download URL is pre-authenticated), and errors that say what
    the provider said."""

    def __init__(self, env, source_provider: str, base_url: str, *, sleep=time.sleep):
        from shared.sources import http as web

        self.web = web
        self.source_provider = source_provider
        self.tokens = Tokens.of_env(env, source_provider.split("/")[0])
        self.base = base_url.rstrip("/")
        self.env = env
        self.http = web.client(env)
        self.sleep = sleep

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.http.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    def get(self, path: str, *, params: dict | None = None, headers: dict | None = None,
            stream: bool = False) -> httpx.Response:
        web, url = self.web, self.url(path)
        refreshed, attempt = False, 0
        while True:
            token = self.tokens.access_token()
            sent = {"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})}
            try:
                response = netguard.send(self.http, "GET", url, params=params, headers=sent, stream=True)
            except SourceError:
                raise
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise SourceError(web.describe_error(url, exc)) from None
            except httpx.TransportError as exc:
                attempt += 1
                if attempt >= web.MAX_ATTEMPTS:
                    raise SourceError(web.describe_error(url, exc)) from None
                self.sleep(web.BACKOFF[min(attempt - 1, len(web.BACKOFF) - 1)])
                continue
            code = response.status_code
            if code == 401 and not refreshed:
                response.close()
                self.tokens.access_token(force_refresh=True)
                refreshed = True
                continue
            if code == 429 or code >= 500:
                wait = web.retry_after(response, attempt) if code in (429, 503) else web.BACKOFF[min(attempt, 3)]
                response.close()
                attempt += 1
                if attempt >= web.MAX_ATTEMPTS or wait > web.MAX_RETRY_AFTER:
                    raise SourceError(f"{self._what(url)}: {code} from the API, still after {attempt} attempts")
                self.sleep(wait)
                continue
            if code >= 400:
                raise self._error(url, response)
            if not stream:
                try:
                    response.read()
                finally:
                    response.close()
            return response

    def get_json(self, path: str, *, params: dict | None = None, headers: dict | None = None) -> dict:
        response = self.get(path, params=params, headers=headers, stream=True)
        try:
            body = self.web.read_capped(response, MAX_LISTING_BYTES, self._what(self.url(path)))
        finally:
            response.close()
        try:
            data = json.loads(body)
        except ValueError:
            raise SourceError(f"{self._what(self.url(path))}: the API answered without JSON") from None
        if not isinstance(data, dict):
            raise SourceError(f"{self._what(self.url(path))}: the API answered JSON that is not an object")
        return data

    def download(self, path: str, dest: Path, *, params: dict | None = None) -> tuple[str, int]:
        """Stream a file into `dest`, at most UDB_MAX_DOWNLOAD_BYTES: (content type, bytes)."""
        url = self.url(path)
        response = self.get(path, params=params, headers={"Accept": "*/*"}, stream=True)
        return self.web.save_capped(response, url, dest, cap=self.web.max_download_bytes(self.env),
                                    what=self._what(url))

    def _what(self, url: str) -> str:
        return f"{self.source_provider} {httpx.URL(url).copy_with(query=None)}"

    def _error(self, url: str, response: httpx.Response) -> SourceError:
        code = response.status_code
        try:
            detail = self.web.read_capped(response, 64 * 1024, url)
        except SourceError:
            detail = b""
        finally:
            response.close()
        message = ""
        try:
            error = json.loads(detail).get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or error.get("code") or "")
            elif error:
                message = str(error)
        except (ValueError, AttributeError):
            pass
        said = f" ({message[:300]})" if message else ""
        what = self._what(url)
        if code == 401:
            return SourceError(f"{what}: 401 Unauthorized even with a refreshed token{said}: the authorization was "
                               f"revoked; discover the link again to authorize anew")
        if code == 403:
            return SourceError(f"{what}: 403 Forbidden: the authorized account may not read this{said}")
        if code == 404:
            return SourceError(f"{what}: 404 Not Found: the link points nowhere, or the authorized account cannot "
                               f"see it{said}")
        return SourceError(f"{what}: HTTP {code} {response.reason_phrase}{said}")


MAX_LISTING_BYTES = 16 * 1024 * 1024

# ---------------------------------------------------------------- jobs waiting for authorization

def request_authorization(ctx, tenant: str, job_id: str, source_provider: str, resume: dict,
                          *, device: bool = False) -> dict:
    """What a job without a token waits for: an oauthUrl (or a started device flow), with the
    job's discover request kept in the secret store so the callback can re-emit it."""
    secrets = ctx.secrets
    cfg = config(source_provider, ctx.settings)
    _put_json(secrets, tenant, job_name(job_id),
              {**resume, "source_provider": source_provider, "expires_at": time.time() + ctx.settings.live_job_seconds})
    wait = {"waiting": "authorization", "provider": source_provider, "stage": "discover", "function": "discover"}
    if device:
        started = device_start(ctx.settings, secrets, tenant, source_provider, job_id=job_id)
        wait["device"] = started
        wait["reason"] = (f"waiting for authorization: {source_provider} links need {cfg.label} OAuth; open "
                          f"{started['verification_uri']} and enter {started['user_code']}, then poll "
                          f"POST /oauth/device/{started['deviceId']}")
    else:
        wait["oauthUrl"] = authorization_url(ctx.settings, secrets, tenant, job_id, source_provider)
        wait["reason"] = (f"waiting for authorization: {source_provider} links need {cfg.label} OAuth; open the "
                          f"oauthUrl (valid {STATE_SECONDS // 60} min) or start the device-code flow "
                          f"(POST /oauth/device)")
    return wait


def mark_waiting(jobs, job_id: str, wait: dict) -> dict:
    """The job document says it waits (state discovering, `error.waiting`, the reason)."""
    return jobs.move(job_id, "discovering", error=wait)


def clear_waiting(jobs, job_id: str) -> None:
    """Once authorized, the job's document no longer says it waits."""
    from shared.storage.jobs import apply_state

    key = jobs._key(job_id)
    for _ in range(20):
        try:
            blob = jobs.store.get(key)
        except NotFound:
            return
        doc = json.loads(blob.data)
        if not (doc.get("error") or {}).get("waiting"):
            return
        apply_state(doc, doc["state"])  # touch: updated_at, version
        doc["error"] = None
        try:
            jobs.store.put(key, json.dumps(doc, indent=2, sort_keys=True).encode(), if_match=blob.etag,
                           content_type="application/json")
            return
        except PreconditionFailed:
            continue


def resume_job(ctx, tenant: str, job_id: str) -> dict:
    """Re-emit the waiting job's discover request now that the tenant is authorized: to the
    broker (K_SINK) when there is one, else through the embedded dispatcher in this process.
    Returns {resumed, via, state[, error]}. A stack or cluster function without K_SINK does not
    resume (the tokens are kept; discovering the link again goes straight through)."""
    from shared.core import events

    record = _get_json(ctx.secrets, tenant, job_name(job_id))
    jobs = ctx.jobs(tenant)
    if not ctx.settings.broker_url and ctx.settings.mode != "embedded":
        # A function without a broker address (no SinkBinding) cannot re-emit: the tokens are
        # stored, and discovering the link again goes straight through.
        return {"resumed": False, "state": None,
                "error": "no broker (K_SINK) here to resume the job: discover the link again"}
    try:
        doc = jobs.get(job_id)
    except NotFound:
        doc = None
    if record is None or doc is None or doc["state"] != "discovering":
        return {"resumed": False, "state": doc["state"] if doc else None}
    ctx.secrets.delete(tenant, job_name(job_id))
    options = {k: v for k, v in (record.get("options") or {}).items() if k not in ("auth", "headers", "oauth")}
    data = {"hint": record["hint"], "autosync": record.get("autosync", True),
            "autoanalyze": record.get("autoanalyze", True)}
    if options:
        data["options"] = options
    event = events.make_event(events.DISCOVER_REQUESTED, data, tenant=tenant, job_id=job_id,
                              function=getattr(ctx, "function", "artifacts"), traceparent=doc.get("traceparent"))
    if ctx.settings.broker_url:
        # The broker not taking it fails the job at once (JobNotAccepted: 503 + Retry-After); the
        # tokens are kept, so discovering the link again goes straight through.
        ctx.send_job(tenant, job_id, event, "discover")
        return {"resumed": True, "via": "broker", "state": "discovering"}
    dispatcher = ctx.extras.get("dispatcher")
    if dispatcher is None:
        from shared.serving.embedded import Dispatcher
        dispatcher = ctx.extras["dispatcher"] = Dispatcher(ctx.settings)
    dispatcher.publish(event)
    doc = jobs.get(job_id)
    out = {"resumed": True, "via": "in-process", "state": doc["state"]}
    if doc["state"] == "failed":
        out["error"] = (doc.get("error") or {}).get("reason")
    return out


def fail_waiting_job(ctx, tenant: str, job_id: str, reason: str) -> None:
    """The authorization of a waiting job ended without tokens: the job fails with the reason."""
    ctx.secrets.delete(tenant, job_name(job_id))
    try:
        doc = ctx.jobs(tenant).get(job_id)
    except NotFound:
        return
    if doc["state"] == "discovering":
        ctx.jobs(tenant).fail(job_id, stage="discover", function="artifacts", reason=reason)


# ---------------------------------------------------------------- HTTP routes (artifacts function)

def callback(request, ctx):
    """GET /oauth/callback?code&state (or ?error&error_description&state): the provider's
    redirect. The signed state is the credential (auth.ROUTE_ROLES: oauth-state)."""
    from shared.serving.httpfn import json_response

    args = request.args
    state = args.get("state", "")
    try:
        principal, pending = complete_authorization(ctx.settings, ctx.secrets, state, code=args.get("code"),
                                                    error=args.get("error"),
                                                    error_description=args.get("error_description"))
    except AuthorizationRefused as exc:
        job_id = exc.principal.subject
        if exc.source_provider:  # the flow ended: its job cannot go on
            fail_waiting_job(ctx, exc.principal.tenant, job_id, str(exc))
        ctx.log.warning("oauth callback for job %s refused: %s", job_id, exc)
        return json_response({"jobId": job_id, "state": "failed" if exc.source_provider else "unchanged",
                              "error": str(exc)}, 400)
    tenant, job_id = principal.tenant, principal.subject
    ctx.log.info("oauth: %s authorized for tenant %s (job %s)", pending["provider"], tenant, job_id)
    resumed = resume_job(ctx, tenant, job_id)
    body = {"jobId": job_id, "provider": pending["source_provider"], "authorized": True, **resumed}
    return json_response(body, 200)


def device(request, ctx):
    """POST /oauth/device {"provider", "jobId"?}: start; POST /oauth/device/{deviceId}: poll once."""
    from shared.serving.httpfn import json_response

    tenant = auth.tenant_of(request)
    parts = request.path.strip("/").split("/")
    if len(parts) == 3:
        result = device_poll(ctx.settings, ctx.secrets, tenant, parts[2])
        job_id = result.get("jobId")
        if job_id and result["status"] == "authorized":
            result.update({"job": resume_job(ctx, tenant, job_id)})
        elif job_id and result["status"] in ("expired", "denied"):
            fail_waiting_job(ctx, tenant, job_id, result["reason"])
        return json_response(result, 200)
    if len(parts) != 2:
        raise NotFound(f"no route {request.path}")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("provider"), str):
        raise InputError('expected a JSON object with a "provider" (onedrive, sharepoint, gdrive, microsoft, google)')
    unknown = sorted(set(body) - {"provider", "jobId"})
    if unknown:
        raise InputError(f"unknown fields {unknown}; expected provider and optionally jobId")
    provider = body["provider"]
    provider_of(provider)
    job_id = body.get("jobId")
    if job_id is not None:
        if not isinstance(job_id, str):
            raise InputError('"jobId" must be a job id string')
        validate_job_id(job_id)
        record = _get_json(ctx.secrets, tenant, job_name(job_id))
        if record is None:
            raise NotFound(f"job {job_id} of tenant {tenant} is not waiting for authorization")
        if provider_of(record["source_provider"]) != provider_of(provider):
            raise InputError(f"job {job_id} waits for {record['source_provider']} authorization, not {provider}")
    started = device_start(ctx.settings, ctx.secrets, tenant, provider, job_id=job_id)
    return json_response(started, 201)


ROUTES = [("GET", "/oauth/callback", callback), ("POST", "/oauth/device", device)]

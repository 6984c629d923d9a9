"""The authorization flows: authorization code with PKCE (S256) and a signed state, completed at
`GET /oauth/callback`; and the device code flow (RFC 8628) where no browser can reach it.

The PKCE `code_verifier` stays server-side, in the tenant's secret store under a name derived
from the state's hash (never in the URL, an event or a log). Each device poll honours `interval`
(never calls the provider sooner), `authorization_pending`, `slow_down` (+5 s, for this and every
later poll) and `expired_token`."""
from __future__ import annotations

import base64
import hashlib
import math
import secrets as _random
import time
from urllib.parse import quote, urlencode

from shared.core.errors import InputError, NotFound, SourceError
from shared.core.tenancy import validate_tenant
from shared.security import auth
from shared.sources.oauth import providers
from shared.sources.oauth.providers import OAuthError
from shared.sources.oauth.tokens import Tokens, _get_json, _put_json, _seconds

STATE_SECONDS = 900          # how long an oauthUrl (its signed state) may be completed
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5           # RFC 8628 3.5: seconds added to the interval on slow_down
DEFAULT_INTERVAL = 5
DEVICE_ID_PREFIX = "dev-"


# ---------------------------------------------------------------- PKCE

def new_code_verifier() -> str:
    """RFC 7636 4.1: 43-128 unreserved characters; here 86 from 64 random bytes."""
    return _random.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """S256: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def pending_name(state: str) -> str:
    return "oauth.pending." + hashlib.sha256(state.encode()).hexdigest()[:32]


def device_name(device_id: str) -> str:
    if not (isinstance(device_id, str) and device_id.startswith(DEVICE_ID_PREFIX) and len(device_id) == 20
            and all(c in "0123456789abcdef" for c in device_id[4:])):
        raise InputError(f"invalid device authorization id {device_id!r}: expected dev- and 16 hex digits")
    return f"oauth.device.{device_id}"


STATE_KEY_NAME = "oauth.state-key"


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
    cfg = providers.config(source_provider, settings)
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
    if tenant is None:  # verify_state's principals always name the state's tenant
        raise auth.Unauthorized("the OAuth state names no tenant")
    name = pending_name(state)
    pending = _get_json(secrets, tenant, name)
    if pending is None:
        raise AuthorizationRefused(principal, "", "this authorization was completed already (an oauthUrl works "
                                                  "once): discover the link again for a new one")
    secrets.delete(tenant, name)  # one use, whatever comes next
    cfg = providers.config(pending["source_provider"], settings)
    if error:
        text = f"authorization refused at {cfg.label}: {error}"
        if error_description:
            text += f" ({error_description[:300]})"
        raise AuthorizationRefused(principal, pending["source_provider"], text)
    if not code:
        raise AuthorizationRefused(principal, pending["source_provider"],
                                   f"{cfg.label} redirected back without a code")
    try:
        answer = providers.token_request(cfg, {"grant_type": "authorization_code", "code": code,
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
    cfg = providers.config(source_provider, settings)
    now = time.time() if now is None else now
    form = {"client_id": cfg.client_id, "scope": cfg.scopes}
    status, answer = providers._post_form(cfg, cfg.device_url, form)
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
    cfg = providers.config(session["source_provider"], settings)
    out = {"deviceId": device_id, "provider": session["source_provider"], "interval": session["interval"]}
    if session.get("job_id"):
        out["jobId"] = session["job_id"]
    if now >= session["expires_at"]:
        secrets.delete(tenant, name)
        return {**out, "status": "expired", "reason": f"the {cfg.label} device code expired before it was approved"}
    if now < session["next_poll_at"]:
        return {**out, "status": "pending", "retryAfter": max(1, math.ceil(session["next_poll_at"] - now))}
    try:
        answer = providers.token_request(cfg, {"grant_type": DEVICE_GRANT, "device_code": session["device_code"]})
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

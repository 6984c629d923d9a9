"""The tenant's OAuth tokens in the secret store (`oauth.<provider>`), refreshed on expiry: never
in job or source documents, events or logs. A refresh the provider refuses (`invalid_grant`:
revoked, expired) deletes the stored pair and fails with the reason."""
from __future__ import annotations

import json
import threading
import time

from shared.core.errors import NotFound, SourceError
from shared.core.tenancy import validate_tenant
from shared.sources.oauth import providers
from shared.sources.oauth.providers import OAuthError, ProviderConfig

EXPIRY_SKEW = 60             # refresh this long before the access token's expiry (at most 10% of its life)


def tokens_name(provider: str) -> str:
    return f"oauth.{provider}"


def _get_json(secrets, tenant: str, name: str) -> dict | None:
    try:
        return json.loads(secrets.get(tenant, name))
    except NotFound:
        return None


def _put_json(secrets, tenant: str, name: str, value: dict) -> None:
    secrets.put(tenant, name, json.dumps(value, sort_keys=True))


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
        return cls(env.secret_store(), env.tenant, providers.config(source_provider, env.settings))

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
        if self.cfg.refresh_scopes:
            form["scope"] = self.cfg.scopes  # Microsoft's v2 endpoints want the scopes again
        try:
            answer = providers.token_request(self.cfg, form)
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
    return _get_json(secrets, tenant, tokens_name(providers.provider_of(source_provider))) is not None

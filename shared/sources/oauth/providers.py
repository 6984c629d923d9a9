"""OAuth providers and their endpoints: each share-link connector names its OAuth provider
(`Connector.oauth`, an `OAuthProvider` with its endpoints and client from the settings); this
module finds it by a source provider's name or its own, and makes the calls to its token and
device endpoints (RFC 6749 5.2 errors as OAuthError), through the SSRF guard."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.core.errors import InputError, SourceError
from shared.security import netguard
from shared.sources.registry import OAuthIssuer, connectors

TOKEN_DEADLINE = 30.0        # one call to a token or device endpoint, all in
MAX_TOKEN_ANSWER = 1 << 20   # bytes of a token endpoint's answer


class OAuthError(SourceError):
    """An error answer of a token or device endpoint (RFC 6749 5.2)."""

    def __init__(self, label: str, error: str, description: str = ""):
        self.error, self.description = error, description
        super().__init__(f"{label}: the token endpoint answered {error}" + (f" ({description})" if description else ""))


@dataclass(frozen=True)
class ProviderConfig:
    """One OAuth provider's endpoints and UDB's client there, as the settings give them."""
    name: str
    label: str
    authorize_url: str
    token_url: str
    device_url: str
    client_id: str
    client_secret: str
    scopes: str
    auth_params: tuple = ()
    client_setting: str = ""
    refresh_scopes: bool = False  # send the scopes again with a refresh (Microsoft's v2 endpoints)
    # The settings this config came from: their SSRF allowlist guards the token calls.
    settings: Any = field(default=None, compare=False, repr=False)


class OAuthProvider:
    """An OAuth provider a connector's links are authorized with (`Connector.oauth`)."""
    name: str = ""
    label: str = ""

    def config(self, settings) -> ProviderConfig:
        """The endpoints and client from the settings."""
        raise NotImplementedError


def _providers() -> tuple[dict[str, OAuthIssuer], dict[str, str]]:
    """({oauth name: provider}, {source provider: oauth name}) from the connector registry."""
    by_name: dict[str, OAuthIssuer] = {}
    of_source: dict[str, str] = {}
    for connector in connectors():
        if connector.oauth is not None:
            by_name[connector.oauth.name] = connector.oauth
            for source_provider in connector.providers:
                of_source[source_provider] = connector.oauth.name
    return by_name, of_source


def provider_of(name: str) -> str:
    """The OAuth provider (microsoft, google) of a source provider or of itself."""
    by_name, of_source = _providers()
    if name in by_name:
        return name
    try:
        return of_source[name]
    except KeyError:
        raise InputError(f"no OAuth provider for {name!r}; known: {', '.join([*of_source, *by_name])}") from None


def config(name: str, settings, *, require: bool = True) -> ProviderConfig:
    """The provider's endpoints and client from the settings (InputError when no client id is
    configured and `require`)."""
    by_name, _ = _providers()
    cfg: ProviderConfig = by_name[provider_of(name)].config(settings)
    if require and not cfg.client_id:
        raise SourceError(f"{cfg.label} OAuth is not configured: set {cfg.client_setting} (and its secret) to "
                         f"UDB's registered app (README: OAuth)")
    return cfg


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

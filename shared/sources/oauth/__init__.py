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

One module per responsibility: `providers` (each connector's OAuth provider and its endpoints,
the token and device endpoint calls), `flow` (state, PKCE, the callback's exchange, the device
code), `tokens` (the token store), `waiting` (jobs waiting for authorization), `api` (API calls
with the tenant's token) and `routes` (the artifacts function's HTTP routes). Their public names
are reachable here too (`oauth.config`, `oauth.Tokens`...), imported on first use: a connector
that needs only `api` does not load the flow's JWT signing.
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> the module of this package that defines it
_EXPORTS = {
    "providers": ("OAuthError", "OAuthProvider", "ProviderConfig", "provider_of", "config", "token_request",
                  "TOKEN_DEADLINE", "MAX_TOKEN_ANSWER"),
    "tokens": ("Tokens", "tokens_name", "authorized", "EXPIRY_SKEW"),
    "flow": ("AuthorizationRefused", "new_code_verifier", "code_challenge", "pending_name", "device_name",
             "STATE_KEY_NAME", "STATE_SECONDS", "state_secret", "verify_state", "authorization_url",
             "complete_authorization", "device_start", "device_poll", "device_wait", "DEVICE_GRANT",
             "SLOW_DOWN_STEP", "DEFAULT_INTERVAL", "DEVICE_ID_PREFIX"),
    "waiting": ("AuthorizationNeeded", "job_name", "request_authorization", "mark_waiting", "clear_waiting",
                "resume_job", "fail_waiting_job"),
    "api": ("ApiSession", "MAX_LISTING_BYTES"),
    "routes": ("callback", "device", "ROUTES"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        module = _MODULE_OF[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF, *_EXPORTS})

"""Who is calling, for which tenant, with which role — and which role each action needs.

Credentials (sent as `Authorization: Bearer <credential>`, or an API key as `X-API-Key`):
- **API keys** `udb_<key_id>_<secret>` (12 hex digits, then 43 url-safe characters = 256 random
  bits). Only a record is stored, `auth/keys/<key_id>.json` in the object store:
  {key_id, tenant, role, hash ("sha256:<hex>" of the secret), name, created, revoked}. The
  index sits outside `tenants/` on purpose: authentication must find the key before it knows
  the tenant (the tenant is its *output*, never a client's claim), and no tenant-scoped write
  (an upload, an artifact, a prune) can create, alter or delete a credential. SHA-256, not
  scrypt: the secret is 256 random bits, so there is nothing to brute-force, and a slow hash
  would hand every unauthenticated request a CPU cost. Verified records are cached for
  `UDB_AUTH_CACHE_SECONDS` (a revocation takes effect within that time).
- **JWTs** signed HS256 with `UDB_JWT_SECRET`, checked by PyJWT: claims `tenant`, `role`, `exp`
  (required), `nbf`, `iat`, `sub` (optional). Any other `alg` (`none` included) is refused, and so
  is a lifetime (exp - iat) above `UDB_JWT_MAX_SECONDS` (24 h by default).
- **the broker token** (`UDB_BROKER_TOKEN`): what the broker presents to the functions' CloudEvent
  entry (`POST /`) and internal senders present to the broker; it carries no tenant and opens
  nothing else. With no token set (Knative's broker and sources cannot send one), a call without
  credentials to `POST /` or a system route is taken as UDB's own while `UDB_TRUST_NETWORK` is on:
  true of the cluster-local function Services, never of the public doors (*-api), which turn it off.
- **OAuth state**: the OAuth callback is reached by a browser redirect that cannot carry a key,
  so its `state` parameter is itself the credential (tenant, job and expiry, signed with
  itsdangerous).

Roles: viewer < analyst < admin. `ROUTE_ROLES` is the one table of action -> role that
`FunctionApp` applies to every route (docs/security.md shows it); a route missing from it
needs admin. `EVENT_ROLES` does the same for CloudEvents a tenant sends itself.

`UDB_AUTH`: on, off, or auto (off in embedded mode, where nothing listens; on in stack and
cluster). With it off, the `X-UDB-Tenant` header names the tenant, as before. With it on, the
tenant is the authenticated principal's, and an `X-UDB-Tenant` header must be absent or equal.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping
from datetime import datetime, timezone

import jwt
from itsdangerous import BadSignature, Signer
from werkzeug.exceptions import RequestEntityTooLarge

from shared.security import limits, ratelimit
from shared.core import bindings
from shared.core.errors import InputError, NotFound, PreconditionFailed, UDBError
from shared.core.tenancy import TENANT_RE, validate_job_id, validate_tenant

ROLES = ("viewer", "analyst", "admin")
PUBLIC, BROKER, OAUTH_STATE, METRICS = "public", "broker", "oauth-state", "metrics"
SIGNED_LINK = "signed-link"  # the token in the path is the credential (shared/security/links.py checks it)
TENANT_HEADER = "X-UDB-Tenant"
PRINCIPAL_KEY = "udb.principal"  # where admit() leaves the principal in the WSGI environ

# The action -> role table: (method, path prefix, who may call). The longest matching prefix
# wins; "/" matches only itself (the CloudEvent entry). Health and readiness are public so
# probes work; metrics label every tenant, so they need the metrics (or broker) token.
ROUTE_ROLES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/healthz", PUBLIC),
    ("GET", "/readyz", PUBLIC),
    ("GET", "/startupz", PUBLIC),
    ("GET", "/metrics", METRICS),                      # Prometheus: UDB_METRICS_TOKEN
    ("GET", "/openapi.json", PUBLIC),
    ("GET", "/openapi.yaml", PUBLIC),
    ("POST", "/", BROKER),                            # CloudEvents from the broker
    ("GET", "/status/", "viewer"),                    # a job's status document
    ("GET", "/artifact/", "viewer"),                  # a job's artifact index and files
    ("GET", "/s/", SIGNED_LINK),                      # one job's artifacts by signed link (a browser)
    ("GET", "/kpis", "viewer"),                       # the tenant's KPI definitions
    ("PUT", "/kpis", "analyst"),                      # store a KPI definition (its SQL is guarded)
    ("DELETE", "/kpis", "analyst"),                   # remove a KPI definition
    ("POST", "/uploads", "analyst"),                  # upload a file to discover
    ("POST", "/sources/discover_connect", "analyst"),  # start a job from a hint
    ("PUT", "/sources/", "analyst"),                  # set a source's sync schedule
    ("GET", "/sources/", "viewer"),                   # read a source's sync schedule
    ("DELETE", "/sources/", "analyst"),               # remove a source's sync schedule
    ("GET", "/oauth/callback", OAUTH_STATE),           # a provider's redirect back to UDB
    ("POST", "/oauth/device", "analyst"),              # start or poll a device-code authorization
    ("POST", "/admin/prune", "admin"),                # retention: a tenant admin prunes its tenant
    ("POST", "/admin/redrive", "admin"),              # resume jobs an outage dead-lettered
    ("POST", "/admin/schedules/tick", "admin"),       # fire due scheduled syncs (the PingSource)
    ("GET", "/admin/", "admin"),
    ("POST", "/admin/", "admin"),
    ("DELETE", "/admin/", "admin"),
)
DEFAULT_ROLE = "admin"  # a route nobody listed: fail closed
# Kubelet's probes: never rate-limited per address (a probe refused by a limiter restarts the pod).
PROBE_PATHS = ("/healthz", "/readyz", "/startupz")
# System actions across every tenant: the broker token (UDB itself, e.g. a scheduler) may call
# them too, with no tenant. Nothing else accepts that token but the CloudEvent entry.
SYSTEM_ROUTES = {("POST", "/admin/prune"), ("POST", "/admin/redrive"), ("POST", "/admin/schedules/tick")}

# CloudEvents a tenant may send itself (to the broker ingress or a function's `POST /`), and the
# role each needs; every other type comes from UDB's own functions, with the broker token.
EVENT_ROLES = {
    "dev.udb.discover.requested": "analyst",
    "dev.udb.sync.requested": "analyst",
    "dev.udb.analyze.requested": "analyst",
}

# The MCP server's tools and resources (frontends/mcp_server/) and the role each needs: the same
# roles as the HTTP routes doing the same thing (discover_connect, KPI writes and events need
# analyst; status, artifacts and warehouse reads need viewer). Unlisted: admin (fail closed).
MCP_ROLES = {
    "discover_connect": "analyst",
    "choose_source": "analyst",
    "sync": "analyst",
    "analyze": "analyst",
    "run_kpi": "analyst",
    "set_schedule": "analyst",
    "status": "viewer",
    "list_tables": "viewer",
    "describe_table": "viewer",
    "get_artifact": "viewer",
    "udb://jobs/{job}": "viewer",
    "udb://jobs/{job}/artifacts/{name}": "viewer",
}

KEY_PREFIX = "auth/keys/"
KEY_RE = re.compile(r"^udb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
JWT_LEEWAY = 30  # seconds of clock skew tolerated on exp / nbf
MULTIPART_OVERHEAD = 64 * 1024  # as functions/artifacts/uploads.py allows around the file


class Unauthorized(UDBError):
    """No credential, or one that does not verify: 401."""


class Forbidden(UDBError):
    """A verified principal asking for something its role or tenant does not allow: 403."""


HTTP_ERRORS = (Unauthorized, Forbidden, limits.RequestTooLarge, RequestEntityTooLarge, ratelimit.RateLimited)


def http_error(exc: Exception) -> tuple[dict, int, dict]:
    """(body, status, headers) for one of HTTP_ERRORS."""
    if isinstance(exc, Unauthorized):
        return {"error": str(exc)}, 401, {"WWW-Authenticate": 'Bearer realm="udb"'}
    if isinstance(exc, Forbidden):
        return {"error": str(exc)}, 403, {}
    if isinstance(exc, limits.RequestTooLarge):
        return {"error": str(exc)}, 413, {}
    if isinstance(exc, RequestEntityTooLarge):
        return {"error": "request body is above its size limit (UDB_MAX_BODY_BYTES / UDB_MAX_UPLOAD_BYTES)"}, 413, {}
    if isinstance(exc, ratelimit.RateLimited):
        return {"error": str(exc)}, 429, {"Retry-After": str(exc.retry_after)}
    raise TypeError(f"not one of HTTP_ERRORS: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class Principal:
    tenant: str | None  # None: the broker, or nobody in particular (auth off, no header)
    role: str           # a ROLES entry, or BROKER
    via: str            # api-key | jwt | broker | network | oauth-state | auth-off
    subject: str = ""   # the key id, the JWT's sub, the job of an OAuth state


def role_at_least(have: str, need: str) -> bool:
    return have in ROLES and need in ROLES and ROLES.index(have) >= ROLES.index(need)


def required_role(method: str, path: str) -> str:
    """The role (or PUBLIC, BROKER, OAUTH_STATE) the action `method path` needs."""
    best, best_len = DEFAULT_ROLE, -1
    for m, prefix, role in ROUTE_ROLES:
        if m == method and _matches(prefix, path) and len(prefix) > best_len:
            best, best_len = role, len(prefix)
    return best


def _matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return path == "/"
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def listed(method: str, prefix: str) -> bool:
    """True when an entry of ROUTE_ROLES covers the route `method prefix` (so its role is a
    decision someone wrote down, not the fail-closed default; tests check every route)."""
    return any(m == method and _matches(p, prefix) for m, p, _ in ROUTE_ROLES)


def enabled(settings) -> bool:
    return settings.auth == "on" or (settings.auth == "auto" and settings.mode != "embedded")


# ---------------------------------------------------------------- API keys

def _hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class KeyStore:
    """API key records in the object store (`auth/keys/<key_id>.json`), never the keys."""

    def __init__(self, store):
        self.store = store

    @staticmethod
    def _key(key_id: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{12}", key_id or ""):
            raise InputError(f"invalid key id {key_id!r}: expected 12 hex digits")
        return f"{KEY_PREFIX}{key_id}.json"

    def create(self, tenant: str, role: str, name: str = "") -> tuple[str, dict]:
        """A new key for `tenant` with `role`: (the key, shown once; its stored record)."""
        validate_tenant(tenant)
        if role not in ROLES:
            raise InputError(f"invalid role {role!r}; expected one of {', '.join(ROLES)}")
        for _ in range(5):
            key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            record = {"key_id": key_id, "tenant": tenant, "role": role, "hash": _hash(secret),
                      "name": name, "created": _now_iso(), "revoked": None}
            try:
                self.store.put(self._key(key_id), json.dumps(record, indent=2).encode(), if_none_match=True,
                               content_type="application/json")
            except PreconditionFailed:
                continue  # a key id already taken: draw again
            return f"udb_{key_id}_{secret}", record
        raise UDBError("could not allocate a key id")

    def get(self, key_id: str) -> dict:
        try:
            return json.loads(self.store.get(self._key(key_id)).data)
        except NotFound:
            raise NotFound(f"no API key {key_id}") from None

    def revoke(self, key_id: str) -> dict:
        for _ in range(10):
            try:
                blob = self.store.get(self._key(key_id))
            except NotFound:
                raise NotFound(f"no API key {key_id}") from None
            record = json.loads(blob.data)
            if record.get("revoked"):
                return record
            record["revoked"] = _now_iso()
            try:
                self.store.put(self._key(key_id), json.dumps(record, indent=2).encode(), if_match=blob.etag,
                               content_type="application/json")
            except PreconditionFailed:
                continue
            # Whoever held the key may have made report links: end every link of the tenant.
            from shared.security import links
            links.rotate(self.store, record["tenant"])
            return record
        raise UDBError(f"could not revoke {key_id}: too many concurrent changes")

    def list(self, tenant: str | None = None) -> list[dict]:
        records = []
        for info in self.store.list(KEY_PREFIX):
            try:
                record = json.loads(self.store.get(info.key).data)
            except (NotFound, ValueError):
                continue
            if tenant is None or record.get("tenant") == tenant:
                records.append(record)
        return sorted(records, key=lambda r: (r.get("tenant", ""), r.get("created", "")))


# ---------------------------------------------------------------- JWT (HS256, PyJWT)

JWT_MAX_SECONDS = 24 * 3600  # UDB_JWT_MAX_SECONDS' default


def mint_jwt(secret: str, tenant: str, role: str, ttl_seconds: int = 3600, subject: str = "",
             now: float | None = None, max_seconds: int | None = None) -> str:
    """A signed token for `tenant` with `role`, valid for `ttl_seconds` (at most `max_seconds`)."""
    validate_tenant(tenant)
    if role not in ROLES:
        raise InputError(f"invalid role {role!r}; expected one of {', '.join(ROLES)}")
    if len(secret or "") < 32:
        raise InputError("UDB_JWT_SECRET must be set (at least 32 characters) to sign tokens")
    if max_seconds and ttl_seconds > max_seconds:
        raise InputError(f"a token may live at most {max_seconds} s (UDB_JWT_MAX_SECONDS); asked for {ttl_seconds}")
    now = int(time.time() if now is None else now)
    claims = {"tenant": tenant, "role": role, "iat": now, "exp": now + int(ttl_seconds)}
    if subject:
        claims["sub"] = subject
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_jwt(token: str, secret: str, max_seconds: int = JWT_MAX_SECONDS) -> Principal:
    """The principal of a valid HS256 token (PyJWT: the algorithm pinned, `exp` required, `nbf`
    and `iat` checked, JWT_LEEWAY of clock skew); a lifetime (exp - iat, or exp - now without
    iat) above `max_seconds` is refused too. Unauthorized naming the problem otherwise."""
    if not secret:
        raise Unauthorized("JWTs are not accepted here (no UDB_JWT_SECRET)")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], leeway=JWT_LEEWAY,
                            options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("JWT expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("JWT not valid yet") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"JWT without a numeric {exc.claim} claim") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized("JWT algorithm must be HS256") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("JWT signature does not verify") from None
    except jwt.DecodeError:
        raise Unauthorized("malformed JWT") from None
    except jwt.InvalidTokenError as exc:  # a claim of the wrong type (exp, iat, nbf not numbers)
        raise Unauthorized(f"JWT refused: {exc}") from None
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise Unauthorized("JWT without a numeric exp claim")
    issued = claims.get("iat")
    start = issued if isinstance(issued, (int, float)) and not isinstance(issued, bool) else time.time()
    if max_seconds and exp - start > max_seconds + JWT_LEEWAY:
        raise Unauthorized(f"JWT lifetime of {int(exp - start)} s is above the maximum of {max_seconds} s "
                           f"(UDB_JWT_MAX_SECONDS)")
    tenant, role = claims.get("tenant"), claims.get("role")
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise Unauthorized("JWT tenant claim is not a valid tenant id")
    if role not in ROLES:
        raise Unauthorized(f"JWT role claim must be one of {', '.join(ROLES)}")
    sub = claims.get("sub")
    return Principal(tenant, role, "jwt", sub if isinstance(sub, str) else "")


def eventing_oidc_token(token: str) -> bool:
    """Whether `token` looks like a Kubernetes service-account (OIDC) token, as Knative's dispatcher
    sends with OIDC on: a JWT signed asymmetrically (RS256/ES256), with an `iss` and an `aud`. UDB's
    own JWTs are HS256 without `iss`, so one is never taken for the other. Only the shape is read
    (no signature check): the caller decides what such a token may do (nothing more than no token)."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return False
    return (header.get("alg") in ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
            and isinstance(claims.get("iss"), str) and "aud" in claims)


# ---------------------------------------------------------------- OAuth state (itsdangerous)

def _state_signer(secret: str) -> Signer:
    # A salt of its own: a state can never pass for any other signed value of the same key.
    return Signer(secret, salt="udb-oauth-state", sep=".", key_derivation="hmac", digest_method=hashlib.sha256)


def sign_state(secret: str, tenant: str, job_id: str, ttl_seconds: int = 900, now: float | None = None) -> str:
    """The `state` of an OAuth authorization URL: `<tenant>.<job>.<expiry>.<signature>`, signed
    by itsdangerous (HMAC-SHA256). Tenant and job stay readable: the callback needs the tenant
    to find the key in embedded mode, and a user can tell which job a link is for."""
    if len(secret or "") < 32:
        raise InputError("OAuth needs UDB_JWT_SECRET (at least 32 characters) to sign its state")
    exp = int((time.time() if now is None else now) + ttl_seconds)
    return _state_signer(secret).sign(f"{validate_tenant(tenant)}.{validate_job_id(job_id)}.{exp}").decode()


def verify_state(state: str, secret: str, now: float | None = None) -> Principal:
    if not state or state.count(".") != 3 or not secret:
        raise Unauthorized("missing or malformed OAuth state")
    try:
        body = _state_signer(secret).unsign(state).decode()
    except BadSignature:
        raise Unauthorized("OAuth state does not verify") from None
    tenant, job_id, exp = body.split(".")
    if not exp.isdigit() or (time.time() if now is None else now) > int(exp):
        raise Unauthorized("OAuth state expired")
    return Principal(tenant, "analyst", "oauth-state", job_id)


# ---------------------------------------------------------------- the gatekeeper

def _bearer(headers) -> str | None:
    value = headers.get("Authorization") or headers.get("authorization") or ""
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    key = headers.get("X-API-Key") or headers.get("x-api-key")
    return key.strip() if key else None


# The header that carries the broker token is part of the HTTP binding (shared.core, below
# this layer); named here too because this module checks it.
broker_headers = bindings.broker_headers


class Gatekeeper:
    """Authentication, authorization, rate limits and body limits of one process."""

    def __init__(self, settings, store=None):
        self.settings = settings
        self.enabled = enabled(settings)
        self._store = store
        self.limiter = ratelimit.Limiter(settings.rate_limit, settings.rate_burst)
        self.limits = limits.Limits.from_settings(settings)
        self._cache: dict[str, tuple[dict, float]] = {}
        self._lock = threading.Lock()

    @property
    def keys(self) -> KeyStore:
        if self._store is None:
            from shared.storage.backends import open_store
            self._store = open_store(self.settings)
        return KeyStore(self._store)

    # -- credentials
    def _api_key(self, token: str) -> Principal:
        match = KEY_RE.fullmatch(token)
        if not match:
            raise Unauthorized("invalid credentials")
        key_id, secret = match.groups()
        record = self._record(key_id)
        if record is None or not hmac.compare_digest(record.get("hash", ""), _hash(secret)):
            # One answer for an unknown key and a wrong secret: no oracle for key ids.
            raise Unauthorized("invalid credentials")
        if record.get("revoked"):
            raise Unauthorized(f"API key {key_id} was revoked")
        if record.get("role") not in ROLES or not TENANT_RE.fullmatch(str(record.get("tenant"))):
            raise Unauthorized("invalid credentials")
        return Principal(record["tenant"], record["role"], "api-key", key_id)

    def _record(self, key_id: str) -> dict | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached and now - cached[1] < self.settings.auth_cache_seconds:
            return cached[0]
        try:
            record = self.keys.get(key_id)
        except NotFound:
            return None  # never cached: a key created a moment later works at once
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (record, now)
        return record

    def credential(self, token: str) -> Principal:
        """The principal of an API key, a JWT, the broker token or the metrics token."""
        if self.settings.broker_token and hmac.compare_digest(token.encode(), self.settings.broker_token.encode()):
            return Principal(None, BROKER, "broker")
        if self.settings.metrics_token and hmac.compare_digest(token.encode(), self.settings.metrics_token.encode()):
            return Principal(None, METRICS, "metrics-token")
        if token.startswith("udb_"):
            return self._api_key(token)
        if token.count(".") == 2:
            return verify_jwt(token, self.settings.jwt_secret, self.settings.jwt_max_seconds)
        raise Unauthorized("invalid credentials")

    def _authenticate(self, headers, client: str, system: bool = False) -> Principal | None:
        token = _bearer(headers)
        if token is None:
            return None
        if system and self._network_is_the_credential() and eventing_oidc_token(token):
            # Knative Eventing with OIDC on (authentication-oidc) sends the dispatcher's service-
            # account token. It is no UDB credential and is not verified here: on a cluster-local
            # Service the network is the credential (docs/deploy.md "OIDC"), and a caller without
            # any token is admitted the same way, so ignoring it grants nothing more.
            return None
        try:
            return self.credential(token)
        except Unauthorized:
            # Failed attempts from one address share a bucket: guessing costs the store nothing.
            self.limiter.take(f"ip:{client}", "failed authentications")
            raise

    # -- the HTTP door
    def admit(self, request, method: str | None = None, path: str | None = None) -> Principal | None:
        """Check one HTTP request before its route runs; returns the principal (also left in
        the WSGI environ for `tenant_of`). Raises Unauthorized, Forbidden, RequestTooLarge,
        RateLimited, or InputError (a JSON body nested too deep)."""
        method, path = method or request.method, path or request.path
        need = required_role(method, path)
        self._check_body(request, path)
        principal = self._principal(request, need, method, path)
        if principal is not None:
            tenant_claim = request.headers.get(TENANT_HEADER)
            if principal.tenant is not None and tenant_claim is not None and tenant_claim != principal.tenant:
                raise Forbidden(f"{TENANT_HEADER} {tenant_claim!r} is not the tenant of these credentials")
            tenant = principal.tenant or (tenant_claim if principal.via == "auth-off" else None)
            if tenant and need != BROKER:
                self.limiter.take(tenant)
        request.environ[PRINCIPAL_KEY] = principal
        return principal

    def _principal(self, request, need: str, method: str, path: str) -> Principal | None:
        if need in (PUBLIC, SIGNED_LINK):
            return None  # a signed link is verified by its route, which learns the tenant from it
        if not self.enabled:
            return Principal(None, "admin", "auth-off")
        client = request.remote_addr or "?"
        if need == OAUTH_STATE:
            return verify_state(request.args.get("state", ""), self.settings.jwt_secret)
        system = need == BROKER or (method, path.rstrip("/")) in SYSTEM_ROUTES
        principal = self._authenticate(request.headers, client, system)
        if need == METRICS:
            return self._metrics_reader(principal)
        if principal is not None and principal.role == METRICS:
            raise Forbidden("the metrics token opens only GET /metrics")
        if principal is None and system and self._network_is_the_credential():
            # No token to check: a cluster-local Service, which only the eventing data plane (the
            # broker's dispatcher, the dead-letter KafkaSource, the prune PingSource) can reach.
            return Principal(None, BROKER, "network")
        if need == BROKER:
            if principal is None:
                raise Unauthorized("the CloudEvent entry needs the broker token or a tenant credential")
            return principal  # the broker, or a tenant (whose events check_event vets)
        if principal is None:
            raise Unauthorized(f"{method} {path} needs credentials (Authorization: Bearer <API key or JWT>)")
        if principal.role == BROKER:
            if (method, path.rstrip("/")) in SYSTEM_ROUTES:
                return principal  # UDB itself, for every tenant
            raise Forbidden("the broker token opens only the CloudEvent entry and system actions")
        if not role_at_least(principal.role, need):
            raise Forbidden(f"role {principal.role} may not {method} {path} (needs {need})")
        return principal

    def _metrics_reader(self, principal: Principal | None) -> Principal:
        """GET /metrics: its labels name every tenant of the process, so no tenant's credential
        opens it; the metrics token (UDB_METRICS_TOKEN) or the broker token does, and with
        neither set, the network does where it is the credential (a cluster-local Service)."""
        if principal is None:
            if not self.settings.metrics_token and self._network_is_the_credential():
                return Principal(None, METRICS, "network")
            raise Unauthorized("GET /metrics needs the metrics token (UDB_METRICS_TOKEN) or the broker token")
        if principal.role in (METRICS, BROKER):
            return principal
        raise Forbidden("GET /metrics names every tenant: it opens only to the metrics token or the broker token")

    def _network_is_the_credential(self) -> bool:
        """UDB_TRUST_NETWORK with no broker token: Knative's broker and sources send no header,
        so a cluster-local Service admits them by where they come from. A public Service (one
        that serves tenants through the ingress) sets UDB_TRUST_NETWORK=0 and never does."""
        return not self.settings.broker_token and self.settings.trust_network

    def body_limit(self, path: str) -> tuple[int, str]:
        """(the byte cap of a request body to `path`, the setting that sets it); 0: no cap."""
        upload = path == "/uploads" or path.startswith("/uploads/")
        limit = self.limits.max_upload_bytes if upload else self.limits.max_body_bytes
        if upload and limit > 0:
            limit += MULTIPART_OVERHEAD  # the file may be the whole limit; its envelope comes on top
        return limit, "UDB_MAX_UPLOAD_BYTES" if upload else "UDB_MAX_BODY_BYTES"

    def pre_admit(self, environ, has_body: bool) -> Principal | None:
        """What can be decided from the headers, before any body byte is read (shared/security/bodyguard.py):
        the principal of the credentials (Unauthorized for bad ones), or None for a caller
        without any. Such a caller spends a token of its address's bucket (`anon:<address>`;
        the probes are exempt) and, when it sends a body to a route that needs credentials, is
        refused here, so the body is never read. `admit` still decides everything afterwards."""
        if not self.enabled:
            return Principal(None, "admin", "auth-off")
        from werkzeug.datastructures import EnvironHeaders
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO") or "/"
        client = environ.get("REMOTE_ADDR") or "?"
        need = required_role(method, path)
        system = need == BROKER or (method, path.rstrip("/")) in SYSTEM_ROUTES
        principal = self._authenticate(EnvironHeaders(environ), client, system)
        if principal is not None:
            return principal
        if (need == BROKER or (method, path.rstrip("/")) in SYSTEM_ROUTES) and self._network_is_the_credential():
            return Principal(None, BROKER, "network")
        if not (method in ("GET", "HEAD") and path in PROBE_PATHS):
            self.limiter.take(f"anon:{client}", "requests without credentials")
        if has_body and need == BROKER:
            raise Unauthorized("the CloudEvent entry needs the broker token or a tenant credential")
        if has_body and need not in (PUBLIC, OAUTH_STATE):
            raise Unauthorized(f"{method} {path} needs credentials (Authorization: Bearer <API key or JWT>)")
        return None

    def _check_body(self, request, path: str) -> None:
        limit, setting = self.body_limit(path)
        upload = setting == "UDB_MAX_UPLOAD_BYTES"
        limits.check_body_size(request.content_length, limit, setting)
        if limit > 0:
            # Bounds a chunked body of unknown length too, whoever reads it later (413).
            request.max_content_length = limit
        content_type = (request.headers.get("Content-Type") or "").lower()
        if upload or "json" not in content_type:
            return
        try:
            data = request.get_data(cache=True)
        except RequestEntityTooLarge:
            data = None
        # werkzeug stops a chunked body at the limit without a word: a full buffer is too much.
        if data is None or (request.content_length is None and 0 < limit <= len(data)):
            raise limits.RequestTooLarge(f"request body is above the limit of {limit:,} bytes ({setting})")
        limits.check_json_depth(data, self.limits.max_json_depth)

    # -- events
    def check_event(self, principal: Principal | None, attributes: Mapping[str, Any]) -> None:
        """A tenant sending an event itself may send only its own tenant's client events."""
        if principal is None or principal.via in ("broker", "network", "auth-off"):
            return
        tenant, kind = attributes.get("tenant"), attributes.get("type")
        if tenant != principal.tenant:
            raise Forbidden(f"credentials of tenant {principal.tenant} cannot send events of tenant {tenant!r}")
        need = EVENT_ROLES.get(kind) if isinstance(kind, str) else None
        if need is None:
            raise Forbidden(f"{kind!r} events come from UDB itself (the broker token); a tenant may send "
                            f"{', '.join(sorted(EVENT_ROLES))}")
        if not role_at_least(principal.role, need):
            raise Forbidden(f"role {principal.role} may not send {kind} (needs {need})")

    def admit_event(self, headers: dict, attributes: dict, client: str = "?") -> Principal | None:
        """The broker ingress: the broker token, or a tenant credential for its own events."""
        if not self.enabled:
            return None
        principal = self._authenticate(headers, client)
        if principal is None:
            raise Unauthorized("the broker ingress needs the broker token or a tenant credential")
        self.check_event(principal, attributes)
        if principal.tenant:
            self.limiter.take(principal.tenant)
        return principal


def principal_of(request) -> Principal | None:
    return request.environ.get(PRINCIPAL_KEY)


def tenant_of(request) -> str:
    """The tenant a request acts for: its principal's; with authentication off, the
    `X-UDB-Tenant` header's (required then)."""
    principal = principal_of(request)
    if principal is not None and principal.tenant:
        return principal.tenant
    tenant = request.headers.get(TENANT_HEADER)
    if not tenant:
        raise InputError(f"missing {TENANT_HEADER} header")
    return validate_tenant(tenant)


# ---------------------------------------------------------------- the admin CLI

def add_cli(sub) -> None:
    """`udb keys create|list|revoke` and `udb token` (the CLI is a local admin: whoever can
    run it with the store's credentials can already read every tenant's data)."""
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create an API key (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", default="", help="a note: who or what uses the key")
    listing = ksub.add_parser("list", help="list API keys (never the keys themselves)")
    listing.add_argument("--tenant")
    revoke = ksub.add_parser("revoke", help="revoke an API key by its id")
    revoke.add_argument("key_id")
    token = sub.add_parser("token", help="sign a JWT with UDB_JWT_SECRET")
    token.add_argument("--tenant", required=True)
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--ttl", type=int, default=3600, help="seconds it is valid (default 3600)")


def run_cli(args, settings) -> int:
    if args.command == "token":
        print(mint_jwt(settings.jwt_secret, args.tenant, args.role, args.ttl, max_seconds=settings.jwt_max_seconds))
        return 0
    from shared.storage.backends import open_store
    keys = KeyStore(open_store(settings))
    if args.keys_command == "create":
        key, record = keys.create(args.tenant, args.role, args.name)
        print(key)
        print(f"key id {record['key_id']}: tenant {record['tenant']}, role {record['role']} "
              f"(shown once; UDB keeps only its hash)", flush=True)
        return 0
    if args.keys_command == "list":
        if args.tenant:
            validate_tenant(args.tenant)
        for r in keys.list(args.tenant):
            state = f"revoked {r['revoked']}" if r.get("revoked") else "active"
            print(f"{r['key_id']}  {r['tenant']:<20} {r['role']:<8} {r['created']}  {state}  {r.get('name', '')}".rstrip())
        return 0
    record = keys.revoke(args.key_id)
    print(f"key id {record['key_id']} (tenant {record['tenant']}) revoked at {record['revoked']}")
    return 0

"""Signed, expiring links to one job's artifacts, which a plain browser opens.

Every other artifact request needs an `Authorization` header, which a person clicking a link
cannot send. A report link carries its credential in the path instead:

    {UDB_ARTIFACTS_URL}/s/<token>/artifact/<jobId>/index.html

The token is an itsdangerous `URLSafeTimedSerializer` signature (HMAC-SHA256 over a key derived
from `UDB_JWT_SECRET` with its own salt, so a link is never a JWT nor an OAuth state) of
{tenant, job, generation}, with the time it was signed. It opens only that job's artifacts,
read-only, as the tenant's viewer would see them, for `UDB_LINK_TTL_SECONDS` after signing.

Why the path, not a query parameter or a cookie: the report page links its other artifacts
relatively (`profile-sales.html`, `chart-….png`), and a relative URL keeps the path prefix but
drops the query, so every page and image of the job opens with no rewriting; a cookie would
need a first request to set it, state in the browser, and cross-site rules, and would ride
along on requests the user did not mean. The cost, a token in the URL, is bounded: it opens
one job's artifacts read-only and expires; responses send `Referrer-Policy: no-referrer` so
it does not leak to other sites, and the function's request log shows the path redacted.

Revocation: the token names the tenant's link *generation*, a random value kept at
`auth/links/<tenant>.json` beside the API key records (outside `tenants/`, so nothing a tenant
writes can change it). Revoking any API key of the tenant draws a new generation
(shared/security/auth.py KeyStore.revoke), which ends every link signed before; `rotate()` does the
same on its own. A process caches a tenant's generation for `UDB_AUTH_CACHE_SECONDS`, like
key records, so revocation takes effect within that time.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from datetime import datetime, timezone

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from shared.core.errors import InputError, NotFound
from shared.core.tenancy import TENANT_RE, validate_job_id, validate_tenant

PREFIX = "/s/"
GENERATION_PREFIX = "auth/links/"
SALT = "udb.artifact-link.v1"
REPORT_PAGE = "index.html"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{20,600}$")
_PATH_RE = re.compile(r"^/s/[^/]+/")


class LinkRefused(Exception):
    """A link that does not open: (status, reason). 401 for a token that does not verify,
    expired or revoked; 403 for a valid token used for another job."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def enabled(settings) -> bool:
    """Links need a signing secret (UDB_JWT_SECRET, at least 32 characters) and a lifetime
    (UDB_LINK_TTL_SECONDS > 0)."""
    return len(settings.jwt_secret or "") >= 32 and settings.link_ttl_seconds > 0


def _serializer(settings) -> URLSafeTimedSerializer:
    if not enabled(settings):
        raise InputError("signed report links need UDB_JWT_SECRET (at least 32 characters) and "
                         "UDB_LINK_TTL_SECONDS above 0")
    return URLSafeTimedSerializer(settings.jwt_secret, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})


def redact_path(path: str) -> str:
    """A request path fit for a log line: the token of a link path replaced."""
    return _PATH_RE.sub("/s/<token>/", path or "")


# ---------------------------------------------------------------- generations

def _generation_key(tenant: str) -> str:
    return f"{GENERATION_PREFIX}{validate_tenant(tenant)}.json"


def current_generation(store, tenant: str) -> str:
    """The tenant's link generation ("0" until a key of the tenant is first revoked)."""
    try:
        record = json.loads(store.get(_generation_key(tenant)).data)
    except NotFound:
        return "0"
    return str(record.get("generation") or "0")


def rotate(store, tenant: str) -> str:
    """A new link generation for `tenant`: every link signed before stops opening."""
    generation = secrets.token_urlsafe(12)
    record = {"tenant": tenant, "generation": generation,
              "rotated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.put(_generation_key(tenant), json.dumps(record, indent=2).encode(), content_type="application/json")
    return generation


class Links:
    """Signs and verifies report links for one process (its settings and object store)."""

    def __init__(self, settings, store):
        self.settings, self.store = settings, store
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _generation(self, tenant: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(tenant)
        if cached and now - cached[1] < self.settings.auth_cache_seconds:
            return cached[0]
        generation = current_generation(self.store, tenant)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[tenant] = (generation, now)
        return generation

    def sign(self, tenant: str, job_id: str, name: str = REPORT_PAGE) -> dict:
        """{url, path, expires}: a link to artifact `name` of one job of `tenant`."""
        validate_tenant(tenant)
        validate_job_id(job_id)
        # The generation is read from the store, not the cache: a link signed right after a
        # revocation must carry the new generation.
        generation = current_generation(self.store, tenant)
        token = _serializer(self.settings).dumps({"t": tenant, "j": job_id, "g": generation})
        path = f"{PREFIX}{token}/artifact/{job_id}/{name}"
        expires = datetime.fromtimestamp(int(time.time()) + self.settings.link_ttl_seconds, timezone.utc)
        return {"url": self.settings.artifacts_url.rstrip("/") + path, "path": path,
                "expires": expires.isoformat(timespec="seconds")}

    def verify(self, token: str, job_id: str | None) -> str:
        """The tenant a link's token opens `job_id` for; LinkRefused otherwise (a token that
        verifies but names another job, or a path without a job, is 403)."""
        if not enabled(self.settings):
            raise LinkRefused(401, "signed links are off here (no UDB_JWT_SECRET, or UDB_LINK_TTL_SECONDS=0)")
        if not _TOKEN_RE.fullmatch(token or ""):
            raise LinkRefused(401, "malformed link")
        try:
            claims = _serializer(self.settings).loads(token, max_age=self.settings.link_ttl_seconds)
        except SignatureExpired:
            raise LinkRefused(401, "link expired: ask for a new one (GET /status/{jobId} or `udb run`)") from None
        except BadSignature:
            raise LinkRefused(401, "link does not verify") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("t"), str) \
                or not TENANT_RE.fullmatch(claims["t"]) or not isinstance(claims.get("j"), str):
            raise LinkRefused(401, "link does not verify")
        if claims.get("g") != self._generation(claims["t"]):
            raise LinkRefused(401, "link revoked: the tenant's API keys were revoked since it was made")
        if claims["j"] != job_id:
            raise LinkRefused(403, "this link opens another job's artifacts")
        return claims["t"]


def report_link(ctx, tenant: str, job_id: str) -> dict | None:
    """A signed link to a job's report page, or None where links are off (no secret)."""
    if not enabled(ctx.settings):
        return None
    return ctx.links.sign(tenant, job_id)

"""GET /s/{token}/artifact/{jobId}/ and /s/{token}/artifact/{jobId}/{name}: a job's artifacts
through a signed, expiring link (shared/security/links.py), for a browser that sends no header.

The token in the path is the credential (auth.ROUTE_ROLES gives the route SIGNED_LINK, so the
gatekeeper leaves it to this handler): it names the tenant and the one job it opens. A token
that does not verify, has expired or was revoked is 401; a good token used for another job is
403. Failures spend the caller's address's failed-authentication bucket, as a bad API key does.
"""
from __future__ import annotations

from shared.security import auth, links
from shared.core.errors import NotFound
from shared.serving.runtime import Context
from shared.core.tenancy import validate_job_id

from functions.artifacts.handler import serve_artifact

# A page opened by link must not hand its URL (the token) to another site, nor be kept by a
# shared cache; it is the tenant's data.
LINK_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "private, no-store",
                "X-Robots-Tag": "noindex, nofollow"}


def open_link(request, ctx: Context):
    parts = request.path.split("/")  # "", "s", token, "artifact", job, [name]
    # The credential is checked before the rest of the path: a caller without a good link
    # learns nothing about routes or jobs (401), as at every other door.
    token = parts[2] if len(parts) > 2 else ""
    shaped = len(parts) in (5, 6) and parts[3] == "artifact"
    gate = ctx.gatekeeper
    try:
        tenant = ctx.links.verify(token, parts[4] if shaped else None)
    except links.LinkRefused as exc:
        gate.limiter.take(f"ip:{request.remote_addr or '?'}", "failed authentications")
        if exc.status == 403 and not shaped:
            raise NotFound(f"no route {links.redact_path(request.path)}") from None
        raise (auth.Forbidden if exc.status == 403 else auth.Unauthorized)(str(exc)) from None
    gate.limiter.take(tenant)
    job_id = validate_job_id(parts[4])
    name = parts[5] if len(parts) == 6 and parts[5] else "index.json"
    body, status, headers = serve_artifact(ctx, tenant, job_id, name)
    return body, status, {**headers, **LINK_HEADERS}


ROUTES = [("GET", links.PREFIX, open_link)]

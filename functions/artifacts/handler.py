"""artifacts: HTTP reads of job status, artifact index and artifact files, one tenant at a time.

The caller's tenant is the authenticated principal's (`shared.security.auth.tenant_of`; with
authentication off, the `X-UDB-Tenant` header's); every read goes through that tenant's store
view, so another tenant's job id (guessed or not) is simply not found.
"""
from __future__ import annotations

import json

from shared.security import auth, links
from shared.core.errors import NotFound
from shared.serving.httpfn import json_response
from shared.serving.runtime import Context
from shared.core.tenancy import validate_artifact_name, validate_job_id

FUNCTION = "artifacts"
# Its CloudEvent entry: the dead letters (main.py; the embedded dispatcher finds it here too).
from functions.artifacts.deadletters import handle  # noqa: E402,F401
TENANT_HEADER = auth.TENANT_HEADER


def _tenant(request) -> str:
    return auth.tenant_of(request)


def status(request, ctx: Context):
    """GET /status/{jobId}: the job document; once the job has artifacts, with `report_link`, a
    signed, expiring link to its report page that a browser opens without a header
    (shared/security/links.py; absent where links are off)."""
    parts = request.path.strip("/").split("/")
    if len(parts) != 2:
        raise NotFound(f"no route {request.path}")
    job_id = validate_job_id(parts[1])
    tenant = _tenant(request)
    doc = ctx.jobs(tenant).get(job_id)
    if doc.get("artifacts_index"):
        link = links.report_link(ctx, tenant, job_id)
        if link:
            doc["report_link"] = link
    return json_response(doc)


# Every artifact response carries a Content-Security-Policy (and nosniff, so a browser never
# reads JSON or Markdown as HTML). HTML artifacts hold tenant data — column names and cells —
# laid out by engines UDB does not control (ydata-profiling, Evidently), so each is a sandbox:
# an opaque origin (no cookies, storage or same-origin reads of the API), no scripts, no forms,
# no plugins, and nothing fetched from anywhere but this server (images) or the page itself.
# ydata's report keeps its content without scripts; Evidently's needs them and shows only its
# shell when served here — its figures are in quality-*.json / drift-*.json.
# UDB's own pages (index.html, profile-*.html, text-stats-*.html) escape every value and use no
# scripts: the same sandbox costs them nothing. The one exception is UDB's chart pages
# (chart-*.html, written by functions/analyze/handler.py through Plotly's to_html, which embeds
# the data as JSON with <, > and / escaped): they need plotly.js, so their sandbox allows
# scripts from this server and the page's own inline figure, still in an opaque origin, with
# no connections (connect-src 'none') and images only from here.
SANDBOX_CSP = ("sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; font-src data:; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
CHART_CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'self' 'unsafe-inline'; "
             "style-src 'unsafe-inline'; img-src 'self' data: blob:; font-src data:; connect-src 'none'; "
             "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def artifact_csp(name: str) -> str:
    """The Content-Security-Policy an artifact is served with (see above)."""
    return CHART_CSP if name.startswith("chart-") and name.endswith(".html") else SANDBOX_CSP


def artifact(request, ctx: Context):
    """GET /artifact/{jobId}/ (the index) and GET /artifact/{jobId}/{name}"""
    parts = request.path.strip("/").split("/")
    if len(parts) not in (2, 3):
        raise NotFound(f"no route {request.path}")
    name = parts[2] if len(parts) == 3 and parts[2] else "index.json"
    return serve_artifact(ctx, _tenant(request), validate_job_id(parts[1]), name)


def serve_artifact(ctx: Context, tenant: str, job_id: str, name: str):
    """(body, status, headers) of artifact `name` of a job of `tenant`; NotFound if absent."""
    store = ctx.tenant_store(tenant)
    key = store.artifact_key(job_id, validate_artifact_name(name))
    try:
        blob = store.get(key)
    except NotFound:
        raise NotFound(f"no artifact {name!r} for job {job_id}") from None
    media_type = "application/json"
    if name != "index.json":
        index = json.loads(store.get(store.artifact_key(job_id, "index.json")).data)
        media_type = next((a["media_type"] for a in index["artifacts"] if a["name"] == name),
                          "application/octet-stream")
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    return blob.data, 200, {"Content-Type": media_type, "ETag": f'"{blob.etag}"',
                            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": artifact_csp(name)}


ROUTES = [("GET", "/status/", status), ("GET", "/artifact/", artifact)]

"""artifacts: HTTP reads of job status, artifact index and artifact files, one tenant at a time.

The caller's tenant is the authenticated principal's (`shared.auth.tenant_of`; with
authentication off, the `X-UDB-Tenant` header's); every read goes through that tenant's store
view, so another tenant's job id (guessed or not) is simply not found.
"""
from __future__ import annotations

import json

from shared import auth
from shared.errors import NotFound
from shared.httpfn import json_response
from shared.runtime import Context
from shared.tenancy import validate_artifact_name, validate_job_id

FUNCTION = "artifacts"
# Its CloudEvent entry: the dead letters (main.py; the embedded dispatcher finds it here too).
from functions.artifacts.deadletters import handle  # noqa: E402,F401
TENANT_HEADER = auth.TENANT_HEADER


def _tenant(request) -> str:
    return auth.tenant_of(request)


def status(request, ctx: Context):
    """GET /status/{jobId}"""
    parts = request.path.strip("/").split("/")
    if len(parts) != 2:
        raise NotFound(f"no route {request.path}")
    job_id = validate_job_id(parts[1])
    return json_response(ctx.jobs(_tenant(request)).get(job_id))


def artifact(request, ctx: Context):
    """GET /artifact/{jobId}/ (the index) and GET /artifact/{jobId}/{name}"""
    parts = request.path.strip("/").split("/")
    if len(parts) not in (2, 3):
        raise NotFound(f"no route {request.path}")
    tenant = _tenant(request)
    job_id = validate_job_id(parts[1])
    name = parts[2] if len(parts) == 3 and parts[2] else "index.json"
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
                            "X-Content-Type-Options": "nosniff"}


ROUTES = [("GET", "/status/", status), ("GET", "/artifact/", artifact)]

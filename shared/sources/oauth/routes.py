"""HTTP routes of the OAuth flows, served by the artifacts function: the provider's redirect
(`GET /oauth/callback`) and the device-code flow (`POST /oauth/device`, `POST /oauth/device/{id}`)."""
from __future__ import annotations

from shared.core.errors import InputError, NotFound
from shared.core.tenancy import validate_job_id
from shared.security import auth
from shared.sources.oauth.flow import AuthorizationRefused, complete_authorization, device_poll, device_start
from shared.sources.oauth.providers import provider_of
from shared.sources.oauth.tokens import _get_json
from shared.sources.oauth.waiting import fail_waiting_job, job_name, resume_job


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
        if exc.source_provider and exc.principal.tenant:  # the flow ended: its job cannot go on
            fail_waiting_job(ctx, exc.principal.tenant, job_id, str(exc))
        ctx.log.warning("oauth callback for job %s refused: %s", job_id, exc)
        return json_response({"jobId": job_id, "state": "failed" if exc.source_provider else "unchanged",
                              "error": str(exc)}, 400)
    tenant, job_id = principal.tenant, principal.subject
    if tenant is None:  # complete_authorization refuses a state without one
        raise auth.Unauthorized("the OAuth state names no tenant")
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

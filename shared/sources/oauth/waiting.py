"""Jobs waiting for authorization: a discover that found no token for the tenant leaves its job
in `discovering` with `error.waiting = "authorization"` (and the `oauthUrl` or the device code).
When the callback (or a device poll) stores the tokens, the job's `dev.udb.discover.requested` is
re-emitted -- to the broker at `K_SINK` when there is one, else through the in-process embedded
dispatcher -- so the same job goes on to discover, sync and load."""
from __future__ import annotations

import json
import time

from shared.core.errors import NotFound, PreconditionFailed, UDBError
from shared.core.tenancy import validate_job_id
from shared.sources.oauth import flow, providers
from shared.sources.oauth.tokens import _get_json, _put_json


class AuthorizationNeeded(UDBError):
    """Discover found no token for the tenant: the job waits for the user (see `wait`)."""

    def __init__(self, wait: dict):
        self.wait = wait
        super().__init__(wait["reason"])


def job_name(job_id: str) -> str:
    return f"oauth.job.{validate_job_id(job_id)}"


def request_authorization(ctx, tenant: str, job_id: str, source_provider: str, resume: dict,
                          *, device: bool = False) -> dict:
    """What a job without a token waits for: an oauthUrl (or a started device flow), with the
    job's discover request kept in the secret store so the callback can re-emit it."""
    secrets = ctx.secrets
    cfg = providers.config(source_provider, ctx.settings)
    _put_json(secrets, tenant, job_name(job_id),
              {**resume, "source_provider": source_provider, "expires_at": time.time() + ctx.settings.live_job_seconds})
    wait: dict = {"waiting": "authorization", "provider": source_provider, "stage": "discover", "function": "discover"}
    if device:
        started = flow.device_start(ctx.settings, secrets, tenant, source_provider, job_id=job_id)
        wait["device"] = started
        wait["reason"] = (f"waiting for authorization: {source_provider} links need {cfg.label} OAuth; open "
                          f"{started['verification_uri']} and enter {started['user_code']}, then poll "
                          f"POST /oauth/device/{started['deviceId']}")
    else:
        wait["oauthUrl"] = flow.authorization_url(ctx.settings, secrets, tenant, job_id, source_provider)
        wait["reason"] = (f"waiting for authorization: {source_provider} links need {cfg.label} OAuth; open the "
                          f"oauthUrl (valid {flow.STATE_SECONDS // 60} min) or start the device-code flow "
                          f"(POST /oauth/device)")
    return wait


def mark_waiting(jobs, job_id: str, wait: dict) -> dict:
    """The job document says it waits (state discovering, `error.waiting`, the reason)."""
    return jobs.move(job_id, "discovering", error=wait)


def clear_waiting(jobs, job_id: str) -> None:
    """Once authorized, the job's document no longer says it waits."""
    from shared.storage.jobs import apply_state

    key = jobs._key(job_id)
    for _ in range(20):
        try:
            blob = jobs.store.get(key)
        except NotFound:
            return
        doc = json.loads(blob.data)
        if not (doc.get("error") or {}).get("waiting"):
            return
        apply_state(doc, doc["state"])  # touch: updated_at, version
        doc["error"] = None
        try:
            jobs.store.put(key, json.dumps(doc, indent=2, sort_keys=True).encode(), if_match=blob.etag,
                           content_type="application/json")
            return
        except PreconditionFailed:
            continue


def resume_job(ctx, tenant: str, job_id: str) -> dict:
    """Re-emit the waiting job's discover request now that the tenant is authorized: to the
    broker (K_SINK) when there is one, else through the embedded dispatcher in this process.
    Returns {resumed, via, state[, error]}. A stack or cluster function without K_SINK does not
    resume (the tokens are kept; discovering the link again goes straight through)."""
    from shared.core import events

    record = _get_json(ctx.secrets, tenant, job_name(job_id))
    jobs = ctx.jobs(tenant)
    if not ctx.settings.broker_url and ctx.settings.mode != "embedded":
        # A function without a broker address (no SinkBinding) cannot re-emit: the tokens are
        # stored, and discovering the link again goes straight through.
        return {"resumed": False, "state": None,
                "error": "no broker (K_SINK) here to resume the job: discover the link again"}
    try:
        doc = jobs.get(job_id)
    except NotFound:
        doc = None
    if record is None or doc is None or doc["state"] != "discovering":
        return {"resumed": False, "state": doc["state"] if doc else None}
    ctx.secrets.delete(tenant, job_name(job_id))
    options = {k: v for k, v in (record.get("options") or {}).items() if k not in ("auth", "headers", "oauth")}
    data = {"hint": record["hint"], "autosync": record.get("autosync", True),
            "autoanalyze": record.get("autoanalyze", True)}
    if options:
        data["options"] = options
    event = events.make_event(events.DISCOVER_REQUESTED, data, tenant=tenant, job_id=job_id,
                              function=getattr(ctx, "function", "artifacts"), traceparent=doc.get("traceparent"))
    if ctx.settings.broker_url:
        # The broker not taking it fails the job at once (JobNotAccepted: 503 + Retry-After); the
        # tokens are kept, so discovering the link again goes straight through.
        ctx.send_job(tenant, job_id, event, "discover")
        return {"resumed": True, "via": "broker", "state": "discovering"}
    if ctx.dispatcher is None:  # a caller (a test, the MCP server) may have set its own
        from shared.serving.embedded import Dispatcher
        ctx.dispatcher = ctx.opened(Dispatcher(ctx.settings))
    ctx.dispatcher.publish(event)
    doc = jobs.get(job_id)
    out = {"resumed": True, "via": "in-process", "state": doc["state"]}
    if doc["state"] == "failed":
        out["error"] = (doc.get("error") or {}).get("reason")
    return out


def fail_waiting_job(ctx, tenant: str, job_id: str, reason: str) -> None:
    """The authorization of a waiting job ended without tokens: the job fails with the reason."""
    ctx.secrets.delete(tenant, job_name(job_id))
    try:
        doc = ctx.jobs(tenant).get(job_id)
    except NotFound:
        return
    if doc["state"] == "discovering":
        ctx.jobs(tenant).fail(job_id, stage="discover", function="artifacts", reason=reason)

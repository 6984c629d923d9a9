"""discover: hint -> provider, confidence, catalogue of streams; `dev.udb.source.discovered`.

Two doors, one path: the `dev.udb.discover.requested` event (through the broker), and
`POST /sources/discover_connect` (a JSON hint in; the job id and the ranked candidates out, and
the discovered event sent to the broker at `K_SINK`).
"""
from __future__ import annotations

import hashlib
import json

from cloudevents.http import CloudEvent

from functions.discover.detect import detect
from shared.security import auth, limits, ratelimit
from shared.core import events
from shared.observability import logs, telemetry
from shared.sources import oauth
from shared.core.errors import InputError, NotFound, SourceError, TransientError
from shared.serving.httpfn import json_response
from shared.serving.runtime import Context
from shared.sources import registry
from shared.sources import SourceEnv, inspect_source, needs_oauth, redact
from shared.core.tenancy import new_job_id

FUNCTION = "discover"
TENANT_HEADER = "X-UDB-Tenant"


def prepare(ctx: Context) -> None:
    """At the served function's start: every connector imported (the registry's first lookup
    would otherwise import them during the first job)."""
    registry.load()


def discover(ctx: Context, tenant: str, job_id: str, hint: str, traceparent: str | None = None,
             options: dict | None = None, *, autosync: bool = True, autoanalyze: bool = True,
             door: bool = False) -> tuple[dict, dict]:
    """Detect, catalogue and record the source; returns (source, detection). A share link of a
    tenant without a token raises oauth.AuthorizationNeeded: the job waits (its document says
    why, with the oauthUrl), and the OAuth callback re-emits this request once authorized."""
    ratelimit.check_concurrent_jobs(ctx, tenant, job_id)  # TooManyJobs: 429 here, a failed job via events
    limits.check_local_hint(hint, ctx.settings)  # no server-side paths from a tenant in stack/cluster
    jobs = ctx.jobs(tenant)
    shown = redact(hint)
    # A job started at the HTTP door, whose event goes to the broker, is `accepted: false` until
    # the broker takes it (without a broker the job waits for the client's next request, and counts).
    jobs.ensure(job_id, hint=shown, traceparent=traceparent, **({"accepted": False} if door else {}))
    jobs.move(job_id, "discovering")
    with telemetry.stage("probe") as span:
        found = detect(hint, options, settings=ctx.settings)
        if not found["candidates"]:
            raise SourceError(f"cannot tell what {shown!r} is: not a path, URL or DSN UDB knows")
        if found.get("unreachable"):
            raise SourceError(found["unreachable"])
        best = found["candidates"][0]
        span.set_attributes({"udb.provider": best["provider"], "udb.confidence": best["confidence"]})
        wait = None
        if needs_oauth(best["provider"]) and not oauth.authorized(ctx.settings, ctx.secrets, tenant,
                                                                        best["provider"]):
            resume = {"hint": hint, "options": dict(options or {}), "autosync": autosync, "autoanalyze": autoanalyze}
            wait = oauth.request_authorization(ctx, tenant, job_id, best["provider"], resume,
                                               device=(options or {}).get("oauth") == "device")
        else:
            # Inline credentials in the options go to the secret store here; the catalogue keeps refs.
            catalogue = inspect_source(best["provider"], hint, SourceEnv.of(ctx, tenant, options))
            span.set_attribute("udb.streams", len(catalogue["streams"]))
    if wait is not None:  # no token for this share link: the job waits for the user
        oauth.mark_waiting(jobs, job_id, wait)
        ctx.log.info("job %s waits for %s authorization", job_id, best["provider"])
        raise oauth.AuthorizationNeeded({**wait, "candidates": found["candidates"], "ambiguous": found["ambiguous"]})
    # The id is stable for the same hint, so rediscovery updates the same source document.
    short = catalogue["short"]
    source_id = f"{short}-{hashlib.sha256(shown.encode()).hexdigest()[:8]}"
    source = {"id": source_id, "short": short, "provider": catalogue["provider"],
              "hint": catalogue.get("hint", shown), "confidence": best["confidence"],
              "streams": catalogue["streams"]}
    ctx.tenant_store(tenant).put(f"sources/{source_id}.json", json.dumps(source, indent=2).encode(),
                                 content_type="application/json")
    if needs_oauth(source["provider"]):
        oauth.clear_waiting(jobs, job_id)  # a resumed job: authorized now
    jobs.move(job_id, "discovered", source_id=source_id)
    ctx.log.info("discovered %s with %d streams", source_id, len(source["streams"]))
    return source, found


def handle(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    data = events.event_data(event)
    attrs = event.get_attributes()
    autosync, autoanalyze = data.get("autosync", True), data.get("autoanalyze", True)
    try:
        source, found = discover(ctx, attrs["tenant"], attrs["jobid"], data["hint"].strip(), attrs.get("traceparent"),
                                 data.get("options"), autosync=autosync, autoanalyze=autoanalyze)
    except oauth.AuthorizationNeeded:
        return None  # the job waits for the user; the OAuth callback re-emits this request
    return ctx.emit(events.SOURCE_DISCOVERED,
                    {"source": source, "candidates": found["candidates"], "ambiguous": found["ambiguous"],
                     "autosync": autosync, "autoanalyze": autoanalyze},
                    event, autosync=autosync, autoanalyze=autoanalyze)


def discover_connect(request, ctx: Context):
    """POST /sources/discover_connect {"hint": ..., "autosync": true, "autoanalyze": true}"""
    tenant = auth.tenant_of(request)  # the principal's (the X-UDB-Tenant header's with auth off)
    job_id = new_job_id()
    # The job's trace starts here (or under the caller's `traceparent` header, if it sent one).
    with telemetry.request_span(FUNCTION, "POST /sources/discover_connect", request.headers.get("traceparent"),
                                tenant=tenant, job=job_id), logs.bound(function=FUNCTION, tenant=tenant, job=job_id):
        return _discover_connect(request, ctx, tenant, job_id)


def _discover_connect(request, ctx: Context, tenant: str, job_id: str):
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("hint"), str) or not body["hint"].strip():
        raise InputError('expected a JSON object with a non-empty "hint" string')
    autosync, autoanalyze = bool(body.get("autosync", True)), bool(body.get("autoanalyze", True))
    if not isinstance(body.get("options", {}), dict):
        raise InputError('"options" must be a JSON object')
    request_event = events.make_event(events.DISCOVER_REQUESTED, {"hint": body["hint"]}, tenant=tenant,
                                      job_id=job_id, function=FUNCTION)
    try:
        source, found = discover(ctx, tenant, job_id, body["hint"].strip(), request_event["traceparent"],
                                 body.get("options"), autosync=autosync, autoanalyze=autoanalyze,
                                 door=bool(ctx.settings.broker_url))
    except oauth.AuthorizationNeeded as waiting:
        wait = waiting.wait
        answer = {"jobId": job_id, "state": "waiting", "reason": wait["reason"], "provider": wait["provider"],
                  "candidates": wait["candidates"], "ambiguous": wait["ambiguous"], "sent": False}
        answer.update({k: wait[k] for k in ("oauthUrl", "device") if k in wait})
        return json_response(answer, 200)
    except SourceError as exc:
        ctx.jobs(tenant).fail(job_id, stage="discover", function=FUNCTION, reason=str(exc))
        telemetry.mark_failed(str(exc))
        return json_response({"jobId": job_id, "state": "failed", "error": str(exc)}, 422)
    except ratelimit.TooManyJobs:
        raise  # refused before its document was written: 429
    except Exception as exc:
        # Anything else answers 400, 500 or 503: the job must not stay live behind the answer.
        _fail_started(ctx, tenant, job_id, exc)
        raise
    reply = ctx.emit(events.SOURCE_DISCOVERED,
                     {"source": source, "candidates": found["candidates"], "ambiguous": found["ambiguous"],
                      "autosync": autosync, "autoanalyze": autoanalyze},
                     request_event, autosync=autosync, autoanalyze=autoanalyze)
    sent = False
    if ctx.settings.broker_url:
        ctx.send_job(tenant, job_id, reply, "discover")  # JobNotAccepted: failed, 503 + Retry-After
        sent = True
    result = {"jobId": job_id, "candidates": found["candidates"], "ambiguous": found["ambiguous"],
              "source": source, "sent": sent}
    return json_response(result, 202 if sent else 200)


def _fail_started(ctx: Context, tenant: str, job_id: str, exc: Exception) -> None:
    """Fail a job whose discovery at the door ended in an error answer, if its document exists;
    the reason is what the client is told (no internal detail for an outage or a bug)."""
    if isinstance(exc, InputError):
        reason = str(exc)
    elif isinstance(exc, TransientError):
        reason = "a dependency of UDB was unavailable: start the job again"
    else:
        reason = f"internal error: {type(exc).__name__}"
    try:
        if ctx.jobs(tenant).get(job_id)["state"] not in ("completed", "failed"):
            ctx.jobs(tenant).fail(job_id, stage="discover", function=FUNCTION, reason=reason)
    except NotFound:
        pass  # refused before its document was written
    except Exception:  # the store itself is down: the job cannot be recorded either way
        ctx.log.warning("job %s could not be marked failed", job_id, exc_info=True)


ROUTES = [("POST", "/sources/discover_connect", discover_connect)]

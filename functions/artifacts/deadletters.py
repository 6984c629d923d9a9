"""Dead letters: an event whose delivery failed past its retry budget fails its job, with the
reason — unless the failure was an outage: then the job waits for its function to come back and
is resumed (functions/artifacts/redrive.py).

But the reports of a completed job: a dead-lettered `dev.udb.analysis.completed` (its delivery
to the reports function ran out of retries) leaves the job `completed` and marks its reports
still pending as failed, with the reason, in index.json, on the report page and in the job
document.

The Broker's dead-letter sink is the KafkaSink `udb-dead-letters`; a KafkaSource delivers that
topic here (eventing/deadletters.yaml). The events carry Knative's `knativeerrordest`,
`knativeerrorcode` and `knativeerrordata` extensions.
"""
from __future__ import annotations

import base64
import binascii

from cloudevents.http import CloudEvent

from functions.artifacts import redrive
from shared.core import events
from shared.storage import jobindex
from shared.core.errors import NotFound
from shared.core.routing import load_routes
from shared.serving.runtime import Context

MAX_REASON = 300


def reason_of(event: CloudEvent) -> str:
    attrs = event.get_attributes()
    code = attrs.get("knativeerrorcode", "?")
    dest = attrs.get("knativeerrordest", "?")
    try:
        detail = base64.b64decode(attrs.get("knativeerrordata", "")).decode("utf-8", "replace").strip()
    except (binascii.Error, ValueError):
        detail = ""
    status = "no answer" if code in ("0", "?") else f"HTTP {code}"
    if code.startswith("2"):  # the subscriber answered, with a body that is not a CloudEvent
        status += ", a reply that is not a CloudEvent"
    text = f"delivery of {attrs['type']} to {dest} failed after all retries ({status})"
    return f"{text}: {detail}"[:MAX_REASON] if detail else text


def handle(event: CloudEvent, ctx: Context) -> None:
    attrs = event.get_attributes()
    stage = events.STAGE_OF.get(attrs["type"], "delivery")
    # Which function failed: the one the routing table sends this event to.
    routes = load_routes(ctx.settings.eventing_dir, ctx.settings.broker_name)
    subscribers = [t.subscriber for t in routes.match(attrs)]
    function = subscribers[0].removeprefix("udb-") if len(subscribers) == 1 else "broker"
    if attrs["type"] in events.AFTER_COMPLETION:
        return _reports_failed(event, ctx)
    reason = redrive.park(ctx, event, function=function, reason=reason_of(event))
    if reason is None:
        return None  # parked: the redrive sweep resumes the job once its function is ready
    ctx.jobs(attrs["tenant"]).fail(attrs["jobid"], stage=stage, function=function, reason=reason)
    ctx.log.warning("job failed by dead letter: %s", reason)
    return None


# It works on completed jobs: shared.serving.runtime.invoke does not skip them for it. (A marker
# attribute on the function, which runtime.invoke reads with getattr.)
handle.after_completion = True  # type: ignore[attr-defined]


def _reports_failed(event: CloudEvent, ctx: Context) -> None:
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    reason = reason_of(event)
    store = ctx.tenant_store(tenant)
    try:
        index = jobindex.update(store, job_id, lambda ix: jobindex.fail_pending(ix, reason))
    except NotFound:
        ctx.log.warning("dead letter for job %s without an index: %s", job_id, reason)
        return None
    ctx.jobs(tenant).set_reports(job_id, jobindex.job_reports(index.get("reports", []), reason=reason))
    ctx.log.warning("reports of job %s failed by dead letter: %s", job_id, reason)
    return None

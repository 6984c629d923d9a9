"""What every function shares: its context, its lifecycle, and how a handler is invoked.

A handler is `handle(event, ctx) -> CloudEvent | None`. `invoke` wraps it the same way for
the HTTP target, the embedded dispatcher and the tests: it checks the incoming event, binds
the log context, and turns a bad source into a failed job with a `dev.udb.job.failed` reply.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cloudevents.http import CloudEvent

from shared.core import events
from shared.observability import logs, metrics, telemetry
from shared.core.errors import InputError, JobFailed, TransientError, ValidationError, is_transient
from shared.storage.jobs import Jobs
from shared.core.settings import Settings
from shared.storage.store import ObjectStore, TenantStore, open_store

Handler = Callable[[CloudEvent, "Context"], "CloudEvent | None"]
# The event the current handler is working on (its routing flags decide lineage at `loaded`).
incoming_event: contextvars.ContextVar = contextvars.ContextVar("incoming_event", default=None)


class LocalJobEvents:
    """Embedded mode's stand-in for the `udb.job-events` Kafka topic: one JSON line per
    job-state change in `<UDB_HOME>/job-events.jsonl`."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def publish(self, doc: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, open(self.path, "a") as fh:
            fh.write(json.dumps({"tenant": doc["tenant"], "job": doc["job_id"], "state": doc["state"],
                                 "at": doc["updated_at"], "error": doc.get("error")}) + "\n")

    def close(self) -> None:
        pass


@dataclass
class Context:
    function: str
    settings: Settings
    store: ObjectStore
    job_events: object = None
    log: object = None
    extras: dict = field(default_factory=dict)

    @property
    def secrets(self):
        """The secret store, opened on first use (most handlers never need it)."""
        if "secrets" not in self.extras:
            from shared.security.secrets import open_secrets
            self.extras["secrets"] = open_secrets(self.settings)
        return self.extras["secrets"]

    def fault(self, point: str) -> None:
        """Die here, abruptly, when the tests asked for it (UDB_FAULTS=writer.after_lease,...):
        crash-safety tests SIGKILL a function at each point of its work; `<point>:raise` makes it
        raise there instead."""
        faults = self.settings.faults.split(",")
        if f"{self.function}.{point}" in faults:
            import os
            import signal
            self.log.warning("fault injected: killing %s at %s", self.function, point)
            os.kill(os.getpid(), signal.SIGKILL)
        if f"{self.function}.{point}:raise" in faults:  # a crash the process survives (a 500)
            self.log.warning("fault injected: raising in %s at %s", self.function, point)
            raise RuntimeError(f"fault injected at {self.function}.{point}")

    def tenant_store(self, tenant: str) -> TenantStore:
        return TenantStore(self.store, tenant)

    @property
    def lineage(self):
        """The OpenLineage emitter of these settings (shared.observability.lineage), made on first use."""
        if "lineage" not in self.extras:
            from shared.observability.lineage import Lineage
            self.extras["lineage"] = Lineage(self.settings)
        return self.extras["lineage"]

    def jobs(self, tenant: str) -> Jobs:
        return Jobs(self.tenant_store(tenant), on_change=self._job_changed)

    def _job_changed(self, doc: dict) -> None:
        """Every job-state change: to the job-events topic, then to lineage."""
        if self.job_events is not None:
            self.job_events.publish(doc)
        if self.lineage.enabled:
            event = incoming_event.get()
            self.lineage.job_changed(doc, analysed=events.flag(event, "autoanalyze") if event is not None else True)

    def send_job(self, tenant: str, job_id: str, event: CloudEvent, stage: str) -> None:
        """Send a job's event from a client door to the broker (K_SINK) and note on the job's
        document that the broker holds it. When the broker does not take it the job fails at
        once with the reason (a job never accepted must not stay live and count against
        UDB_MAX_CONCURRENT_JOBS) and JobNotAccepted goes up: 503 with Retry-After."""
        from shared.core import bindings
        from shared.core.errors import JobNotAccepted
        try:
            bindings.send_to_broker(self.settings, event)
        except TransientError as exc:
            self.log.warning("job %s not started: %s", job_id, exc)
            reason = "the broker did not take the job, so nothing was started: start it again"
            self.jobs(tenant).fail(job_id, stage=stage, function=self.function, reason=reason)
            raise JobNotAccepted(reason, job_id) from None
        self.jobs(tenant).annotate(job_id, accepted=True)

    def emit(self, event_type: str, data: dict, incoming: CloudEvent, **flags) -> CloudEvent:
        """The reply to `incoming`: same tenant and job, a child of its trace."""
        attrs = incoming.get_attributes()
        return events.make_event(event_type, data, tenant=attrs["tenant"], job_id=attrs["jobid"],
                                 function=self.function, traceparent=attrs.get("traceparent"),
                                 flags=flags or None)


def start(function: str, settings: Settings, **extras) -> Context:
    """Open connections once with the entry point's settings; bad config fails here, before any
    traffic is served."""
    logs.setup(settings.log_level)
    telemetry.setup(settings, function)
    store = open_store(settings)
    if settings.kafka_bootstrap:
        from shared.serving.jobevents import KafkaJobEvents  # aiokafka only where it is used
        job_events = KafkaJobEvents(settings.kafka_bootstrap, settings.job_events_topic)
    else:
        job_events = LocalJobEvents(Path(settings.home) / "job-events.jsonl")
    return Context(function=function, settings=settings, store=store, job_events=job_events,
                   log=logs.get(function), extras=dict(extras))


def invoke(handle: Handler, event: CloudEvent, ctx: Context) -> CloudEvent | None:
    """Run one handler on one event.

    Raises ValidationError for an event that cannot be trusted (answer 400) and
    TransientError for a dependency outage (answer 5xx, the broker retries). A bad source
    fails the job and returns its `dev.udb.job.failed` event instead of raising. Any other
    error is deterministic (retrying gives the same answer): the job fails at once with the
    full cause (type, message, step); embedded mode returns the `dev.udb.job.failed` event,
    the stack and the cluster raise JobFailed, which the HTTP door answers 422 (not retried).
    """
    events.check_event(event)
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    with logs.bound(tenant=tenant, job=job_id, trace=events.trace_id_of(attrs.get("traceparent")),
                    function=ctx.function), telemetry.handler_span(ctx.function, attrs), _handling(event):
        started = time.perf_counter()
        # A handler that works on completed jobs (reports, the dead letters of its deliveries)
        # says so with `handle.after_completion = True`, for the event types of events.AFTER_COMPLETION.
        after = bool(getattr(handle, "after_completion", False)) and attrs["type"] in events.AFTER_COMPLETION
        if _finished(ctx, tenant, job_id, after):
            # At-least-once delivery: a redelivered event of a finished job changes nothing.
            ctx.log.info("%s for finished job ignored (redelivery)", attrs["type"])
            return None
        metrics.jobs_started.labels(ctx.function, tenant).inc()
        try:
            reply = handle(event, ctx)
        except (ValidationError, TransientError):
            metrics.jobs_total.labels(ctx.function, tenant, "error").inc()
            raise
        except InputError as exc:
            if after:  # the job is done; this work is not the job
                ctx.log.warning("%s not handled: %s", attrs["type"], exc)
                return None
            ctx.log.warning("job failed: %s", exc)
            return _fail(ctx, event, str(exc), cause=cause_of(exc))
        except Exception as exc:  # a bug must not leave the job hanging in a live state
            if is_transient(exc):  # a dependency outage nobody wrapped: 503, retried
                metrics.jobs_total.labels(ctx.function, tenant, "error").inc()
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            ctx.log.error("handler crashed: %s", exc, extra={"fields": {"traceback": traceback.format_exc()}})
            if after:
                # After completion a crash never fails the job: retried, then dead-lettered (the
                # embedded dispatcher dead-letters it too, eventing/triggers.yaml's sink).
                metrics.jobs_total.labels(ctx.function, tenant, "error").inc()
                raise
            reason = f"internal error in {ctx.function}: {type(exc).__name__}: {exc}"
            cause = cause_of(exc)
            reply = _fail(ctx, event, reason, cause=cause)
            if ctx.settings.mode != "embedded":
                raise JobFailed(_clip(reason), {"job": job_id, "state": "failed", **cause}) from exc
            return reply
        finally:
            metrics.stage_seconds.labels(ctx.function, "handler").observe(time.perf_counter() - started)
        outcome = "failed" if reply is not None and reply["type"] == events.JOB_FAILED else "ok"
        metrics.jobs_total.labels(ctx.function, tenant, outcome).inc()
        if reply is not None:
            events.check_event(reply)
        return reply


@contextlib.contextmanager
def _handling(event: CloudEvent):
    token = incoming_event.set(event)
    try:
        yield
    finally:
        incoming_event.reset(token)


def _finished(ctx: Context, tenant: str, job_id: str, after_completion: bool = False) -> bool:
    """A job past its work: failed, or completed unless the handler works after completion
    (the reports function on analysis.completed, and the dead letters of its deliveries)."""
    from shared.core.errors import NotFound
    from shared.storage.jobs import TERMINAL
    try:
        state = ctx.jobs(tenant).get(job_id)["state"]
    except NotFound:
        return False
    if state == "completed" and after_completion:
        return False
    return state in TERMINAL


MAX_REASON_CHARS = 2000  # a cause is for people; an exception message may carry a whole input


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "…"


def cause_of(exc: BaseException) -> dict:
    """What the job document keeps of an exception beside the reason: its type, the step it
    escaped from (telemetry.stage / Bound.step), and where it was raised."""
    cause = {"error_type": type(exc).__name__, "step": telemetry.step_of(exc)}
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        cause["raised_at"] = f"{Path(last.filename).name}:{last.lineno} in {last.name}"
    return cause


def _fail(ctx: Context, event: CloudEvent, reason: str, *, cause: dict | None = None) -> CloudEvent:
    attrs = event.get_attributes()
    stage = events.STAGE_OF.get(attrs["type"], ctx.function)
    reason = _clip(reason)
    metrics.jobs_total.labels(ctx.function, attrs["tenant"], "failed").inc()
    telemetry.mark_failed(reason)
    ctx.jobs(attrs["tenant"]).fail(attrs["jobid"], stage=stage, function=ctx.function, reason=reason,
                                   **(cause or {}))
    return ctx.emit(events.JOB_FAILED, {"stage": stage, "function": ctx.function, "reason": reason}, event)

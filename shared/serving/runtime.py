"""What every function shares: its context and how a handler is invoked (the process side of
a function, start / stop / alive / ready, is shared/serving/lifecycle.py).

A handler is `handle(event, ctx) -> CloudEvent | None`. `invoke` wraps it the same way for
the HTTP target, the embedded dispatcher and the tests: it checks the incoming event, binds
the log context, and turns a bad source into a failed job with a `dev.udb.job.failed` reply.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from cloudevents.http import CloudEvent

from shared.core import events
from shared.observability import logs, metrics, telemetry
from shared.core.errors import InputError, JobFailed, TransientError, ValidationError, is_transient
from shared.storage.jobs import Jobs, remembered
from shared.core.settings import Settings
from shared.storage.backends import open_store
from shared.storage.store import ObjectStore, TenantStore

if TYPE_CHECKING:  # the helpers a context opens on first use, imported there
    from shared.observability.lineage import Lineage
    from shared.security.auth import Gatekeeper
    from shared.security.links import Links
    from shared.security.secrets import SecretStore

class InProcess(Protocol):
    """Delivers an event to the functions in this process (shared/serving/embedded.Dispatcher)."""

    def publish(self, event: CloudEvent) -> list[CloudEvent]: ...

    def close(self) -> None: ...


Handler = Callable[[CloudEvent, "Context"], "CloudEvent | None"]
# The event the current handler is working on (its routing flags decide lineage at `loaded`).
incoming_event: contextvars.ContextVar = contextvars.ContextVar("incoming_event", default=None)


class JobEvents(Protocol):
    """Where job-state changes go: the `udb.job-events` Kafka topic, or a local file."""

    def publish(self, doc: dict) -> None: ...
    def close(self) -> None: ...


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


@dataclass(eq=False)
class Context:
    """What a handler works with: built once by `start` (a function's Lifecycle calls it),
    closed by `close`. The helpers only some handlers need (secrets, lineage, the gatekeeper,
    signed links, an in-process dispatcher) are opened on first use, once per context."""

    function: str
    settings: Settings
    store: ObjectStore
    job_events: JobEvents | None = None
    log: logging.Logger = field(default_factory=lambda: logs.get("runtime"))
    # Embedded `udb run` only: called with each report item as the reports function lands it.
    report_landed: Callable[[dict], None] | None = None
    # Work a handler runs in this process where there is no broker (an OAuth callback resuming a
    # job): made by the caller that needs one (shared/sources/oauth/waiting.py), which serving cannot
    # import; a caller may set its own, which stays the caller's to close.
    dispatcher: InProcess | None = None
    _opened: list = field(default_factory=list, init=False, repr=False)  # closed by close_helpers

    @cached_property
    def secrets(self) -> SecretStore:
        """The secret store (most handlers never need it; the kubernetes backend reads the
        pod's service-account files, which only the functions holding secrets mount)."""
        from shared.security.secrets import open_secrets
        return open_secrets(self.settings)

    @cached_property
    def lineage(self) -> Lineage:
        """The OpenLineage emitter of these settings (shared.observability.lineage)."""
        from shared.observability.lineage import Lineage
        return Lineage(self.settings)

    @cached_property
    def gatekeeper(self) -> Gatekeeper:
        """Authentication, authorization, rate and body limits of this context's process."""
        from shared.security.auth import Gatekeeper
        return Gatekeeper(self.settings, self.store)

    @cached_property
    def links(self) -> Links:
        """Signs and verifies this context's report links."""
        from shared.security.links import Links
        return Links(self.settings, self.store)

    def opened(self, helper):
        """Keep `helper` (anything with close()) to be closed with this context's helpers."""
        self._opened.append(helper)
        return helper

    def sibling(self, function: str) -> "Context":
        """A context of another function over the same store and job events (embedded mode runs
        every function in one process), with its own log, gatekeeper, links and secrets."""
        return Context(function=function, settings=self.settings, store=self.store,
                       job_events=self.job_events, log=logs.get(function))

    def after_fork(self) -> None:
        """In a process forked from the one that opened this context (gunicorn's worker): the
        job-events producer's event-loop thread did not survive the fork, so it is made anew; the
        store's pooled connections are the parent's, so they are dropped (its clients reconnect
        on first use: a second boto3 client costs about half a second of a cold start); helpers
        made on first use are dropped, to be made again in this process."""
        from shared.serving.jobevents import KafkaJobEvents
        if isinstance(self.job_events, KafkaJobEvents):  # not closed: that would wait on the dead loop
            self.job_events = KafkaJobEvents(self.job_events.bootstrap, self.job_events.topic,
                                             self.job_events.timeout)
        self.store.close()
        for name in ("secrets", "lineage", "gatekeeper", "links", "dispatcher"):
            self.__dict__.pop(name, None)
        self._opened = []

    def close_helpers(self) -> None:
        """Close what this context opened on first use (a secret store's HTTP client, an
        in-process dispatcher), not the store and job events a sibling shares."""
        secrets = self.__dict__.get("secrets")
        opened, self._opened = [*self._opened, *([secrets] if secrets is not None else [])], []
        self._close_all(opened)

    def close(self) -> None:
        """Release everything this context holds: its helpers, the job-events producer (after
        flushing), the store's connection pools."""
        self.close_helpers()
        self._close_all([self.job_events, self.store])

    def _close_all(self, resources: list) -> None:
        for resource in resources:
            close = getattr(resource, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # one resource failing to close must not keep the others open
                self.log.warning("closing %s failed: %s", type(resource).__name__, exc)

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


def start(function: str, settings: Settings) -> Context:
    """Open a function's context: logging and tracing set up, the object store and the
    job-events producer opened (Kafka connects on first use). A function process does this
    through its Lifecycle (shared/serving/lifecycle.py), which also validates, stops and probes."""
    logs.setup(settings.log_level)
    telemetry.setup(settings, function)
    store = open_store(settings)
    job_events: JobEvents
    if settings.kafka_bootstrap:
        from shared.serving.jobevents import KafkaJobEvents  # aiokafka only where it is used
        job_events = KafkaJobEvents(settings.kafka_bootstrap, settings.job_events_topic)
    else:
        job_events = LocalJobEvents(Path(settings.home) / "job-events.jsonl")
    return Context(function=function, settings=settings, store=store, job_events=job_events,
                   log=logs.get(function))


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
        # The job document as this invocation last read or wrote it (jobs.remembered): its
        # state changes start from that version instead of reading the document again.
        with remembered():
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

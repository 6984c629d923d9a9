"""The HTTP side of a function: a functions-framework `@http` target around `handle`.

Not `@cloud_event`: that decorator always answers `200 OK` with a non-event body, which a
Knative Kafka Broker counts as a failed delivery. Here a reply event goes back in binary mode
with 200, no reply is 202 with an empty body, bad input is 400 with a JSON body naming every
problem, a dependency outage is 503 so the broker retries, and a deterministic failure (its
job already failed with the cause) is 422, which the broker does not retry.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable

from cloudevents.http import from_http, to_binary

from shared.security import auth, links
from shared.storage import duck
from shared.observability import metrics
from shared.serving import openapi, orphans, runtime
from shared.core.errors import InputError, JobFailed, JobNotAccepted, NotFound, TransientError, ValidationError
from shared.core.settings import Settings

Route = Callable[["object", runtime.Context], "tuple"]


def json_response(body, status: int = 200, headers: dict | None = None):
    return (json.dumps(body, indent=2, default=str), status,
            {"Content-Type": "application/json", **(headers or {})})


JOB_RETRY_AFTER = 5  # seconds a client waits before starting again a job the broker did not take

BUILTIN_PATHS = ("/healthz", "/readyz", "/startupz", "/metrics", *openapi.PATHS)  # GET only


def _json_framework_errors() -> None:
    """Answer in JSON what the web framework answers itself (a URL its router cannot match, e.g.
    one with an encoded newline): built in main.py, inside functions-framework's app context."""
    import flask
    from werkzeug.exceptions import HTTPException

    if flask.has_app_context():
        flask.current_app.register_error_handler(
            HTTPException, lambda e: json_response({"error": f"{e.code} {e.name}"}, e.code or 500))


class FunctionApp:
    """One function: its context (built once), its event handler and its extra routes."""

    def __init__(self, function: str, handle=None, routes: list[tuple[str, str, Route]] | None = None,
                 checks: dict[str, Callable[[runtime.Context], None]] | None = None,
                 settings: Settings | None = None):
        self.function = function
        # Built once by the entry point (functions/*/main.py); or a context is given with use().
        self.settings = settings
        self.handle = handle
        self.routes = routes or []  # (method, path prefix, fn(request, ctx))
        self.checks = checks or {}
        self._ctx = None
        self._lock = threading.Lock()
        # /readyz answers from the last dependency report (Knative's queue-proxy probes every
        # 50 ms with a 100 ms timeout: no store HEAD or Kafka metadata call per probe); a stale
        # report is refreshed by one background thread while probes keep the last answer.
        self._ready_report: dict | None = None
        self._ready_at = 0.0
        self._ready_refreshing = threading.Lock()
        _json_framework_errors()
        self._guard_bodies()
        orphans.die_with_parent()  # a killed server master takes its worker along

    def _guard_bodies(self) -> None:
        """Put shared/security/bodyguard.py ahead of functions-framework's Flask app (main.py is imported
        inside its app context), so size, credentials and pace are checked before any body is read."""
        import flask
        from shared.security.bodyguard import BodyGuard

        if flask.has_app_context() and not isinstance(flask.current_app.wsgi_app, BodyGuard):
            flask.current_app.wsgi_app = BodyGuard(flask.current_app.wsgi_app,
                                                   lambda: auth.Gatekeeper.for_context(self.ctx))

    @property
    def ctx(self) -> runtime.Context:
        with self._lock:
            if self._ctx is None:
                if self.settings is None:
                    raise RuntimeError(f"{self.function}: no settings to start with: pass "
                                       f"FunctionApp(settings=...) or use(ctx)")
                self._ctx = runtime.start(self.function, self.settings)
            return self._ctx

    def use(self, ctx: runtime.Context) -> "FunctionApp":
        self._ctx = ctx
        return self

    def strict_startup(self) -> bool:
        settings = self.settings if self.settings is not None else self.ctx.settings
        return settings.strict_startup

    def startup_check(self) -> None:
        """With UDB_STRICT_STARTUP=1, refuse to start while a required dependency is down, so
        the pod never serves traffic (called at import, before the server forks)."""
        report = self.dependency_report()
        down = {k: v for k, v in report.items() if v != "up"}
        if self._ctx is not None and self._ctx.job_events is not None:
            self._ctx.job_events.close()
        self._ctx = None  # the serving process builds its own context after the fork
        self._ready_report = None
        if down:
            for name, reason in down.items():
                print(f"udb-{self.function}: required dependency {name} is {reason}", file=sys.stderr)
            raise SystemExit(1)

    def cached_report(self) -> dict:
        """The dependency report for /readyz: at most UDB_READY_CACHE_SECONDS old when fresh;
        when stale, the last one while a single background thread refreshes it (the first probe,
        with no report yet, waits for one)."""
        if self._ready_report is None:
            self.dependency_report()
            return self._ready_report
        max_age = self.ctx.settings.ready_cache_seconds
        if time.monotonic() - self._ready_at > max_age and self._ready_refreshing.acquire(blocking=False):
            def refresh():
                try:
                    self.dependency_report()
                finally:
                    self._ready_refreshing.release()
            threading.Thread(target=refresh, name="udb-readyz-refresh", daemon=True).start()
        return self._ready_report

    def dependency_report(self) -> dict:
        ctx = self.ctx
        report = {}
        checks = {"object_store": lambda c: c.store.ping(), **self.checks}
        if hasattr(ctx.job_events, "ping"):
            checks["kafka"] = lambda c: c.job_events.ping()
        # ducklake only where the warehouse is read or written: the other images do not ship it.
        checks["duckdb_extensions"] = lambda c: [duck.extension_path(n) for n in duck.EXTENSION_PACKAGES
                                                 if n != "ducklake" or c.function in duck.LAKE_FUNCTIONS]
        for name, check in checks.items():
            try:
                check(ctx)
                report[name] = "up"
                metrics.dependency_up.labels(name).set(1)
            except Exception as exc:  # any failure means "down", with the reason
                report[name] = f"down: {exc}"
                metrics.dependency_up.labels(name).set(0)
        self._ready_report, self._ready_at = report, time.monotonic()
        return report

    def __call__(self, request):
        started = time.perf_counter()
        route, (body, status, headers) = self._dispatch(request)
        metrics.http_requests.labels(self.function, route, str(status)).inc()
        self.ctx.log.debug("http %s %s -> %s in %.1f ms", request.method, links.redact_path(request.path), status,
                           (time.perf_counter() - started) * 1000)
        return body, status, headers

    def _dispatch(self, request):
        path = request.path
        if path in BUILTIN_PATHS and request.method not in ("GET", "HEAD"):
            return "unknown", json_response({"error": f"{request.method} is not allowed on {path}; allowed: GET"},
                                            405, {"Allow": "GET"})
        if path == "/healthz":
            return "healthz", ("ok", 200, {"Content-Type": "text/plain"})
        if path in ("/readyz", "/startupz"):
            # /startupz (the startupProbe, a few calls per pod) checks afresh; /readyz is cached.
            report = self.dependency_report() if path == "/startupz" else self.cached_report()
            ok = all(v == "up" for v in report.values())
            return path[1:], json_response({"function": self.function, "ready": ok, "dependencies": report},
                                           200 if ok else 503)
        if path == "/metrics":  # its labels name every tenant: the metrics or broker token (auth.METRICS)
            return "metrics", self._guard(lambda: self._admit(request, lambda: (
                metrics.exposition(), 200, {"Content-Type": "text/plain; version=0.0.4"})))
        if path in openapi.PATHS and request.method == "GET":
            return "openapi", self._guard(lambda: openapi.response(self.function, path))
        for method, prefix, fn in self.routes:
            if request.method == method and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
                return prefix, self._guard(lambda: self._admit(request, lambda: fn(request, self.ctx)))
        if path == "/" and request.method == "POST" and self.handle is not None:
            return "event", self._guard(lambda: self._admit(request, lambda: self._event(request)))
        allowed = sorted({m for m, prefix, _ in self.routes
                          if path == prefix or path.startswith(prefix.rstrip("/") + "/")}
                         | ({"POST"} if path == "/" and self.handle is not None else set()))
        if allowed:
            return "unknown", json_response({"error": f"{request.method} is not allowed on {path}; "
                                                      f"allowed: {', '.join(allowed)}"}, 405,
                                            {"Allow": ", ".join(allowed)})
        return "unknown", json_response({"error": f"no route for {request.method} {path}"}, 404)

    def _event(self, request):
        try:
            event = from_http(dict(request.headers), request.get_data())
        except Exception as exc:  # the SDK raises several types for malformed input
            return json_response({"error": "malformed CloudEvent", "problems": {"event": str(exc)}}, 400)
        auth.Gatekeeper.for_context(self.ctx).check_event(auth.principal_of(request), event.get_attributes())
        reply = runtime.invoke(self.handle, event, self.ctx)
        if reply is None:
            return "", 202, {}
        headers, body = to_binary(reply)
        return body, 200, headers

    def _admit(self, request, then):
        """Authenticate, authorize (auth.ROUTE_ROLES), rate-limit and size-check, then run `then`."""
        auth.Gatekeeper.for_context(self.ctx).admit(request)
        return then()

    def _guard(self, fn):
        try:
            return fn()
        except auth.HTTP_ERRORS as exc:  # 401, 403, 413, 429 with their headers
            return json_response(*auth.http_error(exc))
        except ValidationError as exc:
            return json_response(exc.to_dict(), 400)
        except NotFound as exc:
            return json_response({"error": str(exc)}, 404)
        except InputError as exc:
            return json_response({"error": str(exc)}, 400)
        except JobNotAccepted as exc:
            return json_response({"jobId": exc.job_id, "state": "failed", "error": str(exc)}, 503,
                                 {"Retry-After": str(JOB_RETRY_AFTER)})
        except TransientError as exc:
            # The detail (an internal endpoint, a bucket) goes to the log, never to the caller.
            self.ctx.log.warning("dependency unavailable: %s", exc)
            return json_response({"error": "a dependency of UDB is unavailable; retry later"}, 503,
                                 {"Retry-After": "1"})
        except JobFailed as exc:
            # Deterministic: the job is already failed with its cause; 422 is not retried.
            return json_response({"error": exc.reason, **exc.cause}, 422)
        except Exception as exc:
            self.ctx.log.exception("unhandled error")
            return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

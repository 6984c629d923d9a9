"""The HTTP side of a function: a functions-framework `@http` target around `handle`.

Not `@cloud_event`: that decorator always answers `200 OK` with a non-event body, which a
Knative Kafka Broker counts as a failed delivery. Here a reply event goes back in binary mode
with 200, no reply is 202 with an empty body, bad input is 400 with a JSON body naming every
problem, a dependency outage is 503 so the broker retries, and a deterministic failure (its
job already failed with the cause) is 422, which the broker does not retry.
"""
from __future__ import annotations

import functools
import json
import time
from typing import Callable, Sequence

from cloudevents.http import from_http, to_binary

from shared.core.settings import Settings
from shared.security import auth, links
from shared.observability import logs, metrics
from shared.serving import openapi, orphans, runtime
from shared.serving.lifecycle import Check, Lifecycle, report_ok
from shared.core.errors import InputError, JobFailed, JobNotAccepted, NotFound, TransientError, ValidationError

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
    """One function over HTTP: its lifecycle (shared/serving/lifecycle.py), its event handler
    and its extra routes. main.py builds it and starts it with `serve` before serving."""

    def __init__(self, function: str, handle=None, routes: Sequence[tuple[str, str, Route]] | None = None,
                 checks: dict[str, Check] | None = None, *, lifecycle: Lifecycle | None = None,
                 prepare: Callable[[runtime.Context], None] | None = None):
        self.function = function
        self.handle = handle
        self.routes = list(routes or [])  # (method, path prefix, fn(request, ctx))
        self.lifecycle = lifecycle or Lifecycle(function, checks=checks, prepare=prepare)
        self.log = logs.get(function)
        _json_framework_errors()
        self._guard_bodies()
        orphans.die_with_parent()  # a killed server master takes its worker along

    def _guard_bodies(self) -> None:
        """Put shared/security/bodyguard.py ahead of functions-framework's Flask app (main.py is imported
        inside its app context), so size, credentials and pace are checked before any body is read."""
        import flask
        from shared.security.bodyguard import BodyGuard

        if flask.has_app_context() and not isinstance(flask.current_app.wsgi_app, BodyGuard):
            # Flask's documented way to wrap its WSGI app in middleware; mypy sees a method.
            flask.current_app.wsgi_app = BodyGuard(  # type: ignore[method-assign]
                flask.current_app.wsgi_app, self._gate)

    def _gate(self) -> auth.Gatekeeper:
        if self.lifecycle.alive():
            return self.ctx.gatekeeper
        # Not serving (a worker that failed to start): the probes still get their 503 answers.
        return auth.Gatekeeper(self.lifecycle.settings or Settings())

    def serve(self, settings: Callable[[], Settings]) -> "FunctionApp":
        """Start the function for this process (main.py, at import): `settings` is the entry
        point's reader (Settings.from_env); bad configuration exits here with status 1."""
        self.lifecycle.start_process(settings)
        return self

    @property
    def ctx(self) -> runtime.Context:
        return self.lifecycle.ctx

    def use(self, ctx: runtime.Context) -> "FunctionApp":
        """Serve a context started elsewhere (tests that share it with the app)."""
        self.lifecycle.adopt(ctx)
        return self

    def __call__(self, request):
        started = time.perf_counter()
        route, (body, status, headers) = self._dispatch(request)
        metrics.http_requests.labels(self.function, route, str(status)).inc()
        self.log.debug("http %s %s -> %s in %.1f ms", request.method, links.redact_path(request.path), status,
                       (time.perf_counter() - started) * 1000)
        return body, status, headers

    def _dispatch(self, request):
        path = request.path
        if path in BUILTIN_PATHS and request.method not in ("GET", "HEAD"):
            return "unknown", json_response({"error": f"{request.method} is not allowed on {path}; allowed: GET"},
                                            405, {"Allow": "GET"})
        if path == "/healthz":
            if not self.lifecycle.alive():
                return "healthz", ("stopped", 503, {"Content-Type": "text/plain"})
            return "healthz", ("ok", 200, {"Content-Type": "text/plain"})
        if path in ("/readyz", "/startupz"):
            # /startupz (the startupProbe, a few calls per pod) checks afresh; /readyz is cached.
            report = self.lifecycle.ready(fresh=path == "/startupz")
            ok = report_ok(report)
            return path[1:], json_response({"function": self.function, "ready": ok, "dependencies": report},
                                           200 if ok else 503)
        if not self.lifecycle.alive():  # stopping (after SIGTERM) or its worker failed to start
            return "unknown", json_response({"error": f"udb-{self.function} is not serving"}, 503,
                                            {"Retry-After": "1"})
        if path == "/metrics":  # its labels name every tenant: the metrics or broker token (auth.METRICS)
            return "metrics", self._guard(lambda: self._admit(request, lambda: (
                metrics.exposition(), 200, {"Content-Type": "text/plain; version=0.0.4"})))
        if path in openapi.PATHS and request.method == "GET":
            return "openapi", self._guard(lambda: openapi.response(self.function, path))
        for method, prefix, fn in self.routes:
            if request.method == method and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
                return prefix, self._guard(functools.partial(self._admit, request, functools.partial(fn, request, self.ctx)))
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
        self.ctx.gatekeeper.check_event(auth.principal_of(request), event.get_attributes())
        reply = runtime.invoke(self.handle, event, self.ctx)
        if reply is None:
            return "", 202, {}
        headers, body = to_binary(reply)
        return body, 200, headers

    def _admit(self, request, then):
        """Authenticate, authorize (auth.ROUTE_ROLES), rate-limit and size-check, then run `then`."""
        self.ctx.gatekeeper.admit(request)
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
            self.log.warning("dependency unavailable: %s", exc)
            return json_response({"error": "a dependency of UDB is unavailable; retry later"}, 503,
                                 {"Retry-After": "1"})
        except JobFailed as exc:
            # Deterministic: the job is already failed with its cause; 422 is not retried.
            return json_response({"error": exc.reason, **exc.cause}, 422)
        except Exception as exc:
            self.log.exception("unhandled error")
            return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

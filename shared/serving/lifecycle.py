"""One function's lifecycle, in the shape of Knative's Python function template.

Knative's `func` templates (the middleware in knative-extensions/func-python) give a function
`start(cfg)`, `stop()`, `alive()` and `ready()` beside `handle()`. A UDB function has the same:

- `start(settings)` checks the configuration and opens what the function needs (the object
  store, the job-events producer) before any traffic is served; bad configuration raises
  StartupError naming every problem, and so does a required dependency being down when
  UDB_STRICT_STARTUP is on. The entry point (functions/<f>/main.py) turns that into one line
  per problem on stderr and exit status 1, so the pod never serves.
- `prepare(ctx)`, when the function has one, runs right after the context opens: work a
  function would otherwise do on its first request (the connector registry's imports), or ask
  for ahead of each request (DuckDB spares with the lake's extensions, shared/storage/duck.py).
- `stop()` closes what start opened (producer, store pools, the secret store's client) and runs
  the function's own stop hooks (the reports function's warm renderer children). The entry point
  wires it to process exit.
- `alive()` is a flag: no I/O (/healthz).
- `ready()` is the dependency report (/readyz, /startupz): cached, so probes never reach the
  dependencies themselves, and every check goes over the long-lived clients start opened.

functions-framework serves through gunicorn, which imports main.py in its master and forks the
worker that serves. Right after the fork the worker takes over the master's context, minus what
a fork breaks (Context.after_fork: a new job-events producer, whose event-loop thread did not
survive, and the store's pooled connections dropped), and the master, which only supervises,
closes its own. Opening a second context in the worker instead would cost a cold start about
half a second more (two boto3 clients).
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import Callable, Iterable

from shared.core.errors import StartupError, ValidationError
from shared.core.settings import Settings
from shared.observability import metrics
from shared.serving import runtime
from shared.storage import duck

Check = Callable[[runtime.Context], object]  # raises when its dependency is down


def config_problems(settings: Settings) -> dict[str, str]:
    """Every problem of `settings` a function would otherwise meet on first use, by variable."""
    from shared.security.secrets import key_problem
    problems = settings.problems()
    if settings.secrets_backend == "local" and (problem := key_problem(settings.secret_key)):
        problems["UDB_SECRET_KEY"] = problem
    return problems


def report_ok(report: dict[str, str]) -> bool:
    return all(state == "up" for state in report.values())


class Lifecycle:
    """start / stop / alive / ready of one function in one process."""

    def __init__(self, function: str, *, checks: dict[str, Check] | None = None,
                 on_stop: Iterable[Callable[[], None]] = (), prepare: Callable[[runtime.Context], None] | None = None):
        self.function = function
        self.checks = dict(checks or {})  # beside the object store, Kafka and the DuckDB extensions
        self.on_stop = list(on_stop)
        # What the function does once at start rather than on its first request (imports, the
        # DuckDB spares it keeps): run after the context opens, in the process that starts (a
        # gunicorn master too, so nothing it does may open threads or instances: spares are
        # opened after the fork, by the worker).
        self.prepare = prepare
        self.settings: Settings | None = None
        self._ctx: runtime.Context | None = None
        self._owned = False  # a context adopted from a caller (tests) is the caller's to close
        self._pid = 0
        self._lock = threading.Lock()
        self._report: dict[str, str] | None = None
        self._report_at = 0.0
        self._refreshing = threading.Lock()

    # ------------------------------------------------------------------ start / stop

    def start(self, settings: Settings) -> runtime.Context:
        """Check the configuration, then open the function's context. Raises StartupError with
        every configuration problem, or with every required dependency that is down when
        `settings.strict_startup` is on; nothing stays open after it raises."""
        problems = config_problems(settings)
        if problems:
            raise StartupError("invalid configuration",
                               [f"{name}: {problem}" for name, problem in sorted(problems.items())])
        with self._lock:
            if self._ctx is not None:
                return self._ctx
            self._open(settings)
        if settings.strict_startup:
            down = {name: state for name, state in self.ready(fresh=True).items() if state != "up"}
            if down:
                self.stop()
                raise StartupError("required dependency down",
                                   [f"required dependency {name} is {state}" for name, state in down.items()])
        return self.ctx

    def _open(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx, self._owned, self._pid = runtime.start(self.function, settings), True, os.getpid()
        self._report = None
        if self.prepare is not None:
            self.prepare(self._ctx)
        self._ctx.log.info("started", extra={"fields": {"pid": self._pid}})

    def adopt(self, ctx: runtime.Context) -> None:
        """Serve a context started elsewhere (a test sharing its context with the app); stop()
        leaves it open for its owner."""
        with self._lock:
            self._ctx, self._owned, self.settings, self._report = ctx, False, ctx.settings, None

    def stop(self) -> None:
        """Close what start opened and run the stop hooks; nothing when not running."""
        with self._lock:
            ctx, owned, self._ctx, self._report = self._ctx, self._owned, None, None
        if ctx is None:
            return
        if owned:
            ctx.close()
        if self.prepare is not None:
            duck.spares.close()
        for hook in self.on_stop:
            try:
                hook()
            except Exception as exc:  # a failing hook must not keep the others from running
                ctx.log.warning("stop hook %s failed: %s", getattr(hook, "__qualname__", hook), exc)
        ctx.log.info("stopped", extra={"fields": {"pid": os.getpid(), "closed": owned, "hooks": len(self.on_stop)}})

    def alive(self) -> bool:
        """Started and not stopped: a flag, no I/O (Knative probes /healthz often)."""
        return self._ctx is not None

    @property
    def ctx(self) -> runtime.Context:
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError(f"udb-{self.function} is not started (or was stopped): start(settings) first")
        return ctx

    # ------------------------------------------------------------------ the entry point

    def start_process(self, settings: Callable[[], Settings]) -> None:
        """The entry point's start, at import of main.py, before the server binds its port:
        the settings are read and the function started; a problem prints one line each on
        stderr and exits with status 1. Then stop() runs at process exit (gunicorn's worker
        and master exit through SystemExit on SIGTERM, so atexit runs), and a worker forked
        from this process starts a context of its own."""
        try:
            self.start(settings())
        except StartupError as exc:
            for line in exc.lines:
                print(f"udb-{self.function}: {line}", file=sys.stderr)
            raise SystemExit(1) from None
        except ValidationError as exc:  # Settings.from_env: a value of the wrong type
            for name, problem in sorted(exc.problems.items()):
                print(f"udb-{self.function}: invalid configuration: {name}: {problem}", file=sys.stderr)
            raise SystemExit(1) from None
        atexit.register(self.stop)
        os.register_at_fork(after_in_child=self._forked_child, after_in_parent=self._forked_parent)

    def _server_fork(self, started_in: int) -> bool:
        # Only gunicorn's forks of the process that started: other forks (a test's
        # multiprocessing pool, say) leave the lifecycle alone.
        return "gunicorn.arbiter" in sys.modules and self.settings is not None and self._pid == started_in

    def _forked_child(self) -> None:
        if not self._server_fork(os.getppid()):
            return
        # Locks another thread held at the fork would stay held in this copy: new ones.
        self._lock, self._refreshing = threading.Lock(), threading.Lock()
        self._report = None
        assert self.settings is not None
        try:
            if self._ctx is not None:
                # The master's context, made ready for this process (Context.after_fork)
                self._ctx.after_fork()
                self._pid = os.getpid()
                self._ctx.log.info("started", extra={"fields": {"pid": self._pid, "forked_from": os.getppid()}})
            else:  # a worker forked again after the master closed its own (gunicorn respawned it)
                self._open(self.settings)
            duck.spares.fill()  # the DuckDB spares `prepare` asked for: opened here, in the worker
        except Exception as exc:  # alive() false: /healthz answers 503 and the pod is restarted
            self._ctx = None
            print(f"udb-{self.function}: cannot start in the server's worker: {exc}", file=sys.stderr)

    def _forked_parent(self) -> None:
        # gunicorn's master only supervises the worker it just forked: its own context goes.
        if self._server_fork(os.getpid()) and self._ctx is not None and self._owned:
            with self._lock:
                ctx, self._ctx = self._ctx, None
            ctx.close()

    # ------------------------------------------------------------------ readiness

    def ready(self, fresh: bool = False) -> dict[str, str]:
        """The dependency report, {name: "up" | "down: <reason>"}. `fresh` checks now (/startupz,
        a few calls per pod; strict start). Otherwise (/readyz: Knative's queue-proxy probes
        every 50 ms with a 100 ms timeout) the last report while younger than
        UDB_READY_CACHE_SECONDS; past that still the last one while one background thread
        refreshes it. The first call, with no report yet, waits for one."""
        ctx, report = self._ctx, self._report
        if ctx is None:
            return self._not_running()
        if fresh or report is None:
            return self._check()
        if time.monotonic() - self._report_at > ctx.settings.ready_cache_seconds \
                and self._refreshing.acquire(blocking=False):
            def refresh() -> None:
                try:
                    self._check()
                finally:
                    self._refreshing.release()
            threading.Thread(target=refresh, name="udb-readyz-refresh", daemon=True).start()
        return report

    def _not_running(self) -> dict[str, str]:
        return {"lifecycle": "down: not started" if self.settings is None else "down: stopped"}

    def _check(self) -> dict[str, str]:
        ctx = self._ctx
        if ctx is None:  # stopped while a refresh was under way
            return self._not_running()
        checks: dict[str, Check] = {"object_store": lambda c: c.store.ping(), **self.checks}
        if hasattr(ctx.job_events, "ping"):
            checks["kafka"] = lambda c: c.job_events.ping()  # type: ignore[union-attr]
        # The extensions this function loads: its image ships no others.
        checks["duckdb_extensions"] = lambda c: [duck.extension_path(n) for n in duck.function_extensions(c.function)]
        report = {}
        for name, check in checks.items():
            try:
                check(ctx)
                report[name] = "up"
                metrics.dependency_up.labels(name).set(1)
            except Exception as exc:  # any failure means "down", with the reason
                report[name] = f"down: {exc}"
                metrics.dependency_up.labels(name).set(0)
        self._report, self._report_at = report, time.monotonic()
        return report

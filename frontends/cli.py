"""The `udb` command: run a hint through the pipeline in-process, read job status and artifacts."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from shared.security import auth, links
from shared.core import events
from shared.core.errors import UDBError
from shared.storage.jobs import TERMINAL
from shared.core.settings import Settings
from shared.core.tenancy import DEFAULT_TENANT, new_job_id, validate_tenant

if TYPE_CHECKING:
    from shared.serving.runtime import Context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="udb", description="UDB: a hint in, analysed data out.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="discover, sync, load and analyse HINT in this process")
    run.add_argument("hint", help="a file or folder path (CSV, TSV, Parquet, JSON, NDJSON, XLSX)")
    run.add_argument("--tenant", default=DEFAULT_TENANT)
    run.add_argument("--no-analyze", action="store_true", help="stop once the warehouse is loaded")
    run.add_argument("--no-reports", action="store_true", help="stop after the core analysis: no ydata-profiling, "
                     "Evidently or PNG charts (the reports function)")
    for name, text in (("status", "print a job's status document"), ("artifacts", "list a job's artifacts")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job")
        p.add_argument("--tenant", default=DEFAULT_TENANT)
    schedule = sub.add_parser("schedule", help="per-source sync schedules (embedded mode)")
    ssub = schedule.add_subparsers(dest="schedule_command", required=True)
    srun = ssub.add_parser("run", help="stay in the foreground and fire due scheduled syncs each minute")
    srun.add_argument("--ticks", type=int, default=0, help="stop after this many ticks (0: run until stopped)")
    sset = ssub.add_parser("set", help="set a source's schedule")
    sset.add_argument("source_id")
    sset.add_argument("--cron", required=True, help='a 5-field cron expression, e.g. "*/15 * * * *"')
    sset.add_argument("--timezone", default="UTC", help="an IANA time zone (default UTC)")
    for name in ("show", "delete"):
        ssub.add_parser(name, help=f"{name} a source's schedule").add_argument("source_id")
    for p in (srun, sset, *ssub.choices.values()):
        if not any(a.dest == "tenant" for a in p._actions):
            p.add_argument("--tenant", default=DEFAULT_TENANT)
    auth.add_cli(sub)  # udb keys create|list|revoke, udb token: the CLI acts as a local admin
    mcp = sub.add_parser("mcp", help="serve UDB's tools to AI agents over MCP (docs/mcp.md)")
    mcp.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="http: the address to listen on")
    mcp.add_argument("--port", type=int, default=8765, help="http: the port (endpoint /mcp)")
    mcp.add_argument("--stack", default="", metavar="URL",
                     help="drive the running stack through this broker ingress instead of running embedded")
    mcp.add_argument("--tenant", default=DEFAULT_TENANT, help="with authentication off: the tenant served")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if "UDB_LOG_LEVEL" not in os.environ:  # a command line stays quiet but for its own output
            settings = replace(settings, log_level="ERROR")
        if args.command in ("keys", "token"):
            return auth.run_cli(args, settings)
        validate_tenant(args.tenant)
        if args.command == "run":
            return run_hint(settings, args.hint, args.tenant, analyze=not args.no_analyze,
                            reports=not args.no_reports)
        if args.command == "mcp":
            from frontends import mcp_server
            return mcp_server.serve(settings, transport=args.transport, host=args.host, port=args.port,
                                    stack_url=args.stack, tenant=args.tenant)
        if args.command == "schedule":
            return run_schedule(settings, args)
        if args.command == "status":
            return show_status(settings, args.tenant, args.job)
        return show_artifacts(settings, args.tenant, args.job)
    except UDBError as exc:
        print(f"udb: error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _context(settings: Settings) -> Iterator[Context]:
    """A context for one command, stopped when it is done."""
    from shared.serving.lifecycle import Lifecycle
    lifecycle = Lifecycle("cli")
    try:
        yield lifecycle.start(settings)
    finally:
        lifecycle.stop()


TOP_FACTS = 5


class Progress:
    """A live line on the terminal (stderr, only when stdout is a TTY): the stage running and
    its seconds, rewritten in place; nothing at all when the output goes to a file or a pipe."""

    def __init__(self, started: float, enabled: bool):
        self.started, self.enabled = started, enabled
        self.label, self._stop = "", None

    def stage(self, label: str) -> None:
        if not self.enabled:
            return
        import threading

        self.label = label
        if self._stop is None:
            self._stop = threading.Event()
            threading.Thread(target=self._tick, daemon=True).start()
        self._draw()

    def _draw(self) -> None:
        print(f"\r\x1b[2K  [{time.perf_counter() - self.started:6.1f}s] {self.label} ...", end="",
              file=sys.stderr, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()

    def clear(self) -> None:
        """Wipe the line before a result line is printed (it is drawn again on the next tick)."""
        if self.enabled and self._stop is not None:
            print("\r\x1b[2K", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self.clear()


def run_hint(settings: Settings, hint: str, tenant: str, *, analyze: bool = True, reports: bool = True) -> int:
    """Run HINT through the pipeline in this process. The core answer (tables, rows, the
    summary's top facts, the report page) is printed as soon as analyze completes the job;
    then each report as the reports function lands it, unless `reports` is off."""
    from shared.serving.embedded import Dispatcher
    from shared.sources import redact

    job_id = new_job_id()
    started = time.perf_counter()
    progress = Progress(started, sys.stdout.isatty())
    state = {"core": None}

    def on_event(event):
        stage = events.STAGE_OF.get(event["type"])
        if stage:
            progress.stage(stage)
        elif event["type"] == events.ANALYSIS_COMPLETED:
            # analyze completed the job: answer now, before any report is rendered.
            progress.clear()
            state["core"] = time.perf_counter() - started
            if reports:
                # One renderer per report engine starts importing now, all at once
                # (functions/reports/bounded.py). Started beside the core analysis instead, at
                # nice 10, they slowed the core answer from 1.6 s to 2.8-3.4 s on 2 cores, and
                # the reports landed no sooner (9.7-10.2 s against 9.8-10.2 s).
                from functions.reports import bounded
                bounded.warm_up()
            _print_core(settings, ctx, tenant, job_id, state["core"], reports)
            if reports:
                progress.stage("reports")

    def on_report(item):
        progress.clear()
        _print_report(settings, ctx, tenant, job_id, item, time.perf_counter() - started)

    with Dispatcher(settings, on_event=on_event, skip=() if reports else ("udb-reports",)) as dispatcher:
        dispatcher.context("reports").report_landed = on_report
        request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autosync": True, "autoanalyze": analyze},
                                    tenant=tenant, job_id=job_id, function="cli")
        ctx = dispatcher.context("cli")
        # The job document shows the hint as discover would: never a password in it.
        ctx.jobs(tenant).create(job_id, hint=redact(hint), traceparent=request["traceparent"])
        print(f"job {job_id} (tenant {tenant})", flush=True)
        try:
            dispatcher.publish(request)
        finally:
            progress.close()
        doc = ctx.jobs(tenant).get(job_id)
        if doc["state"] == "failed":
            print(f"udb: error: {doc['error']['reason']}", file=sys.stderr)
            print(f"job {job_id} failed in {doc['error']['stage']}")
            return 1
        waiting = (doc.get("error") or {}).get("waiting")
        if waiting:
            # A share link the tenant has not authorized yet: the reason says where to sign in (the
            # oauthUrl, or the device code); the callback then resumes this job.
            print(f"job {job_id} {doc['error']['reason']}")  # "waiting for authorization: ..."
            if doc["error"].get("oauthUrl"):
                print(f"oauthUrl {doc['error']['oauthUrl']}")
            return 3
        if state["core"] is None:  # not analysed (--no-analyze): the load is the answer
            for table, info in sorted(doc["tables"].items()):
                print(f"table {table}: {info['rows']:,} rows")
            print(f"{doc['state']} in {time.perf_counter() - started:.1f}s")
            return 0
        if not reports:
            _skip_reports(ctx, tenant, job_id)
            return 0
        summary = doc.get("reports") or {}
        counts = summary.get("counts") or {}
        total = sum(counts.values())
        if summary.get("state") == "ready":
            print(f"reports ready in {time.perf_counter() - started:.1f}s ({counts.get('ready', 0)} of {total})")
        elif summary:
            print(f"reports {summary.get('state')} in {time.perf_counter() - started:.1f}s: "
                  f"{counts.get('ready', 0)} of {total} ready, {counts.get('failed', 0)} failed "
                  f"(reasons on the report page)")
        return 0


def _print_core(settings: Settings, ctx, tenant: str, job_id: str, seconds: float, reports: bool) -> None:
    doc = ctx.jobs(tenant).get(job_id)
    for table, info in sorted(doc["tables"].items()):
        print(f"table {table}: {info['rows']:,} rows")
    store = ctx.tenant_store(tenant)
    try:
        facts = json.loads(store.get(store.artifact_key(job_id, "summary.json")).data).get("facts", [])
    except (UDBError, KeyError, ValueError):
        facts = []
    for fact in facts[:TOP_FACTS]:
        print(f"fact {fact['text']}")
    print(f"report page {_artifact_path(settings, ctx, tenant, store.artifact_key(job_id, 'index.html'))}")
    link = links.report_link(ctx, tenant, job_id)  # None unless UDB_JWT_SECRET is set
    if link:
        print(f"report {link['url']} (signed link, opens in a browser until {link['expires']})")
    pending = (doc.get("reports") or {}).get("counts", {}).get("pending", 0)
    tail = f"; {pending} report(s) rendering" if pending and reports else ""
    print(f"{doc['state']} in {seconds:.1f}s{tail}", flush=True)


def _print_report(settings: Settings, ctx, tenant: str, job_id: str, item: dict, seconds: float) -> None:
    store = ctx.tenant_store(tenant)
    if item["state"] == "ready":
        shown = [n for n in item["artifacts"] if n.endswith((".html", ".png"))]
        paths = [_artifact_path(settings, ctx, tenant, store.artifact_key(job_id, name)) for name in shown]
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files beside the report page"
        print(f"report {item['id']} ready at {seconds:.1f}s: {where}", flush=True)
    else:
        print(f"report {item['id']} {item['state']} at {seconds:.1f}s: {item.get('reason')}", flush=True)


def _skip_reports(ctx, tenant: str, job_id: str) -> None:
    """`--no-reports`: nothing will render them in this process, so say so (the page stops waiting)."""
    from shared.storage import jobindex

    reason = "not rendered: udb run --no-reports"

    def change(index: dict) -> None:
        for item in index.get("reports", []):
            if item["state"] == "pending":
                item.update(state="skipped", reason=reason)

    store = ctx.tenant_store(tenant)
    index = jobindex.update(store, job_id, change)
    ctx.jobs(tenant).set_reports(job_id, jobindex.job_reports(index.get("reports", []), reason=reason))


def run_schedule(settings: Settings, args) -> int:
    """`udb schedule set|show|delete|run`: schedules in the tenant's store; `run` ticks each
    minute (on the minute) in this process, each due sync run through the embedded pipeline."""
    from shared.serving import schedules
    from shared.serving.embedded import Dispatcher

    with Dispatcher(settings) as dispatcher:
        ctx = dispatcher.context("cli")
        if args.schedule_command != "run":
            table = schedules.Schedules(ctx.tenant_store(args.tenant))
            if args.schedule_command == "set":
                doc, _ = table.put(args.source_id, {"cron": args.cron, "timezone": args.timezone})
            elif args.schedule_command == "show":
                doc = table.get(args.source_id)
            else:
                table.delete(args.source_id)
                doc = {"deleted": args.source_id}
            print(json.dumps(doc, indent=2))
            return 0

        def fire(tenant, source_id, slot, autoanalyze=True):
            job_id = new_job_id()
            event = events.make_event(events.SYNC_REQUESTED, {"source_id": source_id, "autoanalyze": autoanalyze},
                                      tenant=tenant, job_id=job_id, function="scheduler",
                                      flags={"autoanalyze": autoanalyze})
            ctx.jobs(tenant).create(job_id, traceparent=event["traceparent"], source_id=source_id,
                                    scheduled_slot=slot.isoformat())
            dispatcher.publish(event)
            state = ctx.jobs(tenant).get(job_id)["state"]
            print(f"{slot.isoformat()} {tenant}/{source_id}: job {job_id} {state}", flush=True)
            return job_id

        ticks = 0
        print("udb schedule run: firing due syncs each minute (Ctrl-C stops)", file=sys.stderr, flush=True)
        try:
            while True:
                schedules.tick(ctx.store, fire, log=ctx.log)
                ticks += 1
                if args.ticks and ticks >= args.ticks:
                    return 0
                time.sleep(60 - time.time() % 60 + 0.05)  # the next whole minute
        except KeyboardInterrupt:
            return 0


def _artifact_path(settings: Settings, ctx, tenant: str, key: str) -> str:
    if settings.store == "local":
        return str(Path(settings.home) / "store" / settings.bucket / "tenants" / tenant / key)
    return f"s3://{settings.bucket}/tenants/{tenant}/{key}"


def _print_artifacts(settings: Settings, ctx, tenant: str, job_id: str) -> None:
    store = ctx.tenant_store(tenant)
    index = json.loads(store.get(store.artifact_key(job_id, "index.json")).data)
    for entry in index["artifacts"] + [{"name": "index.json", "bytes": None}]:
        path = _artifact_path(settings, ctx, tenant, store.artifact_key(job_id, entry["name"]))
        size = f"{entry['bytes']:>10,} B  " if entry["bytes"] is not None else " " * 14
        print(f"artifact {size}{path}")


def show_status(settings: Settings, tenant: str, job_id: str) -> int:
    with _context(settings) as ctx:
        doc = ctx.jobs(tenant).get(job_id)
    print(json.dumps(doc, indent=2))
    return 1 if doc["state"] == "failed" else 0


def show_artifacts(settings: Settings, tenant: str, job_id: str) -> int:
    with _context(settings) as ctx:
        doc = ctx.jobs(tenant).get(job_id)
        if not doc.get("artifacts_index"):
            state = doc["state"]
            print(f"udb: error: job {job_id} has no artifacts (state {state}"
                  + (")" if state not in TERMINAL else f", {doc.get('error') or 'not analysed'})"), file=sys.stderr)
            return 1
        _print_artifacts(settings, ctx, tenant, job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `udb` command: run a hint through the pipeline in-process, read job status and artifacts."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from shared import auth, events
from shared.errors import UDBError
from shared.jobs import TERMINAL
from shared.settings import Settings
from shared.tenancy import DEFAULT_TENANT, new_job_id, validate_tenant



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="udb", description="UDB: a hint in, analysed data out.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="discover, sync, load and analyse HINT in this process")
    run.add_argument("hint", help="a file or folder path (CSV, TSV, Parquet, JSON, NDJSON, XLSX)")
    run.add_argument("--tenant", default=DEFAULT_TENANT)
    run.add_argument("--no-analyze", action="store_true", help="stop once the warehouse is loaded")
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
            return run_hint(settings, args.hint, args.tenant, analyze=not args.no_analyze)
        if args.command == "mcp":
            from shared import mcp_server
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


def _context(settings: Settings):
    from shared import runtime
    return runtime.start("cli", settings)


def run_hint(settings: Settings, hint: str, tenant: str, *, analyze: bool = True) -> int:
    from shared.embedded import Dispatcher
    from shared.sources import redact

    job_id = new_job_id()
    progress = sys.stderr.isatty()
    started = time.perf_counter()

    def on_event(event):
        stage = events.STAGE_OF.get(event["type"])
        if progress and stage:
            print(f"  [{time.perf_counter() - started:6.1f}s] {stage} ...", file=sys.stderr, flush=True)

    dispatcher = Dispatcher(settings, on_event=on_event)
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autosync": True, "autoanalyze": analyze},
                                tenant=tenant, job_id=job_id, function="cli")
    ctx = dispatcher.context("cli")
    # The job document shows the hint as discover would: never a password in it.
    ctx.jobs(tenant).create(job_id, hint=redact(hint), traceparent=request["traceparent"])
    print(f"job {job_id} (tenant {tenant})")
    dispatcher.publish(request)
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
    for table, info in sorted(doc["tables"].items()):
        print(f"table {table}: {info['rows']:,} rows")
    if doc.get("artifacts_index"):
        _print_artifacts(settings, ctx, tenant, job_id)
    print(f"{doc['state']} in {time.perf_counter() - started:.1f}s")
    return 0


def run_schedule(settings: Settings, args) -> int:
    """`udb schedule set|show|delete|run`: schedules in the tenant's store; `run` ticks each
    minute (on the minute) in this process, each due sync run through the embedded pipeline."""
    from shared import schedules
    from shared.embedded import Dispatcher

    dispatcher = Dispatcher(settings)
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
    doc = _context(settings).jobs(tenant).get(job_id)
    print(json.dumps(doc, indent=2))
    return 1 if doc["state"] == "failed" else 0


def show_artifacts(settings: Settings, tenant: str, job_id: str) -> int:
    ctx = _context(settings)
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

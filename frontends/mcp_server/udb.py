"""What each tool does, given its caller (class UDB); tools.py and resources.py expose it
through MCP."""
from __future__ import annotations

import base64
import threading
from collections import OrderedDict

from shared.core import events
from shared.core.errors import InputError
from shared.core.settings import Settings
from shared.core.tenancy import DEFAULT_TENANT, new_job_id, validate_artifact_name, validate_job_id
from shared.storage.jobs import TERMINAL

from .access import Access, Caller
from .backends import DEFAULT_WAIT_SECONDS, Embedded, Stack
from .warehouse import Warehouse

MAX_INLINE_BYTES = 1_000_000   # get_artifact: larger artifacts are cut (the resource gives them whole)

REMEMBERED_JOBS = 1000         # hints kept for choose_source, per process
TEXT_TYPES = ("text/", "application/json", "application/javascript", "image/svg+xml")


class UDB:
    """What each tool does, given its caller; `build_server` exposes these through MCP."""

    def __init__(self, settings: Settings, *, stack_url: str = "", tenant: str = DEFAULT_TENANT):
        self.settings = settings
        self.backend = Stack(settings, stack_url) if stack_url else Embedded(settings)
        self.access = Access(settings, self.backend.store, token=settings.mcp_token, tenant=tenant)
        self.warehouse = Warehouse(settings, self.backend.store)
        # choose_source re-discovers a job with the hint and options it was discovered with;
        # they may hold secrets, so they stay in this process's memory, never in a document.
        self._hints: OrderedDict[tuple[str, str], tuple[str, dict, list]] = OrderedDict()
        self._hints_lock = threading.Lock()

    def discover_connect(self, caller: Caller, hint: str, options: dict | None = None) -> dict:
        if not isinstance(hint, str) or not hint.strip():
            raise InputError("hint must be a non-empty string: a path, URL, s3:// key or DSN")
        if options is not None and not isinstance(options, dict):
            raise InputError(f"options must be an object, found {type(options).__name__}")
        hint, options = hint.strip(), dict(options or {})
        result = self.backend.discover(caller, new_job_id(), hint, options, new=True)
        if result["state"] == "waiting":
            result["next"] = ("the source needs the user's sign-in: show them the oauthUrl (or the device code); "
                              "once they have authorized UDB the job is discovered (status(job)), then sync(job)")
        elif result["state"] != "failed":
            with self._hints_lock:
                self._hints[(caller.tenant, result["jobId"])] = (hint, options, result["candidates"])
                while len(self._hints) > REMEMBERED_JOBS:
                    self._hints.popitem(last=False)
            result["next"] = (f"ambiguous: call choose_source(job, provider) with one of "
                              f"{[c['provider'] for c in result['candidates'][:2]]}" if result["ambiguous"]
                              else "call sync(job) to load the tables")
        return result

    def choose_source(self, caller: Caller, job: str, candidate: str) -> dict:
        validate_job_id(job)
        doc = self.backend.status(caller, job)  # not found for another tenant's job
        with self._hints_lock:
            remembered = self._hints.get((caller.tenant, job))
        if remembered is None:
            raise InputError(f"job {job} was not discovered through this MCP server (or it was restarted): "
                             f"call discover_connect again with options.provider")
        if doc["state"] != "discovered":
            raise InputError(f"job {job} is {doc['state']}: a source can be chosen only right after discovery")
        hint, options, candidates = remembered
        providers = [c["provider"] for c in candidates]
        if candidate not in providers:
            raise InputError(f"{candidate!r} is not a candidate of job {job}; its candidates are {providers}")
        result = self.backend.discover(caller, job, hint, {**options, "provider": candidate}, new=False)
        if result["state"] != "failed":
            result.update({"candidates": candidates, "ambiguous": False, "chosen": candidate,
                           "next": "call sync(job) to load the tables"})
        return result

    def _live_job(self, caller: Caller, job: str) -> dict:
        doc = self.backend.status(caller, validate_job_id(job))
        if doc["state"] in TERMINAL:
            # A finished job ignores further events (at-least-once delivery): say so, not wait.
            raise InputError(f"job {job} is {doc['state']}: it takes no more steps; start a new job with "
                             f"discover_connect")
        return doc

    def sync(self, caller: Caller, job: str, streams: list[str] | None = None,
             wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict:
        doc = self._live_job(caller, job)
        if (doc.get("error") or {}).get("waiting"):
            raise InputError(f"job {job} waits for the user's authorization at the source (the oauthUrl of "
                             f"discover_connect): sync it once status(job) says discovered")
        if not doc.get("source_id"):
            raise InputError(f"job {job} has no discovered source (state {doc['state']}): call discover_connect first")
        data = {"source_id": doc["source_id"], "autoanalyze": False}
        if streams:
            data["streams"] = list(streams)
        return self._summary(self.backend.request(caller, job, events.SYNC_REQUESTED, data, "sync", wait_seconds,
                                                  flags={"autoanalyze": False}))

    def analyze(self, caller: Caller, job: str, kpis: dict | None = None, tables: list[str] | None = None,
                wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict:
        doc = self._live_job(caller, job)
        if not doc.get("tables"):
            raise InputError(f"job {job} has loaded no tables (state {doc['state']}): call sync(job) first")
        if kpis is not None and not isinstance(kpis, dict):
            raise InputError("kpis must be an object {name: {sql, chart: {type, x, y}, title?, description?}}")
        stored = [self.backend.put_kpi(caller, name, definition)["name"] for name, definition in (kpis or {}).items()]
        data = {"tables": list(tables)} if tables else {}
        result = self._summary(self.backend.request(caller, job, events.ANALYZE_REQUESTED, data, "analyze",
                                                    wait_seconds))
        if stored:
            result["kpis_stored"] = stored
        return result

    def _summary(self, doc: dict) -> dict:
        out = {"jobId": doc["job_id"], "state": doc["state"], "tables": doc["tables"],
               "stage_seconds": doc["stage_seconds"]}
        if doc.get("error"):
            out["error"] = doc["error"]
        return out

    def status(self, caller: Caller, job: str) -> dict:
        return self.backend.status(caller, validate_job_id(job))

    def list_tables(self, caller: Caller) -> dict:
        return {"tenant": caller.tenant, "tables": self.warehouse.tables(caller.tenant)}

    def describe_table(self, caller: Caller, name: str) -> dict:
        return self.warehouse.describe(caller.tenant, name)

    def run_kpi(self, caller: Caller, sql: str, max_rows: int = 1000) -> dict:
        return self.warehouse.run_kpi(caller.tenant, sql, max_rows)

    def set_schedule(self, caller: Caller, source: str, cron: str, timezone: str = "UTC") -> dict:
        """The source id itself, or a job whose discovered source it is."""
        if source.startswith("job-"):
            doc = self.backend.status(caller, validate_job_id(source))
            if not doc.get("source_id"):
                raise InputError(f"job {source} has no discovered source (state {doc['state']}): "
                                 f"call discover_connect first")
            source = doc["source_id"]
        return self.backend.put_schedule(caller, source, {"cron": cron, "timezone": timezone})

    def artifact(self, caller: Caller, job: str, name: str = "index.json") -> tuple[bytes, str]:
        return self.backend.artifact(caller, validate_job_id(job), validate_artifact_name(name or "index.json"))

    def get_artifact(self, caller: Caller, job: str, name: str = "index.json", max_bytes: int = MAX_INLINE_BYTES) -> dict:
        data, media_type = self.artifact(caller, job, name)
        if not isinstance(max_bytes, int) or max_bytes < 1:
            raise InputError(f"max_bytes must be a positive integer, found {max_bytes!r}")
        out = {"job": job, "name": name or "index.json", "media_type": media_type, "bytes": len(data),
               "truncated": len(data) > max_bytes}
        if media_type.startswith(TEXT_TYPES):
            out["text"] = data[:max_bytes].decode("utf-8", errors="replace")
        else:
            out["base64"] = base64.b64encode(data[:max_bytes]).decode()
        return out

"""The MCP server: UDB as tools and resources an AI agent can call (docs/mcp.md).

Built on the official `mcp` SDK (2.x: `MCPServer`). One set of tools, two backends:

- **embedded**: the pipeline runs in this process, through the same event path as `udb run`
  (`shared.serving.embedded.Dispatcher`: the Triggers in `eventing/` decide which handler gets each
  event);
- **stack**: client events go to the broker ingress (`--stack URL`), discovery to discover's
  `POST /sources/discover_connect`, status and artifacts come from the artifacts function's HTTP
  API — every request carrying the caller's own credential, so the stack checks it again.

Every tool and resource is checked against the caller's tenant and role first, with the model of
the HTTP API (`shared.security.auth`): the same credentials (API keys, JWTs), the same roles, and
`auth.MCP_ROLES` as the tool -> role table. The caller is, over streamable HTTP, whoever the
request's `Authorization: Bearer` names (per request); over stdio, `UDB_MCP_TOKEN`. With
authentication off (`UDB_AUTH=auto` in embedded mode) the caller is a local admin of one tenant,
like the CLI: `--tenant`, or over HTTP the `X-UDB-Tenant` header.

Warehouse reads (`list_tables`, `describe_table`, `run_kpi`) have no HTTP API: in both modes
they read the tenant's warehouse snapshot from the object store, read-only, and KPI SQL goes
through the SQL guard and the KPI engine of the analysis (`shared.security.sqlguard`,
`functions.analyze.kpis`).
"""
from __future__ import annotations

import base64
import json
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from shared.security import auth, links, ratelimit
from shared.core import bindings, events
from shared.core.errors import InputError, NotFound, TransientError, UDBError, ValidationError
from shared.storage.jobs import TERMINAL
from shared.core.settings import Settings
from shared.core.tenancy import DEFAULT_TENANT, new_job_id, validate_artifact_name, validate_job_id, validate_tenant

SERVER_NAME = "udb"
INSTRUCTIONS = (
    "UDB turns a hint (a file path, URL, s3:// key, PostgreSQL DSN, share link) into analysed "
    "warehouse tables. Call discover_connect(hint); when the answer says ambiguous, pick one of "
    "its candidates with choose_source(job, provider). Then sync(job) loads the tables and "
    "analyze(job) writes reports, KPIs and a summary; get_artifact(job, name) reads them. "
    "list_tables, describe_table and run_kpi(sql) query the warehouse (one read-only SELECT)."
)
DEFAULT_WAIT_SECONDS = 300     # how long sync/analyze/choose_source wait for their stage in stack mode
MAX_INLINE_BYTES = 1_000_000   # get_artifact: larger artifacts are cut (the resource gives them whole)
DESCRIBE_SAMPLE_ROWS = 5
REMEMBERED_JOBS = 1000         # hints kept for choose_source, per process
TEXT_TYPES = ("text/", "application/json", "application/javascript", "image/svg+xml")
STAGE_DONE = {"discover": ("discovered", "failed"), "sync": ("loaded", "completed", "failed"),
              "analyze": ("completed", "failed")}


@dataclass(frozen=True)
class Caller:
    principal: auth.Principal
    credential: str | None  # what the stack backend forwards (None with authentication off)

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    def headers(self) -> dict:
        out = {auth.TENANT_HEADER: self.tenant}
        if self.credential:
            out["Authorization"] = f"Bearer {self.credential}"
        return out


def refusal(exc: Exception) -> str:
    """One line an agent can act on: what kind of refusal, and the reason."""
    if isinstance(exc, auth.Unauthorized):
        return f"unauthorized: {exc}"
    if isinstance(exc, auth.Forbidden):
        return f"forbidden: {exc}"
    if isinstance(exc, NotFound):
        return f"not found: {exc}"
    if isinstance(exc, ratelimit.RateLimited):
        return f"rate limited, retry in {exc.retry_after} s: {exc}"
    if isinstance(exc, TransientError):
        return f"unavailable, try again: {exc}"
    if isinstance(exc, InputError):
        return f"invalid input: {exc}"
    return str(exc)


# ---------------------------------------------------------------- who is calling

class Access:
    """Authentication and the role check of every tool, as shared.security.auth does for HTTP routes."""

    def __init__(self, settings: Settings, store, *, token: str = "", tenant: str = DEFAULT_TENANT):
        self.gate = auth.Gatekeeper(settings, store)
        self.token = token
        self.tenant = validate_tenant(tenant)

    def verify(self, credential: str | None, client: str = "stdio") -> auth.Principal:
        if not credential:
            raise auth.Unauthorized("UDB needs credentials: an API key or JWT as `Authorization: Bearer <credential>` "
                                    "(over stdio, in UDB_MCP_TOKEN)")
        try:
            principal = self.gate.credential(credential)
        except auth.Unauthorized:
            # Failed attempts from one address share a bucket, as at the HTTP door.
            self.gate.limiter.take(f"ip:{client}", "failed authentications")
            raise
        if principal.role == auth.BROKER:
            raise auth.Forbidden("the broker token opens only the CloudEvent entry, not the MCP tools")
        return principal

    def caller(self, headers: dict | None, client: str = "?") -> Caller:
        """The caller of one request: `headers` are the HTTP request's (None over stdio)."""
        if headers is None:  # stdio: the server's own credential, checked on every call (revocation)
            if self.token:
                return Caller(self.verify(self.token), self.token)
            if self.gate.enabled:
                raise auth.Unauthorized("authentication is on: set UDB_MCP_TOKEN to an API key or JWT "
                                        "(`udb keys create` / `udb token`)")
            return Caller(auth.Principal(self.tenant, "admin", "auth-off"), None)
        claim = headers.get(auth.TENANT_HEADER.lower())
        if not self.gate.enabled:
            return Caller(auth.Principal(validate_tenant(claim) if claim else self.tenant, "admin", "auth-off"), None)
        credential = auth._bearer(headers)
        principal = self.verify(credential, client)
        if claim is not None and claim != principal.tenant:
            raise auth.Forbidden(f"{auth.TENANT_HEADER} {claim!r} is not the tenant of these credentials")
        return Caller(principal, credential)

    def check(self, caller: Caller, action: str) -> None:
        need = auth.MCP_ROLES.get(action, auth.DEFAULT_ROLE)
        if not auth.role_at_least(caller.principal.role, need):
            raise auth.Forbidden(f"role {caller.principal.role} may not call {action} (needs {need})")
        self.gate.limiter.take(caller.tenant)


# ---------------------------------------------------------------- the warehouse, read-only

class Warehouse:
    """The tenant's lake, read in place: its catalog copied from the store for each read (the
    writer replaces the catalog whole, so a copy is always one consistent snapshot), the Parquet
    data files read from the store."""

    def __init__(self, settings: Settings, store):
        self.settings = settings
        self.store = store

    def _catalog(self, tenant: str, tmp: str):
        """(the tenant's store, the local copy of its lake catalog)."""
        from shared.storage import lake
        from shared.storage.store import TenantStore
        store = TenantStore(self.store, tenant)
        try:
            local, _ = lake.fetch_catalog(store, Path(tmp))
        except NotFound:
            raise NotFound(f"tenant {tenant} has no warehouse yet: discover and sync a source first") from None
        return store, local

    def _open(self, tenant: str, tmp: str):
        from shared.storage import lake
        return lake.connect(*self._catalog(tenant, tmp), read_only=True, memory_limit=self.settings.duckdb_memory_limit,
                            threads=self.settings.duckdb_threads)

    def tables(self, tenant: str) -> list[dict]:
        from shared.storage import duck
        with tempfile.TemporaryDirectory(prefix="udb-mcp-") as tmp:
            con = self._open(tenant, tmp)
            try:
                out = []
                for (name,) in con.execute(_USER_TABLES).fetchall():
                    rows = con.execute(f"SELECT count(*) FROM main.{duck.quote(name)}").fetchone()[0]
                    columns = con.execute("SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'main' "
                                          "AND database_name = current_database() AND table_name = ?", [name]).fetchone()[0]
                    out.append({"name": name, "rows": rows, "columns": columns})
                return out
            finally:
                con.close()

    def describe(self, tenant: str, table: str) -> dict:
        from functions.analyze.profile import json_safe
        from shared.storage import duck
        from shared.security import pii
        with tempfile.TemporaryDirectory(prefix="udb-mcp-") as tmp:
            con = self._open(tenant, tmp)
            try:
                names = [r[0] for r in con.execute(_USER_TABLES).fetchall()]
                match = next((n for n in names if n.lower() == str(table).lower()), None)
                if match is None:
                    raise NotFound(f"no table {table!r} in the warehouse of tenant {tenant}; "
                                   f"it has: {', '.join(names) or 'none yet'}")
                columns = [{"name": n, "type": t, "nullable": nullable} for n, t, nullable in con.execute(
                    "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE schema_name = 'main' "
                    "AND database_name = current_database() AND table_name = ? ORDER BY column_index", [match]).fetchall()]
                rows = con.execute(f"SELECT count(*) FROM main.{duck.quote(match)}").fetchone()[0]
                cursor = con.execute(f"SELECT * FROM main.{duck.quote(match)} LIMIT {DESCRIBE_SAMPLE_ROWS}")
                header = [d[0] for d in cursor.description]
                # Sample rows leave the warehouse: PII masked, as in every artifact.
                sample, masked = pii.mask_rows(header, json_safe([list(r) for r in cursor.fetchall()]),
                                               policy=pii.Policy.of(self.settings))
                return {"name": match, "rows": rows, "columns": columns, "sample": sample, "pii_masked": masked}
            finally:
                con.close()

    def run_kpi(self, tenant: str, sql: str, max_rows: int) -> dict:
        from functions.analyze import kpis
        from shared.storage import duck
        from shared.security import pii, sqlguard
        if not isinstance(max_rows, int) or max_rows < 1:
            raise InputError(f"max_rows must be a positive integer, found {max_rows!r}")
        with tempfile.TemporaryDirectory(prefix="udb-mcp-") as tmp:
            from shared.storage import lake
            tstore, local = self._catalog(tenant, tmp)
            con = lake.connect(tstore, local, read_only=True)
            try:
                tables = [r[0] for r in con.execute(_USER_TABLES).fetchall()]
            finally:
                con.close()
            checked = sqlguard.check_select(sql, tables)  # SQLRejected (an InputError) names every problem
            kpi_con = kpis.open_kpi_connection(local, store=tstore, memory_limit=self.settings.duckdb_memory_limit,
                                               threads=self.settings.duckdb_threads)
            try:
                result = kpis.run_kpi(kpi_con, {"name": "run_kpi", "sql": checked.sql},
                                      timeout_ms=self.settings.kpi_timeout_ms,
                                      max_rows=min(max_rows, self.settings.kpi_max_rows),
                                      max_bytes=self.settings.kpi_max_bytes,
                                      max_cell_chars=self.settings.kpi_max_cell_chars,
                                      policy=pii.Policy.of(self.settings))
            finally:
                kpi_con.close()
        return {"sql": checked.sql, "tables": checked.tables, "columns": result["columns"], "rows": result["rows"],
                "row_count": result["row_count"], "truncated": result["truncated"],
                "pii_masked": result["pii_masked"], "elapsed_ms": result["elapsed_ms"]}


_USER_TABLES = ("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                "AND database_name = current_database() ORDER BY table_name")


# ---------------------------------------------------------------- backends

def waiting_answer(job_id: str, wait: dict, hint: str, options: dict) -> dict:
    """A job waiting for the user to authorize UDB at the source (OAuth): the oauthUrl to open
    (or the device code to enter), and the candidates of the hint."""
    candidates, ambiguous = wait.get("candidates"), wait.get("ambiguous")
    if candidates is None:  # the job document does not keep them: detection by syntax alone
        from functions.discover.detect import detect
        found = detect(hint, options, probe=False)
        candidates, ambiguous = found["candidates"], found["ambiguous"]
    out = {"jobId": job_id, "state": "waiting", "reason": wait.get("reason", "waiting for authorization"),
           "provider": wait.get("provider"), "candidates": candidates, "ambiguous": ambiguous}
    out.update({k: wait[k] for k in ("oauthUrl", "device") if wait.get(k)})
    return out


class Embedded:
    """The pipeline in this process: events through shared.serving.embedded.Dispatcher."""

    mode = "embedded"

    def __init__(self, settings: Settings):
        from shared.serving.embedded import Dispatcher
        self.dispatcher = Dispatcher(settings)
        self.ctx = self.dispatcher.context("mcp")
        self.store = self.ctx.store
        self.lock = threading.Lock()  # one pipeline step at a time, as `udb run` does

    def _publish(self, event) -> list:
        with self.lock:
            return self.dispatcher.publish(event)

    def discover(self, caller: Caller, job_id: str, hint: str, options: dict, *, new: bool) -> dict:
        from shared.sources import redact
        request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "options": options, "autosync": False,
                                                                "autoanalyze": False},
                                    tenant=caller.tenant, job_id=job_id, function="mcp")
        if new:
            self.ctx.jobs(caller.tenant).create(job_id, hint=redact(hint), traceparent=request["traceparent"])
        seen = self._publish(request)
        found = next((e for e in reversed(seen) if e["type"] == events.SOURCE_DISCOVERED), None)
        if found is None:
            doc = self.status(caller, job_id)
            if (doc.get("error") or {}).get("waiting"):
                return waiting_answer(job_id, doc["error"], hint, options)
            return {"jobId": job_id, "state": "failed", "error": doc["error"]["reason"]}
        data = events.event_data(found)
        return {"jobId": job_id, "state": "discovered", "candidates": data["candidates"],
                "ambiguous": data["ambiguous"], "source": data["source"]}

    def request(self, caller: Caller, job_id: str, event_type: str, data: dict, stage: str,
                wait_seconds: float, flags: dict | None = None) -> dict:
        self._publish(events.make_event(event_type, data, tenant=caller.tenant, job_id=job_id, function="mcp",
                                        flags=flags))
        return self.status(caller, job_id)

    def status(self, caller: Caller, job_id: str) -> dict:
        doc = self.ctx.jobs(caller.tenant).get(validate_job_id(job_id))
        if doc.get("artifacts_index"):
            # As GET /status/{jobId} gives it (the stack backend gets it from there).
            link = links.report_link(self.ctx, caller.tenant, doc["job_id"])
            if link:
                doc["report_link"] = link
        return doc

    def artifact(self, caller: Caller, job_id: str, name: str) -> tuple[bytes, str]:
        from shared.storage.store import TenantStore
        store = TenantStore(self.store, caller.tenant)
        self.status(caller, job_id)  # another tenant's job: not found, before any artifact key is built
        try:
            data = store.get(store.artifact_key(job_id, name)).data
        except NotFound:
            raise NotFound(f"no artifact {name!r} for job {job_id}") from None
        if name == "index.json":
            return data, "application/json"
        index = json.loads(store.get(store.artifact_key(job_id, "index.json")).data)
        return data, next((a["media_type"] for a in index["artifacts"] if a["name"] == name), "application/octet-stream")

    def put_kpi(self, caller: Caller, name: str, definition: dict) -> dict:
        from shared.analysis.kpi_defs import KpiDefinitions, warehouse_tables
        from shared.storage.store import TenantStore
        store = TenantStore(self.store, caller.tenant)
        definitions = KpiDefinitions(store, max_definitions=self.ctx.settings.kpi_max_definitions)
        return definitions.put(name, definition, warehouse_tables(store))[0]

    def put_schedule(self, caller: Caller, source_id: str, schedule: dict) -> dict:
        from shared.serving.schedules import Schedules
        from shared.storage.store import TenantStore
        return Schedules(TenantStore(self.store, caller.tenant)).put(source_id, schedule)[0]


class Stack:
    """The running stack: the broker ingress, discover's and artifacts' HTTP APIs, each request
    with the caller's credential (the stack checks it again)."""

    mode = "stack"

    def __init__(self, settings: Settings, broker_url: str):
        from shared.storage.store import open_store
        self.settings = settings
        self.broker_url = broker_url
        self.discover_url = settings.discover_url.rstrip("/")
        self.artifacts_url = settings.artifacts_url.rstrip("/")
        self.store = open_store(settings)  # credentials (API keys) and warehouse snapshots
        self.http = httpx.Client(timeout=httpx.Timeout(30, connect=5))

    def _call(self, method: str, url: str, caller: Caller, **kw) -> httpx.Response:
        try:
            response = self.http.request(method, url, headers={**caller.headers(), **kw.pop("headers", {})}, **kw)
        except httpx.HTTPError as exc:
            raise TransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code < 300 or response.status_code == 422:
            return response
        try:
            reason = response.json().get("error") or response.text
            problems = response.json().get("problems")
        except ValueError:
            reason, problems = response.text.strip() or response.reason_phrase, None
        if response.status_code == 401:
            raise auth.Unauthorized(reason)
        if response.status_code == 403:
            raise auth.Forbidden(reason)
        if response.status_code == 404:
            raise NotFound(reason)
        if response.status_code in (400, 413):
            raise ValidationError(reason, problems) if isinstance(problems, dict) else InputError(reason)
        raise TransientError(f"{method} {url} answered {response.status_code}: {reason}")

    def discover(self, caller: Caller, job_id: str, hint: str, options: dict, *, new: bool) -> dict:
        if new:  # discover's own HTTP door answers with the candidates at once
            body = {"hint": hint, "options": options, "autosync": False, "autoanalyze": False}
            answer = self._call("POST", f"{self.discover_url}/sources/discover_connect", caller, json=body).json()
            if answer.get("state") == "failed":
                return {"jobId": answer["jobId"], "state": "failed", "error": answer["error"]}
            if answer.get("state") == "waiting":  # a share link without the tenant's OAuth token
                return waiting_answer(answer["jobId"], answer, hint, options)
            out = {"jobId": answer["jobId"], "state": "discovered", "candidates": answer["candidates"],
                   "ambiguous": answer["ambiguous"], "source": answer["source"]}
            if answer.get("oauthUrl"):
                out["oauthUrl"] = answer["oauthUrl"]
            return out
        # Again, for the same job (a provider chosen): the event through the broker.
        before = self.status(caller, job_id)["version"]
        self._post_event(caller, events.make_event(
            events.DISCOVER_REQUESTED, {"hint": hint, "options": options, "autosync": False, "autoanalyze": False},
            tenant=caller.tenant, job_id=job_id, function="mcp"))
        doc = self._wait(caller, job_id, ("discovered", "failed"), DEFAULT_WAIT_SECONDS, after_version=before)
        if doc["state"] == "failed":
            return {"jobId": job_id, "state": "failed", "error": doc["error"]["reason"]}
        source = self._source(caller, doc)
        return {"jobId": job_id, "state": "discovered", "source": source}

    def _source(self, caller: Caller, doc: dict) -> dict:
        from shared.storage.store import TenantStore
        return json.loads(TenantStore(self.store, caller.tenant).get(f"sources/{doc['source_id']}.json").data)

    def _post_event(self, caller: Caller, event) -> None:
        headers, body = bindings.to_http(event)
        self._call("POST", self.broker_url, caller, headers=headers, content=body)

    def _wait(self, caller: Caller, job_id: str, states: tuple, wait_seconds: float, after_version: int = 0) -> dict:
        deadline = time.monotonic() + wait_seconds
        while True:
            doc = self.status(caller, job_id)
            if doc["state"] in states and doc["version"] > after_version:
                return doc
            if doc["state"] == "failed" or time.monotonic() > deadline:
                return doc
            time.sleep(0.3)

    def request(self, caller: Caller, job_id: str, event_type: str, data: dict, stage: str,
                wait_seconds: float, flags: dict | None = None) -> dict:
        before = self.status(caller, job_id)["version"]
        self._post_event(caller, events.make_event(event_type, data, tenant=caller.tenant, job_id=job_id,
                                                   function="mcp", flags=flags))
        return self._wait(caller, job_id, STAGE_DONE[stage], wait_seconds, after_version=before)

    def status(self, caller: Caller, job_id: str) -> dict:
        return self._call("GET", f"{self.artifacts_url}/status/{validate_job_id(job_id)}", caller).json()

    def artifact(self, caller: Caller, job_id: str, name: str) -> tuple[bytes, str]:
        response = self._call("GET", f"{self.artifacts_url}/artifact/{validate_job_id(job_id)}/{name}", caller)
        return response.content, response.headers.get("content-type", "application/octet-stream").split(";")[0]

    def put_kpi(self, caller: Caller, name: str, definition: dict) -> dict:
        return self._call("PUT", f"{self.artifacts_url}/kpis/{name}", caller, json=definition).json()

    def put_schedule(self, caller: Caller, source_id: str, schedule: dict) -> dict:
        from shared.serving.schedules import validate_source_id
        return self._call("PUT", f"{self.artifacts_url}/sources/{validate_source_id(source_id)}/schedule", caller,
                          json=schedule).json()


# ---------------------------------------------------------------- the tools

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


# ---------------------------------------------------------------- MCP

def _headers_of(ctx) -> tuple[dict | None, str]:
    """(lower-cased HTTP headers, client address) of the request behind `ctx`; (None, "stdio")
    over stdio."""
    request = getattr(ctx.request_context, "request", None) if ctx is not None else None
    if request is None or not hasattr(request, "headers"):
        return None, "stdio"
    client = request.client.host if getattr(request, "client", None) else "?"
    return {k.lower(): v for k, v in request.headers.items()}, client


def build_server(udb: UDB):
    """The MCPServer with every tool and resource of `udb` registered."""
    server = MCPServer(SERVER_NAME, title="UDB — universal data bridge", instructions=INSTRUCTIONS,
                       log_level=udb.settings.log_level if udb.settings.log_level in
                       ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "WARNING")

    def guarded(action: str, ctx, work, error=ToolError):
        try:
            headers, client = _headers_of(ctx)
            caller = udb.access.caller(headers, client)
            udb.access.check(caller, action)
            return work(caller)
        except NotFound as exc:
            raise (ResourceNotFoundError if error is ResourceError else error)(refusal(exc)) from None
        except UDBError as exc:
            raise error(refusal(exc)) from None

    @server.tool()
    def discover_connect(hint: str, ctx: Context, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Discover what HINT is (a path, URL, s3:// key, PostgreSQL DSN, share link): the job id,
        ranked candidates {provider, confidence, reasons}, `ambiguous` (top two within 0.15), the
        source catalogue, and `oauthUrl` where the source needs a sign-in. `options` as in
        POST /sources/discover_connect (e.g. {"provider": "rest", "auth": {...}}). Needs analyst."""
        return guarded("discover_connect", ctx, lambda c: udb.discover_connect(c, hint, options))

    @server.tool()
    def choose_source(job: str, candidate: str, ctx: Context) -> dict[str, Any]:
        """When discovery was ambiguous: discover JOB again as the provider CANDIDATE (one of its
        candidates). Needs analyst."""
        return guarded("choose_source", ctx, lambda c: udb.choose_source(c, job, candidate))

    @server.tool()
    def sync(job: str, ctx: Context, streams: list[str] | None = None,
             wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Sync JOB's discovered source into the warehouse (all streams, or STREAMS); answers when
        the tables are loaded, with their row counts. Needs analyst."""
        return guarded("sync", ctx, lambda c: udb.sync(c, job, streams, wait_seconds))

    @server.tool()
    def analyze(job: str, ctx: Context, kpis: dict[str, dict[str, Any]] | None = None,
                tables: list[str] | None = None, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Analyse JOB's tables (profiles, KPIs, charts, summary). KPIS, {name: {sql, chart: {type,
        x, y}, title?}}, are stored as the tenant's KPI definitions first (their SQL through the SQL
        guard) and run by the analysis (kpis-custom.json). Needs analyst."""
        return guarded("analyze", ctx, lambda c: udb.analyze(c, job, kpis, tables, wait_seconds))

    @server.tool()
    def status(job: str, ctx: Context) -> dict[str, Any]:
        """JOB's status document: state, history, tables and row counts, stage times, error."""
        return guarded("status", ctx, lambda c: udb.status(c, job))

    @server.tool()
    def list_tables(ctx: Context) -> dict[str, Any]:
        """The tenant's warehouse tables with row and column counts."""
        return guarded("list_tables", ctx, lambda c: udb.list_tables(c))

    @server.tool()
    def describe_table(name: str, ctx: Context) -> dict[str, Any]:
        """One warehouse table: columns (name, type, nullable), row count, a few sample rows (PII masked)."""
        return guarded("describe_table", ctx, lambda c: udb.describe_table(c, name))

    @server.tool()
    def run_kpi(sql: str, ctx: Context, max_rows: int = 1000) -> dict[str, Any]:
        """Run one read-only SELECT over the tenant's warehouse tables, through the SQL guard, under
        the KPI time limit and row cap; results PII masked. Needs analyst."""
        return guarded("run_kpi", ctx, lambda c: udb.run_kpi(c, sql, max_rows))

    @server.tool()
    def set_schedule(source: str, cron: str, ctx: Context, timezone: str = "UTC") -> dict[str, Any]:
        """Sync SOURCE (a source id, or a job whose discovered source it is) on a schedule: CRON, a
        5-field cron expression ("0 6 * * *": 06:00 each day) in TIMEZONE (IANA, e.g.
        "Europe/Paris"). Replaces any schedule it had; answers the schedule with its next three
        slots. Each slot sends one sync. Needs analyst."""
        return guarded("set_schedule", ctx, lambda c: udb.set_schedule(c, source, cron, timezone))

    @server.tool()
    def get_artifact(job: str, ctx: Context, name: str = "index.json",
                     max_bytes: int = MAX_INLINE_BYTES) -> dict[str, Any]:
        """One artifact of JOB (default its index.json, which lists the others): text for text and
        JSON, base64 otherwise, cut at MAX_BYTES."""
        return guarded("get_artifact", ctx, lambda c: udb.get_artifact(c, job, name, max_bytes))

    @server.resource("udb://jobs/{job}", name="job", mime_type="application/json",
                     description="A job's status document with its artifact index (null until analysed)")
    def job_resource(job: str, ctx: Context) -> str:
        def work(c):
            doc = udb.status(c, job)
            index = json.loads(udb.artifact(c, job, "index.json")[0]) if doc.get("artifacts_index") else None
            return json.dumps({"status": doc, "index": index}, indent=2)
        return guarded("udb://jobs/{job}", ctx, work, ResourceError)

    @server.resource("udb://jobs/{job}/artifacts/{name}", name="artifact",
                     description="One artifact of a job, whole (text, or bytes as a blob)")
    def artifact_resource(job: str, name: str, ctx: Context) -> str | bytes:
        def work(c):
            data, media_type = udb.artifact(c, job, name)
            return data.decode("utf-8") if media_type.startswith(TEXT_TYPES) else data
        return guarded("udb://jobs/{job}/artifacts/{name}", ctx, work, ResourceError)

    return server


class AuthDoor:
    """ASGI: with authentication on, a request without valid credentials gets 401 before the MCP
    session sees it (the tools check the role of each call again)."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.access.gate.enabled:
            import anyio
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            client = (scope.get("client") or ("?",))[0]
            try:
                await anyio.to_thread.run_sync(self.access.caller, headers, client)
            except (auth.Unauthorized, auth.Forbidden) as exc:
                status = 401 if isinstance(exc, auth.Unauthorized) else 403
                body = json.dumps({"error": str(exc)}).encode()
                head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                if status == 401:
                    head.append((b"www-authenticate", b'Bearer realm="udb"'))
                await send({"type": "http.response.start", "status": status, "headers": head})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve(settings: Settings, *, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765,
          stack_url: str = "", tenant: str = DEFAULT_TENANT) -> int:
    """Run the server until its client goes away (stdio) or it is stopped (http)."""
    if transport not in ("stdio", "http"):
        raise InputError(f"--transport must be stdio or http, found {transport!r}")
    if stack_url:
        if not stack_url.startswith(("http://", "https://")):
            raise InputError(f"--stack must be the broker ingress URL (http...), found {stack_url!r}")
        settings = replace(settings, mode="stack" if settings.mode == "embedded" else settings.mode)
    udb = UDB(settings, stack_url=stack_url, tenant=tenant)
    if transport == "stdio":
        udb.access.caller(None)  # a missing or wrong UDB_MCP_TOKEN fails at start, with the reason
    server = build_server(udb)
    if transport == "stdio":
        server.run("stdio")
        return 0
    import anyio
    import uvicorn

    app = AuthDoor(server.streamable_http_app(host=host), udb.access)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve)
    return 0

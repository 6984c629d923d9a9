"""The two backends the tools run on: Embedded (the pipeline in this process, events through
shared.serving.embedded.Dispatcher) and Stack (the broker ingress and the functions' HTTP APIs,
each request with the caller's own credential)."""
from __future__ import annotations

import json
import threading
import time

import httpx

from shared.core import bindings, events
from shared.core.errors import InputError, NotFound, TransientError, ValidationError
from shared.core.settings import Settings
from shared.core.tenancy import validate_job_id
from shared.security import auth, links

from .access import Caller

DEFAULT_WAIT_SECONDS = 300     # how long sync/analyze/choose_source wait for their stage in stack mode
STAGE_DONE = {"discover": ("discovered", "failed"), "sync": ("loaded", "completed", "failed"),
              "analyze": ("completed", "failed")}


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
        from shared.storage.backends import open_store
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

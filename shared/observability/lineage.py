"""OpenLineage run events for jobs (spec 2-0-2): START, COMPLETE, FAIL.

One UDB job is one OpenLineage run: `run.runId` is a UUID derived from the tenant and job id
(the same in every function), the job is `{namespace: "udb/<tenant>", name: "<source_id>"}`,
the input is the source the hint names, the outputs are the warehouse tables the job loaded.

Emitted from one place, the job state machine (`Context.jobs` -> `Jobs.on_change`):
- START at `discovered`: discovery has just named the source, so START and the event that ends
  the run carry the same job name (a job that starts later in the pipeline, from
  `sync.requested` or `analyze.requested`, starts at its first stage instead);
- COMPLETE at `completed`, or at `loaded` when the job is not analysed (autoanalyze off);
- FAIL at `failed`, with the reason as the errorMessage run facet. The spec asks for a START
  and an end event per run: a job that fails before it started (discovery could not name the
  source) sends a START, dated when the job was created, just before its FAIL.

Built with the OpenLineage Python client's generated event classes (`openlineage.client.event_v2`
and its facets) and serialised by its `Serde`, so an event the client's model would refuse is
never sent; the client is imported on the first event, not when a function starts. Its
transports are not used: the two UDB needs are a few lines each below, and the client's
would bring their own configuration path beside `Settings`.

Sent per `UDB_LINEAGE`: `http` POSTs each event to `UDB_LINEAGE_URL` (Marquez's
`/api/v1/lineage`, or any OpenLineage HTTP consumer), `file` appends JSON lines to
`UDB_LINEAGE_FILE`, `none` sends nothing. Lineage watches the work: a failure to send is
logged and counted (`udb_lineage_events_total{result="failed"}`), never raised.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from shared.observability import metrics

if TYPE_CHECKING:  # the client is imported with the first event, not with this module
    from openlineage.client.event_v2 import OutputDataset

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
SCHEMA_URL = f"{SPEC}#/$defs/RunEvent"
PRODUCER = "https://udb.dev/udb/0.1.0"  # what produced the events (UDB and its version)
ERROR_FACET_URL = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
OUTPUT_STATS_URL = ("https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json"
                    "#/$defs/OutputStatisticsOutputDatasetFacet")
RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://udb/jobs")
START_STATES = ("discovered", "syncing", "staged", "loading", "loaded", "analyzing")
_file_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()
log = logging.getLogger("udb.lineage")


def run_id(tenant: str, job_id: str) -> str:
    """The run id of a job: a UUID derived from tenant and job id, the same in every function."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{tenant}/{job_id}"))


def job_name(doc: dict) -> str:
    """The OpenLineage job name: the source id (stable for the same hint across runs)."""
    return doc.get("source_id") or "undiscovered"


def source_dataset(hint: str) -> dict | None:
    """The source a hint names as an OpenLineage dataset, following OpenLineage's naming
    (postgres://host:port + db.schema.table, s3://bucket + key, file + path); credentials,
    query strings (API keys) and fragments never appear in it."""
    # Built from the parts that name a place (scheme, host, port, path, postgres `table`), so a
    # password or token in the hint can never reach the event. No shared.sources import: that
    # would pull every provider's libraries into the writer's and analyze's images.
    hint = (hint or "").strip()
    if not hint:
        return None
    if "://" not in hint:
        return {"namespace": "file", "name": os.path.abspath(hint)}
    url = urlsplit(hint)
    scheme = url.scheme.lower()
    host = url.hostname or ""
    try:
        port = url.port
    except ValueError:
        port = None
    if scheme == "file":
        return {"namespace": "file", "name": url.path}
    if scheme in ("postgres", "postgresql"):
        database = url.path.lstrip("/") or "postgres"
        table = (parse_qs(url.query).get("table") or [""])[0]
        name = f"{database}.{table if '.' in table else 'public.' + table}" if table else database
        return {"namespace": f"postgres://{host}:{port or 5432}", "name": name}
    if scheme == "s3":
        return {"namespace": f"s3://{host}", "name": url.path.lstrip("/") or "/"}
    if scheme == "upload":
        return {"namespace": "upload", "name": f"{host}{url.path}"}
    authority = f"{host}:{port}" if port else host
    return {"namespace": f"{scheme}://{authority}", "name": url.path or "/"}


def warehouse_dataset(tenant: str, table: str, rows: int | None = None) -> dict:
    """A warehouse table as an OpenLineage output dataset (with its row count when known)."""
    return _to_dict(_output(tenant, table, rows))


def _output(tenant: str, table: str, rows: int | None) -> OutputDataset:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.generated.base import OutputDatasetFacet
    from openlineage.client.generated.output_statistics_output_dataset import (
        OutputStatisticsOutputDatasetFacet,
    )

    facets: dict[str, OutputDatasetFacet] | None = None  # None: no outputFacets key (Serde drops it)
    if rows is not None:
        facets = {"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=int(rows), producer=PRODUCER)}
    return OutputDataset(namespace=f"duckdb://udb/{tenant}", name=table, facets={}, outputFacets=facets)


def _to_dict(model: object) -> dict:
    from openlineage.client.serde import Serde

    return Serde.to_dict(model)


def run_event(event_type: str, doc: dict, event_time: str | None = None) -> dict:
    """The OpenLineage RunEvent of `event_type` (START, COMPLETE, FAIL) for a job document, as
    the JSON object sent; `event_time` defaults to the document's `updated_at`."""
    from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
    from openlineage.client.generated.base import RunFacet
    from openlineage.client.generated.error_message_run import ErrorMessageRunFacet

    tenant = doc["tenant"]
    run_facets: dict[str, RunFacet] = {}
    if event_type == "FAIL" and doc.get("error"):
        error = doc["error"]
        run_facets["errorMessage"] = ErrorMessageRunFacet(
            message=f"{error.get('stage')} in {error.get('function')}: {error.get('reason')}",
            programmingLanguage="python", producer=PRODUCER)
    source = source_dataset(doc.get("hint", ""))
    inputs = [InputDataset(namespace=source["namespace"], name=source["name"], facets={}, inputFacets=None)] \
        if source else []
    outputs = []
    if event_type == "COMPLETE":
        outputs = [_output(tenant, table, (info or {}).get("rows"))
                   for table, info in sorted((doc.get("tables") or {}).items())]
    event = RunEvent(eventType=RunState(event_type), eventTime=event_time or doc["updated_at"],
                     run=Run(runId=run_id(tenant, doc["job_id"]), facets=run_facets),
                     job=Job(namespace=f"udb/{tenant}", name=job_name(doc), facets={}),
                     inputs=inputs, outputs=outputs, producer=PRODUCER)
    if event.schemaURL != SCHEMA_URL:  # the client moved to another spec version: say so, loudly
        raise RuntimeError(f"openlineage-python builds {event.schemaURL}, UDB promises {SCHEMA_URL}")
    return _to_dict(event)


def event_types_for(doc: dict, analysed: bool = True) -> list[str]:
    """The run events this job-state change is (none, one, or START + FAIL). `analysed`: whether
    the job goes on to analysis after `loaded` (the autoanalyze flag of the event handled)."""
    state = doc["state"]
    history = doc.get("history") or []
    if not history or history[-1]["state"] != state or history[-1]["at"] != doc["updated_at"]:
        return []  # an update within a state (fields only), not a state change
    started_before = any(h["state"] in START_STATES for h in history[:-1])
    if state == "failed":
        end = "FAIL"
    elif state == "completed" or (state == "loaded" and not analysed):
        end = "COMPLETE"
    elif state in START_STATES and not started_before:
        return ["START"]
    else:
        return []
    return [end] if started_before else ["START", end]


class Lineage:
    """Sends run events to the configured transport (none, http, file)."""

    def __init__(self, settings):
        self.kind = settings.lineage
        self.url = settings.lineage_url
        self.path = Path(settings.lineage_file) if settings.lineage_file else None

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def job_changed(self, doc: dict, analysed: bool = True) -> list[dict]:
        """The Jobs.on_change hook: emit the run events this change is; returns them."""
        if not self.enabled:
            return []
        sent = []
        types = event_types_for(doc, analysed)
        for event_type in types:
            # A START sent together with its end event is dated when the job was made.
            when = doc["created_at"] if event_type == "START" and len(types) > 1 else None
            event = run_event(event_type, doc, when)
            self.send(event)
            sent.append(event)
        return sent

    def send(self, event: dict) -> bool:
        try:
            if self.kind == "file":
                if self.path is None:
                    raise ValueError("lineage to a file needs UDB_LINEAGE_FILE")
                self._append(self.path, event)
            elif self.kind == "http":
                self._post(event)
            else:
                return False
        except Exception as exc:  # lineage must never fail the job it describes
            metrics.lineage_events.labels(event["eventType"], "failed").inc()
            log.warning("OpenLineage %s event for run %s not sent: %s", event["eventType"],
                        event["run"]["runId"], exc)
            return False
        metrics.lineage_events.labels(event["eventType"], "sent").inc()
        return True

    def _append(self, path: Path, event: dict) -> None:
        key = str(path)
        with _locks_lock:
            lock = _file_locks.setdefault(key, threading.Lock())
        path.parent.mkdir(parents=True, exist_ok=True)
        with lock, open(path, "a") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")

    def _post(self, event: dict) -> None:
        import httpx
        response = httpx.post(self.url, json=event, timeout=httpx.Timeout(5.0, connect=2.0))
        if response.status_code >= 300:
            raise RuntimeError(f"{self.url} answered {response.status_code}")


def read_events(path) -> list[dict]:
    """Every run event in a file the file transport wrote (tests and tools)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""A job's artifact index: `index.json`, the report page `index.html`, and the reports' state.

analyze writes the index when it completes the job, with every heavy report (ydata-profiling,
Evidently, PNG charts) planned as `pending`; the reports function renders them later and adds
them here; a reports delivery that ends in the dead letters marks what is still pending as
failed (functions/artifacts/deadletters.py). All three go through this module, so the page and
the job document's `reports` field always say the same thing.

The page is self-contained (inline CSS, no scripts, no network): it opens from the object
store, from a local folder, or through GET /artifact/{job}/index.html, where its relative links
resolve to the other artifacts of the same job. While a report is pending it reloads itself
(a meta refresh, no script) until every report is ready or has failed.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from shared.observability import metrics
from shared.core.errors import NotFound, PreconditionFailed
from shared.core.templating import render
from shared.storage.store import TenantStore

INDEX_JSON, INDEX_HTML = "index.json", "index.html"
REPORT_STATES = ("pending", "ready", "failed", "skipped")
REFRESH_SECONDS = 3


UPLOAD_THREADS = 8
_POOL: list = []  # [(pid, ThreadPoolExecutor)]: the process's upload pool, made on first use


def upload_pool():
    """The process's pool of artifact-upload threads, shared by its jobs: made on first use and
    kept (starting eight threads per job cost analyze ~20 ms of every job). A forked child
    makes its own, the parent's threads are not in it. Uploads carry no state of their own
    between jobs: each is one store.put of one job's key."""
    import os
    if not _POOL or _POOL[0][0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor
        _POOL[:] = [(os.getpid(), ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="udb-artifacts"))]
    return _POOL[0][1]


class Artifacts:
    """Writes one job's artifacts and remembers them for index.json.

    With `parallel`, each put goes to the process's upload pool (upload_pool) and returns at
    once: a job writes a dozen or more artifacts (profile, charts, plotly.js, KPIs, summary),
    and one after the other each waited out its own object-store round trip (~0.3-0.4 s of
    analyze's time in the stack). `flush()` waits for every upload of this job and raises the
    first failure; the index must be written only after it, so it never names an artifact that
    is not stored."""

    def __init__(self, store: TenantStore, job_id: str, *, parallel: bool = False):
        self.store, self.job_id = store, job_id
        self.entries: list[dict] = []
        self._parallel = parallel
        self._pending: list = []

    def put(self, name: str, body: bytes | str, media_type: str, description: str, table: str | None = None,
            **extra):
        data = body.encode() if isinstance(body, str) else body
        key = self.store.artifact_key(self.job_id, name)
        if not self._parallel:
            self.store.put(key, data, content_type=media_type)
        else:
            import contextvars
            # The caller's context (log fields, the trace span) goes with the upload.
            run = contextvars.copy_context().run
            self._pending.append(upload_pool().submit(run, self.store.put, key, data, content_type=media_type))
        self.entries.append({"name": name, "media_type": media_type, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest(), "description": description,
                             "table": table, **extra})
        metrics.artifact_bytes.labels(self.store.tenant).inc(len(data))

    def flush(self) -> None:
        """Wait for every upload started so far; the first failure is raised (after all ended)."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        for error in errors:
            if error is not None:
                raise error

    def close(self) -> None:
        """Drop this job's uploads not started yet and wait for its running ones to end (a
        failed job's artifacts need no index); the shared pool stays for the next job."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # waits; a failure here is the failed job's, already reported

    def put_json(self, name: str, value, description: str, table: str | None = None, **extra):
        self.put(name, json.dumps(value, indent=2, default=str), "application/json", description, table, **extra)


# ---------------------------------------------------------------- the reports plan


def plan_reports(tables: list[str], *, snapshots: set[str] | frozenset = frozenset(), charts: int = 0,
                 chart_png: bool = True) -> list[dict]:
    """The heavy reports of a job, all pending: per table the ydata-profiling report and the
    Evidently summary, the Evidently drift page when the table has a previous snapshot, and
    the PNG charts of the job (one item, one Chromium session)."""
    items = []
    for table in tables:
        items.append(_item(f"ydata:{table}", "ydata", table, f"ydata-profiling report of {table}",
                           [f"ydata-{table}.html"]))
        items.append(_item(f"evidently-summary:{table}", "evidently-summary", table,
                           f"Evidently data summary with tests for {table}",
                           [f"quality-{table}.html", f"quality-{table}.json"]))
        if table in snapshots:
            items.append(_item(f"evidently-drift:{table}", "evidently-drift", table,
                               f"Evidently drift of {table} against its previous snapshot",
                               [f"evidently-drift-{table}.html", f"evidently-drift-{table}.json"]))
    if charts:
        item = _item("png-charts", "png-charts", None, f"PNG images of the {charts} chart(s)", [])
        if not chart_png:
            item.update(state="skipped", reason="PNG charts are turned off (UDB_CHART_PNG=0)")
        items.append(item)
    return items


def _item(report_id: str, kind: str, table: str | None, title: str, artifacts: list[str]) -> dict:
    return {"id": report_id, "kind": kind, "table": table, "title": title, "artifacts": artifacts,
            "state": "pending", "reason": None, "seconds": None, "note": None}


def overall_state(items: list[dict]) -> str:
    """pending while any report is; failed when any failed; skipped when all were; else ready."""
    states = [i["state"] for i in items]
    if "pending" in states:
        return "pending"
    if "failed" in states:
        return "failed"
    if states and all(s == "skipped" for s in states):
        return "skipped"
    return "ready"


def job_reports(items: list[dict], *, reason: str | None = None, seconds: float | None = None) -> dict:
    """The job document's `reports` field: the overall state and one line per report."""
    counts = {state: sum(1 for i in items if i["state"] == state) for state in REPORT_STATES}
    return {"state": overall_state(items), "counts": counts, "reason": reason, "seconds": seconds,
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "items": [{"id": i["id"], "state": i["state"], "reason": i["reason"]} for i in items]}


# ---------------------------------------------------------------- reading and writing the index


def load(store: TenantStore, job_id: str) -> tuple[dict, str]:
    """(index.json as a dict, its ETag)."""
    blob = store.get(store.artifact_key(job_id, INDEX_JSON))
    return json.loads(blob.data), blob.etag


def facts_of(store: TenantStore, job_id: str) -> list[dict]:
    try:
        return json.loads(store.get(store.artifact_key(job_id, "summary.json")).data).get("facts", [])
    except (NotFound, ValueError):
        return []


def save(store: TenantStore, index: dict, *, facts: list[dict] | None = None, if_match: str | None = None) -> str:
    """Write index.html, then index.json (conditionally on `if_match`, when given); the page's
    own entry in the index describes the page as written."""
    job_id = index["job_id"]
    facts = facts_of(store, job_id) if facts is None else facts
    others = [e for e in index["artifacts"] if e["name"] != INDEX_HTML]
    page = render_index_html(index, others + [{"name": INDEX_HTML, "media_type": "text/html", "bytes": None,
                                               "description": ""}], facts).encode()
    store.put(store.artifact_key(job_id, INDEX_HTML), page, content_type="text/html")
    index["artifacts"] = others + [{"name": INDEX_HTML, "media_type": "text/html", "bytes": len(page),
                                    "sha256": hashlib.sha256(page).hexdigest(),
                                    "description": "This report page: every artifact of the job with a line on "
                                                   "what it is", "table": None}]
    body = json.dumps(index, indent=2).encode()
    kw = {"if_match": if_match} if if_match else {}
    etag = store.put(store.artifact_key(job_id, INDEX_JSON), body, content_type="application/json", **kw)
    metrics.artifact_bytes.labels(store.tenant).inc(len(body) + len(page))
    return etag


def update(store: TenantStore, job_id: str, change, attempts: int = 20) -> dict:
    """Read index.json, apply `change(index)` and write it back if nobody else wrote meanwhile
    (If-Match on its ETag); retried on a conflict. Returns the index as written."""
    facts = facts_of(store, job_id)
    for _ in range(attempts):
        index, etag = load(store, job_id)
        change(index)
        try:
            save(store, index, facts=facts, if_match=etag)
            return index
        except PreconditionFailed:
            continue
    raise PreconditionFailed(f"{job_id}/index.json: too many concurrent updates")


def fail_pending(index: dict, reason: str) -> None:
    """Every report still pending fails with `reason` (a delivery that ran out of retries)."""
    for item in index.get("reports", []):
        if item["state"] == "pending":
            item.update(state="failed", reason=reason)


# ---------------------------------------------------------------- the page

def _size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _fact_parts(text: str) -> list[tuple[str, bool]]:
    """A fact as (text, is_code) runs: facts mark names with backticks (Markdown), which the
    page shows as code."""
    return [(part, bool(i % 2)) for i, part in enumerate(text.split("`"))]


def _artifact_rows(entries: list[dict]) -> list[dict]:
    return [{"name": e["name"], "description": e.get("description") or "", "media_type": e.get("media_type") or "",
             "size": _size(e.get("bytes"))} for e in entries]


def _report_rows(items: list[dict], present: set[str]) -> list[dict]:
    """Each report as the page shows it: its links when ready (those stored), the reason when
    failed or skipped, and its note."""
    rows = []
    for item in items:
        seconds = item.get("seconds")
        rows.append({
            "id": item["id"], "title": item["title"], "state": item["state"],
            "links": [a for a in item.get("artifacts") or [] if a in present],
            "seconds": f"{seconds:.1f}" if seconds is not None else None,
            "reason": item.get("reason") or "", "note": item.get("note"),
        })
    return rows


def _table_sections(index: dict, entries: list[dict]) -> list[dict]:
    """Artifacts grouped by table (the job's tables first, in order), then the job-level ones
    with index.json itself."""
    groups: dict[str | None, list[dict]] = {}
    for e in entries:
        if e["name"] != INDEX_HTML:
            groups.setdefault(e.get("table"), []).append(e)
    tables = index["tables"]
    order = [t for t in tables if t in groups] + [t for t in groups if t is not None and t not in tables]
    sections = [{"table": table, "rows": _artifact_rows(groups[table])} for table in order]
    job_level = groups.get(None, []) + [{"name": INDEX_JSON, "media_type": "application/json", "bytes": None,
                                         "description": "Machine-readable index of every artifact of this job "
                                                        "(name, media type, bytes, sha256, description) and "
                                                        "the state of its reports"}]
    sections.append({"table": None, "rows": _artifact_rows(job_level)})
    return sections


def render_index_html(index: dict, entries: list[dict], facts: list[dict] | None = None) -> str:
    """The job's report page (templates/job_index.html, autoescaped): notes, the reports
    (pending, ready with their links, failed with the reason), the summary's facts, a gallery
    of the PNG charts, and every artifact grouped by table, each with its description, media
    type and size, plus index.json itself."""
    items = index.get("reports", [])
    tables = index["tables"]
    present = {e["name"] for e in entries}
    return render(
        __package__, "job_index.html",
        job_id=index["job_id"], tenant=index["tenant"], tables=len(tables),
        count=len([e for e in entries if e["name"] != INDEX_HTML]) + 1,
        refresh=REFRESH_SECONDS if any(i["state"] == "pending" for i in items) else None,
        notes=[{"kind": n.get("kind", "note").replace("_", " "), "message": n.get("message", "")}
               for n in index.get("notes") or []],
        reports=_report_rows(items, present),
        pending=sum(1 for i in items if i["state"] == "pending"),
        facts=[_fact_parts(f["text"]) for f in facts or []],
        pngs=[{"name": e["name"], "description": e.get("description") or ""}
              for e in entries if e.get("media_type") == "image/png"],
        sections=_table_sections(index, entries),
    )

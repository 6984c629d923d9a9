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
import html
import json
from datetime import datetime, timezone

from shared import metrics
from shared.errors import NotFound, PreconditionFailed
from shared.store import TenantStore

INDEX_JSON, INDEX_HTML = "index.json", "index.html"
REPORT_STATES = ("pending", "ready", "failed", "skipped")
REFRESH_SECONDS = 3


UPLOAD_THREADS = 8


class Artifacts:
    """Writes one job's artifacts and remembers them for index.json.

    With `parallel`, each put goes to a small thread pool and returns at once: a job writes a
    dozen or more artifacts (profile, charts, plotly.js, KPIs, summary), and one after the other
    each waited out its own object-store round trip (~0.3-0.4 s of analyze's time in the stack).
    `flush()` waits for every upload and raises the first failure; the index must be written
    only after it, so it never names an artifact that is not stored."""

    def __init__(self, store: TenantStore, job_id: str, *, parallel: bool = False):
        self.store, self.job_id, self.entries = store, job_id, []
        self._pool = None
        self._pending: list = []
        if parallel:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="udb-artifacts")

    def put(self, name: str, body: bytes | str, media_type: str, description: str, table: str | None = None,
            **extra):
        data = body.encode() if isinstance(body, str) else body
        key = self.store.artifact_key(self.job_id, name)
        if self._pool is None:
            self.store.put(key, data, content_type=media_type)
        else:
            import contextvars
            # The caller's context (log fields, the trace span) goes with the upload.
            run = contextvars.copy_context().run
            self._pending.append(self._pool.submit(run, self.store.put, key, data, content_type=media_type))
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
        """Stop the pool: uploads not started are dropped, running ones end (a failed job's
        artifacts need no index)."""
        if self._pool is not None:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

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

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c5cad6;font-size:13px}main{padding:20px 28px;max-width:1200px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 18px;margin-bottom:16px}
h2{font-size:17px;margin:0 0 10px}table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border-bottom:1px solid #eef0f3;padding:4px 10px 4px 0;text-align:left;vertical-align:top}
th{color:#5b6476;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
a{color:#2f55c4;text-decoration:none}a:hover{text-decoration:underline}
.note{background:#fff4e5;color:#5c3b00;border:1px solid #f0c68c;border-radius:6px;padding:8px 12px;margin:0 0 8px}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.gallery a{display:block;width:270px;font-size:12px}
.gallery img{width:270px;height:150px;object-fit:contain;border:1px solid #e1e4ea;border-radius:6px;background:#fff}
ul.facts{margin:0;padding-left:20px;font-size:14px;line-height:1.5}.muted{color:#7a8294;font-size:12px}
code{background:#eef0f3;border-radius:3px;padding:0 3px}
.state{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;font-weight:600}
.state.pending{background:#e8eefc;color:#2f55c4}.state.ready{background:#e4f5e9;color:#1c6b35}
.state.failed{background:#fde8e8;color:#a11d1d}.state.skipped{background:#eef0f3;color:#5b6476}
"""


def _size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _fact_html(text: str) -> str:
    # Facts mark names with backticks (Markdown); show them as code, everything escaped.
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _link(name: str) -> str:
    return f"<a href=\"{html.escape(name, quote=True)}\">{html.escape(name)}</a>"


def _rows(entries: list[dict]) -> str:
    return "".join(
        f"<tr><td>{_link(e['name'])}</td>"
        f"<td>{html.escape(e.get('description') or '')}</td>"
        f"<td class='muted'>{html.escape(e.get('media_type') or '')}</td>"
        f"<td class='num'>{_size(e.get('bytes'))}</td></tr>"
        for e in entries)


def _reports_html(items: list[dict], present: set[str]) -> str:
    if not items:
        return ""
    rows = []
    for item in items:
        state = item["state"]
        if state == "ready":
            what = ", ".join(_link(a) for a in item["artifacts"] if a in present) or "rendered"
            if item.get("seconds") is not None:
                what += f" <span class='muted'>in {item['seconds']:.1f} s</span>"
        elif state == "pending":
            what = "rendering&hellip;"
        else:
            what = html.escape(item.get("reason") or "")
        if item.get("note"):
            what += f"<br><span class='muted'>{html.escape(item['note'])}</span>"
        rows.append(f"<tr id=\"report-{html.escape(item['id'], quote=True)}\"><td>{html.escape(item['title'])}</td>"
                    f"<td><span class='state {state}'>{state}</span></td><td>{what}</td></tr>")
    pending = sum(1 for i in items if i["state"] == "pending")
    lead = (f"<p class='muted'>{pending} report(s) are rendering; this page reloads itself until they are "
            f"ready.</p>" if pending else "")
    return (f"<section id='reports'><h2>Reports</h2>{lead}<table><tr><th>report</th><th>state</th>"
            f"<th>artifacts or reason</th></tr>{''.join(rows)}</table></section>")


def render_index_html(index: dict, entries: list[dict], facts: list[dict] | None = None) -> str:
    """The job's report page: notes, the reports (pending, ready with their links, failed with
    the reason), the summary's facts, a gallery of the PNG charts, and every artifact grouped
    by table, each with its description, media type and size, plus index.json itself."""
    job_id, tenant, tables = index["job_id"], index["tenant"], index["tables"]
    items = index.get("reports", [])
    notes_html = "".join(f"<p class='note'><strong>{html.escape(n.get('kind', 'note').replace('_', ' '))}:</strong> "
                         f"{html.escape(n.get('message', ''))}</p>" for n in index.get("notes") or [])
    facts_html = ""
    if facts:
        facts_html = ("<section><h2>Summary</h2><ul class='facts'>"
                      + "".join(f"<li>{_fact_html(f['text'])}</li>" for f in facts)
                      + "</ul><p class='muted'>Every sentence is generated from the numbers in "
                        "<a href='summary.json'>summary.json</a>.</p></section>")
    pngs = [e for e in entries if e.get("media_type") == "image/png"]
    gallery = ""
    if pngs:
        gallery = "<section><h2>Charts</h2><div class='gallery'>" + "".join(
            f"<a href=\"{html.escape(e['name'], quote=True)}\"><img src=\"{html.escape(e['name'], quote=True)}\" "
            f"alt=\"{html.escape(e.get('description') or e['name'], quote=True)}\">{html.escape(e.get('description') or '')}</a>"
            for e in pngs) + "</div></section>"
    groups: dict[str | None, list[dict]] = {}
    for e in entries:
        if e["name"] == INDEX_HTML:
            continue
        groups.setdefault(e.get("table"), []).append(e)
    head = "<tr><th>artifact</th><th>what it is</th><th>type</th><th>size</th></tr>"
    sections = []
    for table in [t for t in tables if t in groups] + [t for t in groups if t is not None and t not in tables]:
        sections.append(f"<section><h2>Table <code>{html.escape(table)}</code></h2>"
                        f"<table>{head}{_rows(groups[table])}</table></section>")
    job_level = groups.get(None, []) + [{"name": INDEX_JSON, "media_type": "application/json", "bytes": None,
                                         "description": "Machine-readable index of every artifact of this job "
                                                        "(name, media type, bytes, sha256, description) and "
                                                        "the state of its reports"}]
    sections.append(f"<section><h2>Job</h2><table>{head}{_rows(job_level)}</table></section>")
    count = len([e for e in entries if e["name"] != INDEX_HTML]) + 1
    refresh = (f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
               if any(i["state"] == "pending" for i in items) else "")
    present = {e["name"] for e in entries}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>UDB analysis {html.escape(job_id)}</title>
<style>{_CSS}</style></head>
<body><header><h1>Analysis {html.escape(job_id)}</h1>
<p>Tenant {html.escape(tenant)} · {len(tables)} table{'s' if len(tables) != 1 else ''} · {count} artifacts</p></header>
<main>
{notes_html}
{_reports_html(items, present)}
{facts_html}
{gallery}
{''.join(sections)}
</main></body></html>
"""

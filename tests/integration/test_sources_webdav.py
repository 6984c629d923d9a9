"""WebDAV against the real WsgiDAV server of the devstack (PyPI `wsgidav`, serving
.cache/webdav-root): a folder with one table per supported file, a single file, detection by
PROPFIND, bad folders, and the whole pipeline to the warehouse."""
from __future__ import annotations

import shutil
import uuid

import duckdb
import pytest

from shared.core.settings import Settings
from tests.conftest import LOOPBACK

from devstack import services
from functions.discover.detect import detect
from shared.storage import duck
from shared.core import events
from shared.serving.embedded import Dispatcher
from shared.core.errors import SourceError
from shared.sources import SourceEnv, webdav
from shared.core.tenancy import new_job_id
from tests.conftest import write_sales
from shared.storage import lake

pytestmark = pytest.mark.integration
PEERS = Settings(net_allowlist=LOOPBACK)  # settings under which the loopback test peers are reachable

PDF = "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"


@pytest.fixture(scope="module")
def dav():
    """A fresh folder on the running WebDAV server: sales.csv (1,234 rows), items.parquet (500),
    events.ndjson (300), spec.pdf (a real PDF: 304 fragments), readme.bin (skipped), .hidden.csv
    (skipped), a sub-folder (not walked); and an empty folder."""
    before = services.status(["webdav"])["webdav"]["state"]
    services.up(["webdav"])
    name = f"udb-test-{uuid.uuid4().hex[:10]}"
    root = services.WEBDAV_ROOT / name
    (root / "sub").mkdir(parents=True)
    (root.parent / f"{name}-empty").mkdir()
    write_sales(root / "sales.csv", 1234)
    con = duck.connect()
    con.execute(f"COPY (SELECT i AS item_id, 'item ' || i AS label FROM range(500) t(i)) TO '{root / 'items.parquet'}' "
                "(FORMAT parquet)")
    con.execute(f"COPY (SELECT i AS user_id, 'p' || (i % 7) AS page FROM range(300) t(i)) TO '{root / 'events.ndjson'}' "
                "(FORMAT json)")
    con.close()
    shutil.copy(PDF, root / "spec.pdf")
    (root / "readme.bin").write_bytes(b"\x00\x01")
    (root / ".hidden.csv").write_text("a\n1\n")
    (root / "sub" / "deep.csv").write_text("a\n1\n")
    yield {"url": f"{services.endpoints()['webdav']}/{name}/", "name": name}
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(root.parent / f"{name}-empty", ignore_errors=True)
    if before != "up":
        services.down(["webdav"])


def test_folder_catalogue_and_extract_exact_rows(dav, tmp_path):
    catalogue = webdav.inspect(dav["url"], env=SourceEnv(settings=PEERS))
    assert catalogue["provider"] == "webdav" and catalogue["short"] == dav["name"].replace("-", "_")
    streams = {s["name"]: s for s in catalogue["streams"]}
    assert {n: s["format"] for n, s in streams.items()} == {"events": "ndjson", "items": "parquet",
                                                            "sales": "csv", "spec": "pdf"}
    assert {c["name"]: c["type"] for c in streams["sales"]["columns"]} == {
        "order_id": "BIGINT", "region": "VARCHAR", "ordered_at": "TIMESTAMP", "amount": "DOUBLE", "discount": "DOUBLE"}
    assert streams["sales"]["location"] == dav["url"] + "sales.csv"
    assert streams["sales"]["cursor_candidates"] == ["ordered_at"] and streams["items"]["primary_key_candidates"] == ["item_id"]
    expected = {"sales": 1234, "items": 500, "events": 300, "spec": 304}
    for name, stream in streams.items():
        out = tmp_path / name
        assert webdav.extract(stream, out, env=SourceEnv(settings=PEERS), part_bytes=1 << 20) == expected[name]
        assert duckdb.execute(f"SELECT count(*) FROM read_parquet('{out}/*.parquet')").fetchone()[0] == expected[name]


def test_single_file_and_webdav_scheme(dav, tmp_path):
    host = services.endpoints()["webdav"].split("://", 1)[1]
    catalogue = webdav.inspect(f"webdav://{host}/{dav['name']}/items.parquet", env=SourceEnv(settings=PEERS))
    assert [(s["name"], s["format"]) for s in catalogue["streams"]] == [("items", "parquet")]
    assert catalogue["streams"][0]["location"] == f"http://{host}/{dav['name']}/items.parquet"


def test_detection_by_propfind(dav):
    found = detect(dav["url"], settings=PEERS)
    assert found["candidates"][0] == {"provider": "webdav", "confidence": 0.98, "reasons": [
        "an http(s) URL", "PROPFIND answered 207 Multi-Status (a folder)"]}
    assert not found["ambiguous"]
    host = services.endpoints()["webdav"].split("://", 1)[1]
    assert detect(f"webdav://{host}/{dav['name']}/", settings=PEERS)["candidates"][0]["confidence"] == 0.98


def test_bad_folders(dav):
    with pytest.raises(SourceError, match=r"no supported files in the WebDAV folder \(0 files"):
        webdav.inspect(f"{services.endpoints()['webdav']}/{dav['name']}-empty/", env=SourceEnv(settings=PEERS))
    with pytest.raises(SourceError, match=r"404 Not Found"):
        webdav.inspect(f"{services.endpoints()['webdav']}/{dav['name']}-missing/", env=SourceEnv(settings=PEERS))


def test_webdav_end_to_end_to_the_warehouse(dav, settings, tmp_path):
    dispatcher = Dispatcher(settings)
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": dav["url"], "autoanalyze": False},
                                tenant="acme", job_id=job, function="test")
    assert [e["type"] for e in dispatcher.publish(request)][-1] == events.WAREHOUSE_LOADED
    ctx = dispatcher.context("cli")
    short = dav["name"].replace("-", "_")
    assert ctx.jobs("acme").get(job)["tables"] == {f"{short}__events": {"rows": 300}, f"{short}__items": {"rows": 500},
                                                   f"{short}__sales": {"rows": 1234}, f"{short}__spec": {"rows": 304}}
    with lake.reader(ctx.tenant_store("acme")) as w:
        assert w.execute(f"SELECT count(*), sum(order_id) FROM {short}__sales").fetchone() == (1234, 1234 * 1235 // 2)

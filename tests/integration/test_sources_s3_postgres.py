"""The S3 and PostgreSQL source providers against a real MinIO and a real PostgreSQL.

Known data in, exact answers out: row counts, column types, primary keys, sums. Bad hints
(missing bucket or key, wrong password, closed port, silent server) fail fast with a
SourceError that says why, and never leak a password.
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import boto3
import duckdb
import psycopg
import pytest
from botocore.config import Config

from devstack import services
from functions.discover.detect import detect
from functions.discover.handler import handle as discover
from functions.sync.handler import handle as sync
from shared.core import events
from shared.core.errors import SourceError, TransientError
from shared.serving.runtime import invoke
from shared.sources import SourceEnv, connector_for, files, postgres, redact, s3
from shared.core.settings import Settings
from tests.conftest import LOOPBACK, write_sales

pytestmark = pytest.mark.integration
PEERS = Settings(net_allowlist=LOOPBACK)  # settings under which the loopback test peers are reachable

CSV_ROWS = 12_345
PG_ROWS = 10_000
TENANT = "acme"


def parquet_rows(out: Path) -> tuple[int, list[Path]]:
    parts = sorted(out.glob("*.parquet"))
    assert parts, f"no parts in {out}"
    return duckdb.execute(f"SELECT count(*) FROM read_parquet('{out}/*.parquet')").fetchone()[0], parts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ================================================================ S3

@pytest.fixture(scope="module")
def s3cfg(stack_services):
    user, password = services.minio_credentials()
    return s3.S3Config(services.endpoints()["s3"], user, password)


@pytest.fixture(scope="module")
def raw_s3(s3cfg):
    return boto3.client("s3", endpoint_url=s3cfg.endpoint, aws_access_key_id=s3cfg.access_key,
                        aws_secret_access_key=s3cfg.secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture(scope="module")
def bucket(raw_s3, tmp_path_factory):
    """A fresh bucket: data/ (sales.csv: write_sales with 12_345 rows, items.parquet: 1_000 rows,
    notes.bin: not data), other/ (a ragged CSV, a fake Parquet), empty/ (a 0-byte CSV),
    formats/ (TSV, NDJSON, JSON, and two objects both named part.csv)."""
    tmp = tmp_path_factory.mktemp("s3src")
    sales = write_sales(tmp / "sales.csv", CSV_ROWS)
    items = tmp / "items.parquet"
    duckdb.execute(f"""COPY (SELECT i::INTEGER AS item_id, 'item ' || i AS label, (i * 0.25)::DOUBLE AS price,
                               DATE '2024-01-01' + i::INTEGER AS added_on, i % 3 = 0 AS active
                             FROM range(1000) t(i)) TO '{items}' (FORMAT parquet)""")
    ragged = ["id,name,amount"] + [f"{i},n{i},{i * 1.5}" for i in range(1, 5000)]
    ragged[3000] = "3000,n3000,45.0,extra"
    name = f"udb-src-{uuid.uuid4().hex[:10]}"
    raw_s3.create_bucket(Bucket=name)
    try:
        raw_s3.upload_file(str(sales), name, "data/sales.csv")
        raw_s3.upload_file(str(items), name, "data/items.parquet")
        raw_s3.put_object(Bucket=name, Key="data/notes.bin", Body=b"\x00\x01")
        raw_s3.put_object(Bucket=name, Key="other/ragged.csv", Body=("\n".join(ragged) + "\n").encode())
        raw_s3.put_object(Bucket=name, Key="other/fake.parquet", Body=b"not parquet at all")
        raw_s3.put_object(Bucket=name, Key="empty/nothing.csv", Body=b"")
        raw_s3.put_object(Bucket=name, Key="formats/regions.tsv", Body=b"code\tname\n1\tnorth\n2\tsouth\n3\teast\n")
        raw_s3.put_object(Bucket=name, Key="formats/clicks.ndjson",
                          Body="".join(f'{{"user": {i}, "page": "p{i % 7}"}}\n' for i in range(500)).encode())
        raw_s3.put_object(Bucket=name, Key="formats/config.json",
                          Body=json.dumps([{"key": f"k{i}", "value": i * 2} for i in range(40)]).encode())
        raw_s3.put_object(Bucket=name, Key="formats/a/part.csv", Body=b"x\n1\n2\n")
        raw_s3.put_object(Bucket=name, Key="formats/b/part.csv", Body=b"x\n3\n")
        yield {"name": name, "sales": sales, "items": items}
    finally:
        for page in raw_s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
            if keys:
                raw_s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        raw_s3.delete_bucket(Bucket=name)


def test_s3_prefix_catalogue_has_one_stream_per_supported_object(bucket, s3cfg):
    catalogue = s3.inspect(f"s3://{bucket['name']}/data/", config=s3cfg)
    assert catalogue["provider"] == "s3"
    assert catalogue["short"] == bucket["name"].replace("-", "_")
    streams = {s["name"]: s for s in catalogue["streams"]}
    assert sorted(streams) == ["items", "sales"]  # notes.bin is not a data file
    sales, items = streams["sales"], streams["items"]
    assert sales["format"] == "csv" and sales["location"] == f"s3://{bucket['name']}/data/sales.csv"
    assert {c["name"]: c["type"] for c in sales["columns"]} == {
        "order_id": "BIGINT", "region": "VARCHAR", "ordered_at": "TIMESTAMP",
        "amount": "DOUBLE", "discount": "DOUBLE"}
    # The same file read locally is described identically, its sniffed dialect too (sync states it).
    local = files.inspect(str(bucket["sales"]), env=SourceEnv())["streams"][0]
    assert sales["columns"] == local["columns"]
    assert sales["options"] == {"csv": {"delim": ",", "quote": "", "escape": "", "header": True}} == local["options"]
    assert "options" not in items  # UDB's own S3 and no CSV: nothing to keep
    assert sales["cursor_candidates"] == ["ordered_at"]
    assert sales["primary_key_candidates"] == ["order_id"]
    assert sales["bytes"] == bucket["sales"].stat().st_size
    assert items["format"] == "parquet"
    assert {c["name"]: c["type"] for c in items["columns"]} == {
        "item_id": "INTEGER", "label": "VARCHAR", "price": "DOUBLE", "added_on": "DATE",
        "active": "BOOLEAN"}
    assert items["cursor_candidates"] == ["added_on"]
    json.dumps(catalogue)  # storable as is


def test_s3_prefix_without_trailing_slash_and_single_object(bucket, s3cfg):
    assert [s["name"] for s in s3.inspect(f"s3://{bucket['name']}/data", config=s3cfg)["streams"]] == \
        ["items", "sales"]
    single = s3.inspect(f"s3://{bucket['name']}/data/items.parquet", config=s3cfg)
    assert [s["name"] for s in single["streams"]] == ["items"]


def test_s3_small_and_large_objects_are_described_the_same(bucket, s3cfg, monkeypatch):
    """An object up to SMALL_OBJECT_BYTES is read whole and described locally; a larger one in
    place through httpfs. Both give the same catalogue."""
    small = s3.inspect(f"s3://{bucket['name']}/formats/", config=s3cfg)
    monkeypatch.setattr(s3, "SMALL_OBJECT_BYTES", 0)
    assert s3.inspect(f"s3://{bucket['name']}/formats/", config=s3cfg) == small
    assert {s["name"]: (s.get("options") or {}).get("csv", {}).get("delim") for s in small["streams"]} == {
        "a_part": ",", "b_part": ",", "clicks": None, "config": None, "regions": "\t"}


@pytest.mark.parametrize("small_limit", [s3.SMALL_OBJECT_BYTES, 0], ids=["read-whole", "in-place"])
def test_s3_extract_csv_exact_rows_and_values(bucket, s3cfg, tmp_path, monkeypatch, small_limit):
    monkeypatch.setattr(s3, "SMALL_OBJECT_BYTES", small_limit)
    stream = s3.inspect(f"s3://{bucket['name']}/data/sales.csv", config=s3cfg)["streams"][0]
    out = tmp_path / "parts"
    started = time.monotonic()
    rows = s3.extract(stream, out, part_bytes=64 * 1024, config=s3cfg)
    elapsed = time.monotonic() - started
    assert rows == CSV_ROWS
    count, parts = parquet_rows(out)
    assert count == CSV_ROWS
    total, nulls, ids = duckdb.execute(
        f"SELECT sum(amount), count(*) FILTER (WHERE discount IS NULL), count(DISTINCT order_id) "
        f"FROM read_parquet('{out}/*.parquet')").fetchone()
    assert total == sum(i % 100 for i in range(CSV_ROWS))
    assert nulls == len(range(0, CSV_ROWS, 10))
    assert ids == CSV_ROWS
    assert elapsed < 30


def test_s3_extract_parquet_keeps_types(bucket, s3cfg, tmp_path):
    stream = s3.inspect(f"s3://{bucket['name']}/data/items.parquet", config=s3cfg)["streams"][0]
    out = tmp_path / "parts"
    assert s3.extract(stream, out, part_bytes=64 * 1024 * 1024, config=s3cfg) == 1000
    described = duckdb.execute(f"DESCRIBE SELECT * FROM read_parquet('{out}/*.parquet')").fetchall()
    assert [(r[0], r[1]) for r in described] == [(c["name"], c["type"]) for c in stream["columns"]]
    assert duckdb.execute(f"SELECT sum(price), count(*) FILTER (WHERE active) "
                          f"FROM read_parquet('{out}/*.parquet')").fetchone() == \
        (sum(i * 0.25 for i in range(1000)), len(range(0, 1000, 3)))


@pytest.mark.parametrize("suffix, message", [
    ("data/missing.csv", "no such object"),
    ("nothing-here/", "no objects under the prefix"),
    ("data/notes.bin", "unsupported file type '.bin'"),
    ("other/fake.parquet", "not a Parquet file"),
    ("empty/nothing.csv", "object is empty"),
])
def test_s3_bad_hints_are_source_errors(bucket, s3cfg, suffix, message):
    with pytest.raises(SourceError, match=message.replace("(", r"\(")):
        s3.inspect(f"s3://{bucket['name']}/{suffix}", config=s3cfg)


def test_s3_tsv_ndjson_json_and_same_named_objects(bucket, s3cfg, tmp_path):
    catalogue = s3.inspect(f"s3://{bucket['name']}/formats/", config=s3cfg)
    streams = {s["name"]: s for s in catalogue["streams"]}
    # Two objects called part.csv in different "folders" are told apart by their path.
    assert sorted(streams) == ["a_part", "b_part", "clicks", "config", "regions"]
    assert [(s["format"], s["location"].rsplit("/", 1)[1]) for s in catalogue["streams"]] == [
        ("csv", "part.csv"), ("csv", "part.csv"), ("ndjson", "clicks.ndjson"), ("json", "config.json"),
        ("tsv", "regions.tsv")]
    assert streams["regions"]["columns"] == [{"name": "code", "type": "BIGINT"}, {"name": "name", "type": "VARCHAR"}]
    assert streams["clicks"]["columns"] == [{"name": "user", "type": "BIGINT"}, {"name": "page", "type": "VARCHAR"}]
    assert streams["config"]["columns"] == [{"name": "key", "type": "VARCHAR"}, {"name": "value", "type": "BIGINT"}]
    expected = {"a_part": 2, "b_part": 1, "clicks": 500, "config": 40, "regions": 3}
    for name, stream in streams.items():
        assert s3.extract(stream, tmp_path / name, part_bytes=1 << 20, config=s3cfg) == expected[name], name
    assert duckdb.execute(f"SELECT sum(value) FROM read_parquet('{tmp_path}/config/*.parquet')").fetchone()[0] == \
        sum(i * 2 for i in range(40))


def test_s3_ragged_csv_names_the_line(bucket, s3cfg, raw_s3, tmp_path):
    # Within the first bytes: refused at discovery, as a local file would be.
    with pytest.raises(SourceError, match="ragged.csv: ragged rows: line 3001 has 4 fields, expected 3"):
        s3.inspect(f"s3://{bucket['name']}/other/ragged.csv", config=s3cfg)
    # Far down the object: discovery sees a fine sample, the copy names the line.
    late = ["id,name,amount"] + [f"{i},n{i},{i * 1.5}" for i in range(1, 50_000)]
    late[45_000] = "45000,n45000,1.0,extra"
    raw_s3.put_object(Bucket=bucket["name"], Key="late/ragged.csv", Body=("\n".join(late) + "\n").encode())
    stream = s3.inspect(f"s3://{bucket['name']}/late/ragged.csv", config=s3cfg)["streams"][0]
    assert [c["name"] for c in stream["columns"]] == ["id", "name", "amount"]
    with pytest.raises(SourceError, match="ragged.csv: ragged rows: line 45001 has 4 fields, expected 3"):
        s3.extract(stream, tmp_path / "out", part_bytes=1 << 20, config=s3cfg)


def test_s3_missing_bucket_is_a_source_error(s3cfg):
    for hint in ("s3://udb-no-such-bucket-zz/x.csv", "s3://udb-no-such-bucket-zz/", "s3://udb-no-such-bucket-zz"):
        with pytest.raises(SourceError, match="bucket 'udb-no-such-bucket-zz' does not exist"):
            s3.inspect(hint, config=s3cfg)


def test_s3_object_removed_after_discovery(bucket, s3cfg, raw_s3, tmp_path):
    raw_s3.copy_object(Bucket=bucket["name"], Key="tmp/gone.csv",
                       CopySource={"Bucket": bucket["name"], "Key": "data/sales.csv"})
    stream = s3.inspect(f"s3://{bucket['name']}/tmp/gone.csv", config=s3cfg)["streams"][0]
    raw_s3.delete_object(Bucket=bucket["name"], Key="tmp/gone.csv")
    with pytest.raises(SourceError, match="disappeared since discovery"):
        s3.extract(stream, tmp_path / "out", part_bytes=1 << 20, config=s3cfg)
    gone_bucket = dict(stream, location="s3://udb-no-such-bucket-zz/tmp/gone.csv")
    with pytest.raises(SourceError, match="does not exist"):
        s3.extract(gone_bucket, tmp_path / "out", part_bytes=1 << 20, config=s3cfg)


def test_s3_wrong_credentials_are_a_source_error(bucket, s3cfg):
    wrong = s3.S3Config(s3cfg.endpoint, s3cfg.access_key, "not-the-secret")
    with pytest.raises(SourceError, match="access denied"):
        s3.inspect(f"s3://{bucket['name']}/data/", config=wrong)


def test_s3_unreachable_endpoint_is_transient_and_fast():
    cfg = s3.S3Config(f"http://127.0.0.1:{free_port()}", "a", "b")
    started = time.monotonic()
    with pytest.raises(TransientError, match="unreachable"):
        s3.inspect("s3://bucket/key.csv", config=cfg)
    assert time.monotonic() - started < 15


def test_s3_config_comes_from_udb_settings(s3cfg, bucket, settings):
    from dataclasses import replace

    udb = replace(settings, s3_endpoint=s3cfg.endpoint, s3_access_key=s3cfg.access_key, s3_secret_key=s3cfg.secret_key)
    assert s3.S3Config.from_settings(udb) == s3cfg
    env = SourceEnv(settings=udb)  # the caller's settings, not the environment
    assert [s["name"] for s in connector_for("s3").inspect(f"s3://{bucket['name']}/data/", env)["streams"]] == \
        ["items", "sales"]


def _with_udb_s3(settings, s3cfg, **more):
    """Contexts whose settings name the test MinIO as UDB's own object store."""
    from dataclasses import replace

    from shared.serving import runtime
    settings = replace(settings, s3_endpoint=s3cfg.endpoint, s3_access_key=s3cfg.access_key,
                       s3_secret_key=s3cfg.secret_key, **more)
    return {f: runtime.start(f, settings) for f in ("discover", "sync")}


def test_s3_discover_and_sync_through_the_handlers(s3cfg, bucket, settings):
    ctxs = _with_udb_s3(settings, s3cfg)
    hint = f"s3://{bucket['name']}/data/"
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=TENANT,
                                job_id="job-00000000000053a1", function="test")
    discovered = invoke(discover, request, ctxs["discover"])
    assert discovered["type"] == events.SOURCE_DISCOVERED
    source = events.event_data(discovered)["source"]
    assert source["provider"] == "s3" and source["confidence"] == 0.95
    staged = invoke(sync, discovered, ctxs["sync"])
    assert staged["type"] == events.SYNC_STAGED
    tables = {t["stream"]: t["rows"] for t in events.event_data(staged)["tables"]}
    assert tables == {"items": 1000, "sales": CSV_ROWS}


@pytest.mark.security
def test_s3_udb_own_bucket_is_never_a_source(monkeypatch, s3cfg, bucket, settings, raw_s3):
    # UDB's bucket holds every tenant's warehouse, staging and artifacts: reading it through a
    # source would cross tenants. Pretend this test bucket is UDB's own and plant another
    # tenant's staged data in it.
    raw_s3.put_object(Bucket=bucket["name"], Key="tenants/other/staging/job-0000000000000001/part-0.csv",
                      Body=b"secret,value\nx,1\n")
    from dataclasses import replace

    own = replace(settings, s3_endpoint=s3cfg.endpoint, s3_access_key=s3cfg.access_key,
                  s3_secret_key=s3cfg.secret_key, bucket=bucket["name"])
    hint = f"s3://{bucket['name']}/tenants/other/staging/"
    with pytest.raises(SourceError, match="UDB's own bucket"):
        connector_for("s3").inspect(hint, SourceEnv(settings=own))
    # Not even the detection probe looks (whether a key exists would leak).
    assert not any("ListObjectsV2" in r for c in detect(hint, settings=own)["candidates"] for r in c["reasons"])
    # A catalogue made elsewhere does not open it at sync either.
    stream = {"name": "part_0", "format": "csv", "location": f"s3://{bucket['name']}/tenants/other/x.csv"}
    with pytest.raises(SourceError, match="UDB's own bucket"):
        s3.extract(stream, Path("/nonexistent"), part_bytes=1024, env=SourceEnv(settings=own))
    # Through the handler: a failed job naming the reason, nothing staged.
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=TENANT,
                                job_id="job-00000000000053b1", function="test")
    reply = invoke(discover, request, _with_udb_s3(settings, s3cfg, bucket=bucket["name"])["discover"])
    assert reply["type"] == events.JOB_FAILED and "UDB's own bucket" in events.event_data(reply)["reason"]
    # With UDB_S3_SOURCE_BUCKETS set, UDB's keys read only those buckets.
    restricted = replace(own, bucket="udb", s3_source_buckets="shared-data,reference")
    with pytest.raises(SourceError, match="not a source bucket here"):
        connector_for("s3").inspect(f"s3://{bucket['name']}/data/", SourceEnv(settings=restricted))


@pytest.mark.security
def test_s3_another_endpoint_in_options_keeps_its_key_secret(monkeypatch, s3cfg, bucket, settings):
    from dataclasses import replace

    from shared.serving import runtime
    from shared.sources import SourceEnv
    # UDB's own store is not S3 here: the source's S3 comes only from the options.
    for name in ("UDB_S3_ENDPOINT", "UDB_S3_ACCESS_KEY", "UDB_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    options = {"endpoint": s3cfg.endpoint, "access_key_id": s3cfg.access_key,
               "secret_access_key": s3cfg.secret_key}
    hint = f"s3://{bucket['name']}/data/"
    # The endpoint passes the SSRF guard: a loopback S3 is refused unless allowlisted.
    guarded = runtime.start("discover", replace(settings, net_allowlist=""))
    with pytest.raises(SourceError, match="127.0.0.1"):
        s3.inspect(hint, env=SourceEnv.of(guarded, TENANT, options))
    allowed = replace(settings, net_allowlist="127.0.0.1")
    ctxs = {f: runtime.start(f, allowed) for f in ("discover", "sync")}
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "options": options}, tenant=TENANT,
                                job_id="job-00000000000053c1", function="test")
    discovered = invoke(discover, request, ctxs["discover"])
    assert discovered["type"] == events.SOURCE_DISCOVERED, events.event_data(discovered)
    text = json.dumps(events.event_data(discovered))
    assert s3cfg.secret_key not in text and "secret://src-" in text
    doc = json.dumps(ctxs["discover"].jobs(TENANT).get("job-00000000000053c1"))
    assert s3cfg.secret_key not in doc
    names = ctxs["discover"].secrets.names(TENANT)
    assert len([n for n in names if n.endswith("-s3-secret")]) == 1
    staged = invoke(sync, discovered, ctxs["sync"])
    assert staged["type"] == events.SYNC_STAGED
    assert {t["stream"]: t["rows"] for t in events.event_data(staged)["tables"]} == {"items": 1000, "sales": CSV_ROWS}
    # Half a key pair, an unknown option or a non-URL endpoint is named.
    for bad, message in (({"access_key_id": "a"}, "go together"), ({"bucket_region": "x"}, "unknown fields"),
                         ({"endpoint": "minio:9000"}, "http\\(s\\) URL")):
        with pytest.raises(SourceError, match=message):
            s3.inspect(hint, env=SourceEnv.of(ctxs["discover"], TENANT, bad))


class _RedirectingS3(http.server.BaseHTTPRequestHandler):
    """A hostile "S3 endpoint" test peer: HEAD says the object exists (so reads get past boto3's
    checks), every GET is redirected to `target`."""
    target = ""
    size = 4096

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.send_header("ETag", '"0123456789abcdef"')
        self.send_header("Last-Modified", "Thu, 26 Nov 2026 00:00:00 GMT")
        self.end_headers()

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class _Metadata(http.server.BaseHTTPRequestHandler):
    """Stands in for a metadata service on 127.0.0.2 (loopback, not allowlisted): counts hits."""
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        body = b"secret,value\nrole,admin\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.security
def test_s3_endpoint_redirects_are_checked_by_the_ssrf_guard(settings, tmp_path):
    # DuckDB's httpfs follows redirects by itself; an endpoint from a hint's options could send
    # it to a metadata service. Every connection goes through the guarded egress proxy instead.
    from dataclasses import replace

    from shared.serving import runtime
    from shared.sources import SourceEnv
    metadata = http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Metadata)
    _RedirectingS3.target = f"http://127.0.0.2:{metadata.server_address[1]}"
    hostile = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectingS3)
    for server in (metadata, hostile):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ctx = runtime.start("sync", replace(settings, net_allowlist="127.0.0.1"))
        options = {"endpoint": f"http://127.0.0.1:{hostile.server_address[1]}", "access_key_id": "k",
                   "secret_access_key": "s"}
        env = SourceEnv.of(ctx, TENANT, options)
        # boto3 (listing, sniffing) does not follow a redirect to another host: it gives up.
        with pytest.raises(SourceError, match="refused to connect to 127.0.0.2|keeps redirecting|302"):
            s3.inspect("s3://data/x.parquet", env=env)
        # DuckDB does follow it, and the proxy refuses the hop.
        stream = {"name": "x", "format": "parquet", "location": "s3://data/x.parquet",
                  "options": {**options, "secret_access_key": env.keep_secret("k", "s")}}
        # A small object is read whole by boto3 (s3.read_whole), which does not follow it either.
        with pytest.raises(SourceError, match="refused to connect to 127.0.0.2|keeps redirecting|302"):
            connector_for("s3").extract(stream, tmp_path / "out-small", env=env, part_bytes=1024)
        # A large one is read in place by DuckDB, which does follow it, and the proxy refuses the hop.
        _RedirectingS3.size = s3.SMALL_OBJECT_BYTES + 1
        with pytest.raises(SourceError, match="refused to connect to 127.0.0.2"):
            s3.extract(stream, tmp_path / "out", env=env, part_bytes=1024)
        assert _Metadata.hits == 0
    finally:
        _RedirectingS3.size = 4096
        for server in (metadata, hostile):
            server.shutdown()
            server.server_close()


# ================================================================ PostgreSQL

@pytest.fixture(scope="module")
def pg_server(stack_services):
    return postgres.parse(services.endpoints()["postgres"])


@pytest.fixture(scope="module")
def pg_db(pg_server):
    """A fresh database: public.orders (PG_ROWS rows, PK id, a timestamptz), sales.items
    (composite PK), public.big_orders (a view), public.events (300_000 rows, no PK)."""
    name = f"udbtest_{uuid.uuid4().hex[:8]}"
    admin = pg_server.uri(password=pg_server.password)
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres.Dsn(pg_server.host, pg_server.port, name, pg_server.user, pg_server.password)
    try:
        with psycopg.connect(dsn.uri(password=dsn.password), autocommit=True) as con:
            con.execute(f"""
                CREATE TABLE orders (
                    id bigint PRIMARY KEY,
                    customer text NOT NULL,
                    amount numeric(12, 2),
                    created_at timestamptz NOT NULL,
                    note text
                );
                INSERT INTO orders
                SELECT i, 'customer-' || (i % 97), (i % 1000) / 4.0,
                       TIMESTAMPTZ '2024-01-01 00:00:00+00' + make_interval(mins => i),
                       CASE WHEN i % 5 = 0 THEN NULL ELSE 'n' || i END
                FROM generate_series(1, {PG_ROWS}) AS g(i);
                CREATE SCHEMA sales;
                CREATE TABLE sales.items (order_id int, line int, qty int NOT NULL, PRIMARY KEY (order_id, line));
                INSERT INTO sales.items SELECT i / 3, i % 3, i FROM generate_series(0, 299) AS g(i);
                CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount >= 200;
                CREATE TABLE events AS SELECT i AS id, md5(i::text) AS digest FROM generate_series(1, 300000) AS g(i);
            """)
        yield dsn
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_env(tmp_path, monkeypatch):
    """Tenant acme's provider env: its own secret store, where discovery keeps the password."""
    from shared.security.secrets import LocalSecretStore
    from shared.sources import SourceEnv
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return SourceEnv(tenant=TENANT, secrets=LocalSecretStore(tmp_path / "secrets"),
                     settings=PEERS)


def full_dsn(dsn: postgres.Dsn, **query) -> str:
    uri = dsn.uri(password=dsn.password)
    return uri + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def expected_amount_sum() -> float:
    return sum((i % 1000) / 4 for i in range(1, PG_ROWS + 1))


def test_pg_catalogue_tables_columns_and_keys(pg_db, pg_env):
    catalogue = postgres.inspect(full_dsn(pg_db), env=pg_env)
    assert catalogue["provider"] == "postgres" and catalogue["short"] == pg_db.dbname
    streams = {s["name"]: s for s in catalogue["streams"]}
    assert sorted(streams) == ["big_orders", "events", "orders", "sales_items"]
    orders = streams["orders"]
    assert orders["format"] == "postgres"
    assert orders["columns"] == [{"name": "id", "type": "BIGINT"}, {"name": "customer", "type": "VARCHAR"},
                                 {"name": "amount", "type": "DECIMAL(12,2)"},
                                 {"name": "created_at", "type": "TIMESTAMP WITH TIME ZONE"},
                                 {"name": "note", "type": "VARCHAR"}]
    assert orders["primary_key_candidates"] == ["id"]
    assert orders["cursor_candidates"] == ["created_at"]
    assert orders["bytes"] > 0
    assert streams["sales_items"]["primary_key_candidates"] == ["order_id", "line"]
    assert streams["big_orders"]["primary_key_candidates"] == []
    assert orders["location"] == (f"postgresql://{pg_db.user}@{pg_db.host}:{pg_db.port}/{pg_db.dbname}"
                                  f"?schema=public&table=orders")


def test_pg_password_never_in_the_catalogue_but_in_the_tenants_secret_store(pg_db, pg_env, tmp_path):
    catalogue = postgres.inspect(full_dsn(pg_db), env=pg_env)
    text = json.dumps(catalogue)
    assert f":{pg_db.password}@" not in text  # (the devstack password is also the user name)
    assert all(postgres.parse(s["location"]).password is None for s in catalogue["streams"])
    name = postgres.secret_name(pg_db)
    assert {s["options"]["password"] for s in catalogue["streams"]} == {f"secret://{name}"}
    assert pg_env.secrets.names(TENANT) == [name]
    assert pg_env.secrets.get(TENANT, name) == pg_db.password
    stored = (tmp_path / "secrets" / f"{TENANT}.enc")
    assert pg_db.password.encode() not in stored.read_bytes() and stored.stat().st_mode & 0o777 == 0o600
    # Discovering again keeps the one entry.
    postgres.inspect(full_dsn(pg_db, table="orders"), env=pg_env)
    assert pg_env.secrets.names(TENANT) == [name]


def test_pg_extract_exact_rows_and_sum(pg_db, pg_env, tmp_path):
    streams = {s["name"]: s for s in postgres.inspect(full_dsn(pg_db), env=pg_env)["streams"]}
    out = tmp_path / "orders"
    started = time.monotonic()
    rows = postgres.extract(streams["orders"], out, part_bytes=64 * 1024, env=pg_env)
    elapsed = time.monotonic() - started
    assert rows == PG_ROWS
    count, parts = parquet_rows(out)
    assert count == PG_ROWS
    total, ids, nulls, first, last = duckdb.execute(
        f"SELECT sum(amount), count(DISTINCT id), count(*) FILTER (WHERE note IS NULL), "
        f"min(created_at), max(created_at) FROM read_parquet('{out}/*.parquet')").fetchone()
    assert float(total) == expected_amount_sum()
    assert ids == PG_ROWS and nulls == PG_ROWS // 5
    assert (last - first).total_seconds() == (PG_ROWS - 1) * 60
    types = dict(duckdb.execute(f"SELECT column_name, column_type FROM "
                                f"(DESCRIBE SELECT * FROM read_parquet('{out}/*.parquet'))").fetchall())
    assert types == {c["name"]: c["type"] for c in streams["orders"]["columns"]}
    assert postgres.extract(streams["sales_items"], tmp_path / "items", part_bytes=1 << 20, env=pg_env) == 300
    assert postgres.extract(streams["big_orders"], tmp_path / "view", part_bytes=1 << 20, env=pg_env) == \
        sum(1 for i in range(1, PG_ROWS + 1) if (i % 1000) / 4 >= 200)
    assert elapsed < 30


def test_pg_extract_is_chunked_into_parts(pg_db, pg_env, tmp_path):
    stream = postgres.inspect(full_dsn(pg_db, table="events"), env=pg_env)["streams"][0]
    out = tmp_path / "events"
    assert postgres.extract(stream, out, part_bytes=2 * 1024 * 1024, env=pg_env) == 300_000
    count, parts = parquet_rows(out)
    assert count == 300_000 and len(parts) > 1
    assert [p.name for p in parts] == [f"part-{i}.parquet" for i in range(len(parts))]
    assert duckdb.execute(f"SELECT count(DISTINCT id), sum(id) FROM read_parquet('{out}/*.parquet')").fetchone() == \
        (300_000, 300_000 * 300_001 // 2)


def test_pg_table_parameter_narrows_to_one_stream(pg_db, pg_env):
    for query, name in [({"table": "orders"}, "orders"), ({"table": "sales.items"}, "sales_items"),
                        ({"schema": "sales", "table": "items"}, "sales_items")]:
        streams = postgres.inspect(full_dsn(pg_db, **query), env=pg_env)["streams"]
        assert [s["name"] for s in streams] == [name]
    with pytest.raises(SourceError, match="no readable table 'public.nope'"):
        postgres.inspect(full_dsn(pg_db, table="public.nope"), env=pg_env)


def test_pg_password_comes_back_from_the_tenants_store_only(pg_db, pg_env, tmp_path, monkeypatch):
    # A redacted hint (as stored in the source document) can be discovered again by the tenant.
    postgres.inspect(full_dsn(pg_db, table="orders"), env=pg_env)
    redacted = redact(full_dsn(pg_db, table="orders"))
    assert redacted == f"postgresql://{pg_db.user}:***@{pg_db.host}:{pg_db.port}/{pg_db.dbname}?table=orders"
    stream = postgres.inspect(redacted, env=pg_env)["streams"][0]
    assert stream["options"] == {"password": f"secret://{postgres.secret_name(pg_db)}"}
    assert postgres.extract(stream, tmp_path / "a", part_bytes=1 << 20, env=pg_env) == PG_ROWS
    # libpq's own sources are never used: PGPASSWORD is ignored ...
    monkeypatch.setenv("PGPASSWORD", pg_db.password)
    bare = {k: v for k, v in stream.items() if k != "options"}
    with pytest.raises(SourceError, match="no password supplied.*never used"):
        postgres.extract(bare, tmp_path / "b", part_bytes=1 << 20, env=SourceEnv(settings=pg_env.settings))
    # ... and a bare module call (no tenant, no store) keeps nothing.
    catalogue = connector_for("postgres").inspect(full_dsn(pg_db, table="sales.items"), SourceEnv(settings=pg_env.settings))
    assert "options" not in catalogue["streams"][0]


def test_pg_wrong_password_is_a_clear_source_error(pg_db, pg_env):
    hint = full_dsn(postgres.Dsn(pg_db.host, pg_db.port, pg_db.dbname, pg_db.user, "Wr0ng-s3cret"))
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        postgres.inspect(hint, env=pg_env)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert message == (f'postgres {pg_db.user}@{pg_db.host}:{pg_db.port}/{pg_db.dbname}: '
                       f'password authentication failed for user "{pg_db.user}"')
    assert "Wr0ng-s3cret" not in message and "\n" not in message
    assert pg_env.secrets.names(TENANT) == []  # a failed login records nothing


def test_pg_unreachable_port_is_a_fast_source_error(pg_db, pg_env):
    port = free_port()
    started = time.monotonic()
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}/.*Connection refused"):
        postgres.inspect(f"postgresql://u:secret@127.0.0.1:{port}/db", env=pg_env)
    assert time.monotonic() - started < 5


def test_pg_silent_server_times_out_within_connect_timeout(pg_env):
    # A real TCP listener that accepts and never speaks: libpq waits for the server's answer,
    # and connect_timeout=5 ends the wait.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match="timeout"):
            postgres.inspect(f"postgresql://u:secret@127.0.0.1:{port}/db", env=pg_env)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
    assert 4 <= elapsed < 12


def test_pg_missing_database_and_bad_dsns(pg_db, pg_env):
    with pytest.raises(SourceError, match='database "udb_no_such_db" does not exist'):
        postgres.inspect(full_dsn(postgres.Dsn(pg_db.host, pg_db.port, "udb_no_such_db", pg_db.user,
                                               pg_db.password)), env=pg_env)
    with pytest.raises(SourceError, match="port is not a number"):
        postgres.inspect("postgresql://u:p@127.0.0.1:notaport/db", env=pg_env)
    with pytest.raises(SourceError, match="unsupported parameter 'passfile'") as info:
        postgres.inspect("postgresql://u:topsecret@127.0.0.1:5432/db?passfile=/etc/shadow", env=pg_env)
    assert "topsecret" not in str(info.value)


def test_pg_table_dropped_after_discovery(pg_db, pg_env, tmp_path):
    with psycopg.connect(pg_db.uri(password=pg_db.password), autocommit=True) as con:
        con.execute("CREATE TABLE short_lived AS SELECT 1 AS x")
    stream = postgres.inspect(full_dsn(pg_db, table="short_lived"), env=pg_env)["streams"][0]
    with psycopg.connect(pg_db.uri(password=pg_db.password), autocommit=True) as con:
        con.execute("DROP TABLE short_lived")
    with pytest.raises(SourceError, match="table public.short_lived disappeared since discovery"):
        postgres.extract(stream, tmp_path / "out", part_bytes=1 << 20, env=pg_env)


def test_pg_extract_when_the_server_is_gone_is_transient(pg_db, pg_env, tmp_path):
    stream = postgres.inspect(full_dsn(pg_db, table="orders"), env=pg_env)["streams"][0]
    moved = dict(stream, location=stream["location"].replace(f":{pg_db.port}/", f":{free_port()}/"))
    with pytest.raises(TransientError, match="Connection refused"):
        postgres.extract(moved, tmp_path / "out", part_bytes=1 << 20, env=pg_env)


def test_pg_discover_and_sync_through_the_handlers(pg_db, tmp_path, monkeypatch, ctx_for, settings):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    hint = full_dsn(pg_db)
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=TENANT,
                                job_id="job-00000000000053b1", function="test")
    discovered = invoke(discover, request, ctx_for("discover"))
    assert discovered["type"] == events.SOURCE_DISCOVERED
    source = events.event_data(discovered)["source"]
    assert source["provider"] == "postgres" and source["short"] == pg_db.dbname
    staged = invoke(sync, discovered, ctx_for("sync"))
    assert staged["type"] == events.SYNC_STAGED
    tables = {t["stream"]: t["rows"] for t in events.event_data(staged)["tables"]}
    assert tables["orders"] == PG_ROWS and tables["sales_items"] == 300


# ================================================================ detection, redaction

@pytest.mark.parametrize("hint, provider, reason", [
    ("s3://bucket/key.csv", "s3", "scheme s3"),
    ("s3://bucket/prefix/", "s3", "scheme s3"),
    ("postgresql://u:p@h:5432/db", "postgres", "DSN syntax"),
    ("postgres://h/db?table=public.t", "postgres", "DSN syntax"),
])
def test_detect_s3_and_dsns(hint, provider, reason):
    found = detect(hint)
    assert found["candidates"] == [{"provider": provider, "confidence": 0.95, "reasons": [reason]}]
    assert not found["ambiguous"]


def test_redact():
    assert redact("postgresql://u:p%40ss@h:5432/db?table=t") == "postgresql://u:***@h:5432/db?table=t"
    assert redact("postgres://u@h/db") == "postgres://u@h/db"
    assert redact("s3://bucket/key") == "s3://bucket/key"
    assert redact("/local/path.csv") == "/local/path.csv"
    assert postgres.parse(redact("postgresql://u:p@h/db")).password is None
    assert postgres.parse("postgresql://u:p%40ss@h/db").password == "p@ss"
    assert postgres.Dsn("h", 1, "d", "u", "pw").uri() == "postgresql://u@h:1/d"

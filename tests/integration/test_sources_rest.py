"""The REST/JSON provider against the REST API test peer (tests/peers/rest_api.py): every
pagination style, record paths, auth kinds with secrets, retries on 429/5xx, incremental sync
with server- and client-side filters, the nested-object rule, bad APIs, and the whole
pipeline to a loaded warehouse. Known answers: the peer's records are computed from their
index, so counts, sums and types are exact.
"""
from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from shared.core.settings import Settings
from tests.conftest import LOOPBACK

from functions.discover.detect import detect
from functions.discover.handler import handle as discover_handle
from shared.core import events
from shared.serving.embedded import Dispatcher
from shared.core.errors import SourceError
from shared.serving import runtime
from shared.serving.runtime import invoke
from shared.security.secrets import LocalSecretStore
from shared.sources import SourceEnv, redact, rest
from shared.sources import http as web
from shared.storage.store import LocalStore, TenantStore
from shared.core.tenancy import new_job_id
from tests.peers.rest_api import RestPeer
from shared.storage import lake

pytestmark = pytest.mark.integration
PEERS = Settings(net_allowlist=LOOPBACK)  # settings under which the loopback test peers are reachable

TOTAL = 250
ID_SUM = TOTAL * (TOTAL + 1) // 2
COLUMNS = [{"name": "id", "type": "BIGINT"}, {"name": "name", "type": "VARCHAR"},
           {"name": "price", "type": "DOUBLE"}, {"name": "active", "type": "BOOLEAN"},
           {"name": "updated_at", "type": "TIMESTAMP"}, {"name": "owner__name", "type": "VARCHAR"},
           {"name": "owner__address__city", "type": "VARCHAR"}, {"name": "owner__address__geo", "type": "VARCHAR"},
           {"name": "tags", "type": "VARCHAR"}]


@pytest.fixture(scope="module")
def peer():
    with RestPeer(total=TOTAL) as server:
        yield server


@pytest.fixture
def env(tmp_path):
    store = LocalStore(tmp_path / "store")
    return SourceEnv(tenant="acme", store=TenantStore(store, "acme"),
                     secrets=LocalSecretStore(tmp_path / "secrets"), source_id="api-1",
                     settings=PEERS)


def parquet(out: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{out}/*.parquet')")
    return con


def sync_once(hint: str, env: SourceEnv, tmp: Path, options: dict | None = None) -> tuple[dict, int, Path]:
    env.options = dict(options or {})
    stream = rest.inspect(hint, env=env)["streams"][0]
    out = tmp / f"parts-{time.monotonic_ns()}"
    rows = rest.extract(stream, out, env=env, part_bytes=1 << 20)
    return stream, rows, out


# ================================================================ pagination and records

@pytest.mark.parametrize("style, paginator, record_path", [
    ("link", {"type": "link_header"}, ""),
    ("next", {"type": "next_url", "next_path": "next"}, "data"),
    ("odata", {"type": "next_url", "next_path": "@odata.nextLink"}, "value"),
    ("cursor", {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"}, "items"),
    ("offset", {"type": "offset", "limit": 50, "total_path": "total"}, "results"),
    ("page", {"type": "page", "page_param": "page", "size_param": "per_page", "size": 50}, "records"),
    ("single", {"type": "none"}, "data.rows"),
])
def test_each_pagination_style_is_detected_and_read_whole(peer, env, tmp_path, style, paginator, record_path):
    stream, rows, out = sync_once(f"{peer.url}/{style}/items", env, tmp_path)
    assert stream["options"]["paginator"] == paginator
    assert stream["options"]["record_path"] == record_path
    assert stream["columns"] == COLUMNS
    assert stream["cursor_candidates"] == ["updated_at"] and stream["primary_key_candidates"] == ["id"]
    assert stream["sync_modes"] == ["full", "incremental"]
    assert rows == TOTAL
    con = parquet(out)
    assert con.execute("SELECT count(*), count(DISTINCT id), sum(id), sum(price), count(*) FILTER (active) "
                       "FROM t").fetchone() == (TOTAL, TOTAL, ID_SUM, ID_SUM * 0.25, TOTAL // 3)
    assert [(r[0], r[1]) for r in con.execute("DESCRIBE t").fetchall()] == [(c["name"], c["type"]) for c in COLUMNS]


def test_nested_objects_flatten_two_levels_deeper_ones_and_arrays_are_json_text(peer, env, tmp_path):
    _, _, out = sync_once(f"{peer.url}/page/items", env, tmp_path)
    row = parquet(out).execute("SELECT owner__name, owner__address__city, owner__address__geo, tags, updated_at "
                               "FROM t WHERE id = 7").fetchone()
    assert row[:4] == ("owner 0", "city 2", '{"lat": 7, "lon": 7}', '["t3", "x"]')
    assert str(row[4]) == "2025-01-01 00:07:00"
    assert rest.flatten({"a": {"b": {"c": {"d": 1}}, "e": []}, "f": 2}) == \
        {"a__b__c": '{"d": 1}', "a__e": "[]", "f": 2}


def test_explicit_options_override_detection(peer, env, tmp_path):
    # The cursor API read with a page-number paginator it ignores: the repeat guard stops it.
    stream, rows, _ = sync_once(f"{peer.url}/cursor/items", env, tmp_path,
                                {"paginator": "none", "record_path": "items", "name": "first page"})
    assert stream["name"] == "first_page" and stream["options"]["paginator"] == {"type": "none"}
    assert rows == 50
    stream, rows, _ = sync_once(f"{peer.url}/offset/items", env, tmp_path,
                                {"paginator": {"type": "offset", "limit": 100, "total_path": "total"}})
    assert rows == TOTAL
    with pytest.raises(SourceError, match=r"options.paginator: unknown type 'pages'; known: none, link_header"):
        sync_once(f"{peer.url}/page/items", env, tmp_path, {"paginator": "pages"})
    with pytest.raises(SourceError, match=r"options.record_path 'nope': no array at nope"):
        sync_once(f"{peer.url}/page/items", env, tmp_path, {"record_path": "nope"})


def test_a_page_that_repeats_stops_the_walk(peer, env, tmp_path):
    # /single ignores ?page: a forced page paginator would loop; the second page equals the first.
    _, rows, _ = sync_once(f"{peer.url}/single/items?total=30", env, tmp_path, {"paginator": "page"})
    assert rows == 30


# ================================================================ auth and secrets

@pytest.mark.parametrize("path, auth", [
    ("/auth/bearer/items", {"type": "bearer", "token": "tok-3141"}),
    ("/auth/key/items", {"type": "api_key", "key": "key-2718"}),
    ("/auth/key/items", {"type": "api_key", "key": "key-2718", "location": "query", "name": "api_key"}),
    ("/auth/basic/items", {"type": "basic", "username": "ada", "password": "lovelace"}),
])
def test_auth_kinds_with_inline_secrets_kept_as_references(peer, env, tmp_path, path, auth):
    stream, rows, _ = sync_once(peer.url + path, env, tmp_path, {"auth": auth})
    assert rows == TOTAL
    kept = stream["options"]["auth"]
    secret_field = {"bearer": "token", "api_key": "key", "basic": "password"}[auth["type"]]
    assert kept[secret_field].startswith("secret://src-")
    assert env.resolve_secret(kept[secret_field]) == auth[secret_field]
    assert auth[secret_field] not in json.dumps(stream)


def test_auth_by_secret_reference_and_a_missing_secret(peer, env, tmp_path):
    env.secrets.put("acme", "peer-token", "tok-3141")
    _, rows, _ = sync_once(f"{peer.url}/auth/bearer/items", env, tmp_path,
                           {"auth": {"type": "bearer", "token": "secret://peer-token"}})
    assert rows == TOTAL
    with pytest.raises(SourceError, match="no secret 'nope' for tenant acme"):
        sync_once(f"{peer.url}/auth/bearer/items", env, tmp_path, {"auth": {"type": "bearer", "token": "secret://nope"}})


def test_password_in_the_url_moves_to_the_secret_store(peer, env, tmp_path):
    host = peer.url.split("://", 1)[1]
    hint = f"http://ada:lovelace@{host}/auth/basic/items"
    assert redact(hint) == f"http://ada:***@{host}/auth/basic/items"
    stream, rows, _ = sync_once(hint, env, tmp_path)
    assert rows == TOTAL
    assert stream["location"] == f"http://{host}/auth/basic/items"
    assert stream["options"]["auth"]["password"].startswith("secret://") and "lovelace" not in json.dumps(stream)


# ================================================================ retries

def test_429_with_retry_after_then_503_are_retried(peer, env, tmp_path):
    before = peer.hits["/flaky/items"]
    started = time.monotonic()
    _, rows, _ = sync_once(f"{peer.url}/flaky/items?key=k{time.monotonic_ns()}", env, tmp_path)
    assert rows == TOTAL
    # discovery: 429, 503, page 1; sync: pages 1..6 (the sixth is empty)
    assert peer.hits["/flaky/items"] - before == 3 + 6
    assert time.monotonic() - started >= 1.5  # Retry-After: 1 s, then 0.5 s of backoff


def test_a_server_that_stays_down_fails_after_bounded_retries(peer, env, tmp_path, monkeypatch):
    monkeypatch.setattr(web, "BACKOFF", (0.01, 0.02, 0.04, 0.08))
    before = peer.hits["/down/items"]
    with pytest.raises(SourceError, match=r"/down/items: server error 503, still after 5 attempts"):
        sync_once(f"{peer.url}/down/items", env, tmp_path)
    assert peer.hits["/down/items"] - before == 5


# ================================================================ incremental

def test_incremental_with_a_server_side_filter(env, tmp_path):
    with RestPeer(total=200) as p:
        options = {"incremental": {"cursor_field": "updated_at", "filter_param": "updated_since"}}
        stream, rows, _ = sync_once(f"{p.url}/since/items", env, tmp_path, options)
        assert rows == 200
        assert stream["options"]["incremental"] == {"cursor_field": "updated_at", "filtering": "server",
                                                    "filter_param": "updated_since"}
        state = json.loads(env.store.get("state/api-1.json").data)
        assert state["streams"]["items"]["last_value"] == "2025-01-01T03:20:00Z"  # record 200
        p.total = 230
        p.seen.clear()
        out = tmp_path / "second"
        assert rest.extract(stream, out, env=env, part_bytes=1 << 20) == 30
        assert parquet(out).execute("SELECT min(id), max(id) FROM t").fetchone() == (201, 230)
        assert all("updated_since=2025-01-01T03%3A20%3A00Z" in q for _, q in p.seen)
        assert json.loads(env.store.get("state/api-1.json").data)["streams"]["items"]["last_value"] \
            == "2025-01-01T03:50:00Z"
        assert rest.extract(stream, tmp_path / "third", env=env, part_bytes=1 << 20) == 0


def test_incremental_without_a_filter_param_filters_client_side(env, tmp_path):
    with RestPeer(total=120) as p:
        stream, rows, _ = sync_once(f"{p.url}/page/items", env, tmp_path, {"incremental": True})
        assert rows == 120 and stream["options"]["incremental"] == {"cursor_field": "updated_at",
                                                                    "filtering": "client"}
        p.total = 160
        p.seen.clear()
        out = tmp_path / "second"
        assert rest.extract(stream, out, env=env, part_bytes=1 << 20) == 40
        assert parquet(out).execute("SELECT min(id), max(id), count(*) FROM t").fetchone() == (121, 160, 40)
        assert len(p.seen) == 5  # every page is read again (4 full pages + the empty one)


# ================================================================ bad APIs: clear errors, no hangs

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("path, options, message", [
    ("/auth/bearer/items", {}, r"401 Unauthorized: the server wants credentials \(give options.auth"),
    ("/auth/bearer/items", {"auth": {"type": "bearer", "token": "wrong"}}, r"401 Unauthorized"),
    ("/forbidden/items", {}, r"403 Forbidden"),
    ("/empty", {}, r"the API returned no records \(an empty array at data\)"),
    ("/notjson", {"provider": "rest"}, r"not JSON \(Content-Type text/html, starts with b'<html>"),
    ("/badjson", {}, r"not JSON \(Content-Type application/json"),
    ("/huge?mb=2", {}, r"the response is 2,\d{3},\d{3} bytes, over the 1,048,576-byte limit \(UDB_MAX_PAGE_BYTES\)"),
    ("/nothing-here", {"provider": "rest"}, r"404 Not Found"),
])
def test_bad_apis_fail_the_job_with_a_clear_reason(peer, settings, path, options, message):
    ctx = runtime.start("discover", replace(settings, max_page_bytes=1024 * 1024))
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": peer.url + path, "options": options},
                                tenant="acme", job_id=new_job_id(), function="test")
    started = time.monotonic()
    reply = invoke(discover_handle, request, ctx)
    assert time.monotonic() - started < 5
    assert reply["type"] == events.JOB_FAILED
    assert re.search(message, events.event_data(reply)["reason"]), events.event_data(reply)["reason"]
    job = ctx.jobs("acme").get(request["jobid"])
    assert job["state"] == "failed"


@pytest.mark.parametrize("hint, message", [
    (lambda: f"http://127.0.0.1:{free_port()}/api/items", r"cannot connect: connection refused"),
    (lambda: "http://no-such-host.invalid/api/items", r"cannot resolve host 'no-such-host.invalid'"),
])
def test_an_unreachable_api_fails_fast_with_the_reason(ctx_for, hint, message):
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint()}, tenant="acme",
                                job_id=new_job_id(), function="test")
    started = time.monotonic()
    reply = invoke(discover_handle, request, ctx_for("discover"))
    assert time.monotonic() - started < 2
    assert reply["type"] == events.JOB_FAILED
    assert re.search(message, events.event_data(reply)["reason"]), events.event_data(reply)["reason"]


def test_detection_of_apis(peer):
    found = detect(f"{peer.url}/cursor/items", settings=PEERS)
    assert found["candidates"][0]["provider"] == "rest" and found["candidates"][0]["confidence"] == 0.95
    assert "JSON records at items; pagination: cursor in the body at 'next_cursor' (sent back as ?cursor=)" \
        in found["candidates"][0]["reasons"]
    assert not found["ambiguous"]
    found = detect(f"{peer.url}/auth/bearer/items", settings=PEERS)
    assert found["candidates"][0] == {"provider": "rest", "confidence": 0.6, "reasons": [
        "an http(s) URL", "GET answered 401: needs credentials (options.auth)"]}


# ================================================================ end to end

def test_rest_api_end_to_end_to_the_warehouse(peer, settings, tmp_path):
    dispatcher = Dispatcher(settings)
    job = new_job_id()
    options = {"auth": {"type": "bearer", "token": "tok-3141"}}
    request = events.make_event(events.DISCOVER_REQUESTED,
                                {"hint": f"{peer.url}/auth/bearer/items", "options": options, "autoanalyze": False},
                                tenant="acme", job_id=job, function="test")
    seen = dispatcher.publish(request)
    assert [e["type"] for e in seen] == [events.DISCOVER_REQUESTED, events.SOURCE_DISCOVERED, events.SYNC_STAGED,
                                         events.WAREHOUSE_LOADED]
    discovered = events.event_data(seen[1])
    assert "tok-3141" not in json.dumps(discovered)
    ctx = dispatcher.context("cli")
    doc = ctx.jobs("acme").get(job)
    assert doc["state"] == "loaded" and doc["tables"] == {"api_127__items": {"rows": TOTAL}}
    stored = ctx.tenant_store("acme").get(f"sources/{doc['source_id']}.json").data.decode()
    assert "tok-3141" not in stored and "secret://src-" in stored
    with lake.reader(ctx.tenant_store("acme")) as w:
        assert w.execute('SELECT count(*), sum(id), sum(price) FROM "api_127__items"').fetchone() == \
            (TOTAL, ID_SUM, ID_SUM * 0.25)
        assert w.execute("SELECT column_name, data_type FROM information_schema.columns "
                         "WHERE table_name = 'api_127__items' ORDER BY ordinal_position").fetchall() == \
            [(c["name"], c["type"]) for c in COLUMNS]

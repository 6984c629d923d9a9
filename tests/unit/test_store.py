import pytest

pytestmark = pytest.mark.unit

# Contract of the ObjectStore interface (shared/storage/store.py), and of the tenant-scoped view.
#
# Every backend must pass the same suite. Today only the local-directory backend runs here.
#
# Extension point (e.g. for S3/MinIO): append the kind to STORE_KINDS and define, in
# tests/conftest.py, a fixture named `<kind>_store` (e.g. `s3_store`) returning an ObjectStore.
# `make_store` builds the backends it knows; for any other kind the `store` fixture asks pytest
# for that `<kind>_store` fixture. Every test works below its own unique prefix (`ns`), so a
# shared bucket is fine.

import hashlib
import json
import threading
import uuid
from pathlib import Path

from shared.core.errors import InputError, NotFound, PreconditionFailed
from shared.storage.store import (LocalStore, ObjectInfo, TenantStore, check_key, get_with_etag,
                          put_if_absent, put_if_match)

STORE_KINDS = ["local"]  # add "s3" here once tests/conftest.py provides an `s3_store` fixture


def make_store(kind: str, tmp_path: Path):
    """A fresh store of the given kind; None for kinds provided by a `<kind>_store` fixture."""
    if kind == "local":
        return LocalStore(tmp_path / "store")
    return None


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path):
    built = make_store(request.param, tmp_path)
    return built if built is not None else request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def ns() -> str:
    """A key prefix unique to the test, so that backends with shared buckets do not collide."""
    return f"contract-{uuid.uuid4().hex[:12]}/"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- get / put / head -------------------------------------------------------------------------

def test_put_get_roundtrip_etag_is_md5(store, ns):
    data = b"hello, warehouse\n"
    etag = store.put(ns + "a/b.txt", data)
    assert etag == md5(data)
    blob = store.get(ns + "a/b.txt")
    assert blob.data == data
    assert blob.etag == etag == md5(data)
    assert get_with_etag(store, ns + "a/b.txt") == blob


def test_put_empty_and_binary(store, ns):
    assert store.put(ns + "empty", b"") == "d41d8cd98f00b204e9800998ecf8427e"
    payload = bytes(range(256)) * 3
    assert store.put(ns + "bin", payload) == md5(payload)
    assert store.get(ns + "empty").data == b""
    assert store.get(ns + "bin").data == payload


def test_etag_known_answer(store, ns):
    # md5("abc") is a published test vector.
    assert store.put(ns + "abc", b"abc") == "900150983cd24fb0d6963f7d28e17f72"


def test_overwrite_changes_data_and_etag(store, ns):
    first = store.put(ns + "k", b"one")
    second = store.put(ns + "k", b"two")
    assert first != second
    assert store.get(ns + "k").data == b"two"
    assert store.get(ns + "k").etag == second == md5(b"two")


def test_get_missing_raises_not_found(store, ns):
    with pytest.raises(NotFound):
        store.get(ns + "missing.json")
    # NotFound is also a KeyError, and prints its plain message.
    with pytest.raises(KeyError):
        store.get(ns + "missing.json")


def test_get_of_a_prefix_is_not_found(store, ns):
    store.put(ns + "dir/file", b"x")
    with pytest.raises(NotFound):
        store.get(ns + "dir")
    assert store.head(ns + "dir") is None


def test_head(store, ns):
    assert store.head(ns + "nothing") is None
    data = b"0123456789"
    etag = store.put(ns + "h/obj", data)
    info = store.head(ns + "h/obj")
    assert info == ObjectInfo(ns + "h/obj", 10, etag)
    assert info.etag == md5(data)


def test_put_from_path(store, ns, tmp_path):
    src = tmp_path / "src.bin"
    data = b"from a file " * 1000
    src.write_bytes(data)
    etag = store.put(ns + "from/file.bin", src)
    assert etag == md5(data)
    assert store.get(ns + "from/file.bin").data == data
    assert store.head(ns + "from/file.bin").size == len(data)


def test_get_to_file(store, ns, tmp_path):
    data = b"download me\n" * 50
    etag = store.put(ns + "dl/x.csv", data)
    target = tmp_path / "out.csv"
    assert store.get_to_file(ns + "dl/x.csv", target) == etag == md5(data)
    assert target.read_bytes() == data


def test_get_to_file_missing_raises_not_found(store, ns, tmp_path):
    with pytest.raises(NotFound):
        store.get_to_file(ns + "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- conditional writes -----------------------------------------------------------------------

def test_if_none_match_succeeds_once(store, ns):
    key = ns + "once.json"
    etag = store.put(key, b"first", if_none_match=True)
    assert etag == md5(b"first")
    with pytest.raises(PreconditionFailed):
        store.put(key, b"second", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        put_if_absent(store, key, b"third")
    assert store.get(key).data == b"first"


def test_if_none_match_after_delete_succeeds_again(store, ns):
    key = ns + "again"
    put_if_absent(store, key, b"1")
    store.delete(key)
    assert put_if_absent(store, key, b"2") == md5(b"2")


def test_if_match_current_etag_succeeds_and_returns_new_etag(store, ns):
    key = ns + "doc.json"
    v1 = store.put(key, b'{"v": 1}')
    v2 = store.put(key, b'{"v": 2}', if_match=v1)
    assert v2 == md5(b'{"v": 2}') != v1
    assert store.get(key).data == b'{"v": 2}'
    v3 = put_if_match(store, key, b'{"v": 3}', v2)
    assert store.get(key).etag == v3


def test_if_match_stale_etag_fails_and_keeps_content(store, ns):
    key = ns + "doc.json"
    v1 = store.put(key, b"one")
    store.put(key, b"two", if_match=v1)
    with pytest.raises(PreconditionFailed):
        store.put(key, b"three", if_match=v1)  # v1 is stale now
    assert store.get(key).data == b"two"


def test_if_match_on_missing_key_fails(store, ns):
    key = ns + "ghost"
    with pytest.raises(PreconditionFailed):
        store.put(key, b"x", if_match=md5(b"x"))
    assert store.head(key) is None


def test_failed_conditional_put_from_path_leaves_nothing(store, ns, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"payload")
    store.put(ns + "p/k", b"orig")
    with pytest.raises(PreconditionFailed):
        store.put(ns + "p/k", src, if_none_match=True)
    assert [i.key for i in store.list(ns + "p/")] == [ns + "p/k"]
    assert store.get(ns + "p/k").data == b"orig"


# --- delete -----------------------------------------------------------------------------------

def test_delete_if_match(store, ns):
    key = ns + "del"
    old = store.put(key, b"a")
    new = store.put(key, b"b")
    with pytest.raises(PreconditionFailed):
        store.delete(key, if_match=old)
    assert store.get(key).data == b"b"
    store.delete(key, if_match=new)
    assert store.head(key) is None
    with pytest.raises(NotFound):
        store.get(key)


def test_delete_unconditional(store, ns):
    store.put(ns + "d", b"x")
    store.delete(ns + "d")
    assert store.head(ns + "d") is None


def test_delete_missing_is_a_noop(store, ns):
    store.delete(ns + "never-was")
    store.delete(ns + "never/was/either")
    assert store.head(ns + "never-was") is None


# --- list -------------------------------------------------------------------------------------

def test_list_returns_exactly_the_keys_under_the_prefix(store, ns):
    contents = {"a/1": b"one", "a/2/x": b"two-x", "a/3": b"three", "ab": b"ab", "b/1": b"b1"}
    for k, v in contents.items():
        store.put(ns + k, v)
    listed = list(store.list(ns + "a/"))
    # Order is checked by test_list_is_sorted_lexicographically.
    assert sorted(i.key for i in listed) == [ns + "a/1", ns + "a/2/x", ns + "a/3"]
    for info in listed:
        data = contents[info.key[len(ns):]]
        assert info.size == len(data)
        assert info.etag == md5(data)
    # A prefix is a plain string prefix, as in S3: "a" also covers "ab".
    assert sorted(i.key for i in store.list(ns + "a")) == [ns + "a/1", ns + "a/2/x", ns + "a/3", ns + "ab"]
    assert [i.key for i in store.list(ns + "zzz/")] == []


def test_list_never_shows_temp_files(store, ns):
    key = ns + "t/obj"
    etag = store.put(key, b"1")
    with pytest.raises(PreconditionFailed):
        store.put(key, b"2", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put(key, b"3", if_match="0" * 32)
    store.put(key, b"4", if_match=etag)
    assert [i.key for i in store.list(ns)] == [key]


def test_list_is_sorted_lexicographically(store, ns):
    keys = ["a/c", "a/b/x", "a/b0", "a/b.txt", "a/a"]
    for k in keys:
        store.put(ns + k, b"x")
    listed = [i.key for i in store.list(ns + "a/")]
    assert listed == sorted(ns + k for k in keys)
    assert listed == [ns + "a/a", ns + "a/b.txt", ns + "a/b/x", ns + "a/b0", ns + "a/c"]


# --- keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/../b", "", "./a", "a/./b", "..", "a/.."])
def test_invalid_keys_raise_input_error(store, key):
    with pytest.raises(InputError):
        store.get(key)
    with pytest.raises(InputError):
        store.put(key, b"x")
    with pytest.raises(InputError):
        store.head(key)
    with pytest.raises(InputError):
        store.delete(key)
    with pytest.raises(InputError):
        check_key(key)


def test_invalid_key_writes_nothing_outside_the_root(tmp_path):
    local = LocalStore(tmp_path / "root")
    with pytest.raises(InputError):
        local.put("../escaped", b"x")
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("key", ["a", "a/b/c.json", "tenants/demo/jobs/job-0123456789abcdef.json", "a..b", ".hidden"])
def test_valid_keys(key):
    assert check_key(key) == key


# --- concurrency ------------------------------------------------------------------------------

def _run_threads(n, target):
    barrier = threading.Barrier(n)
    errors = []

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_put_if_absent_race_has_exactly_one_winner(store, ns):
    key = ns + "race/lock"
    winners, losers = [], []

    def contender(i):
        try:
            put_if_absent(store, key, f"owner-{i}".encode())
            winners.append(i)
        except PreconditionFailed:
            losers.append(i)

    _run_threads(8, contender)
    assert len(winners) == 1
    assert sorted(winners + losers) == list(range(8))
    assert store.get(key).data == f"owner-{winners[0]}".encode()


def test_read_modify_write_with_if_match_loses_no_update(store, ns):
    key = ns + "counter.json"
    store.put(key, json.dumps({"n": 0}).encode())
    conflicts = []

    def incrementer(i):
        for _ in range(25):
            for _attempt in range(10_000):
                blob = store.get(key)
                value = json.loads(blob.data)["n"]
                try:
                    store.put(key, json.dumps({"n": value + 1}).encode(), if_match=blob.etag)
                    break
                except PreconditionFailed:
                    conflicts.append(i)
            else:
                raise AssertionError("increment never succeeded")

    _run_threads(8, incrementer)
    assert json.loads(store.get(key).data) == {"n": 200}


# --- the lake's file operations (shared/storage/lake.py) -----------------------------------------------

def test_copy_makes_an_independent_object_with_the_same_bytes(store, ns):
    store.put(ns + "staging/part-0.parquet", b"staged bytes")
    etag = store.copy(ns + "staging/part-0.parquet", ns + "lake/main/t/part-0.parquet")
    assert etag == md5(b"staged bytes")
    assert store.get(ns + "lake/main/t/part-0.parquet").data == b"staged bytes"
    # A later put or delete of the source never reaches the copy (sync may restage; prune deletes).
    store.put(ns + "staging/part-0.parquet", b"restaged")
    assert store.get(ns + "lake/main/t/part-0.parquet").data == b"staged bytes"
    store.delete(ns + "staging/part-0.parquet")
    assert store.get(ns + "lake/main/t/part-0.parquet").etag == etag
    with pytest.raises(NotFound):
        store.copy(ns + "staging/missing.parquet", ns + "lake/x.parquet")
    with pytest.raises(InputError):
        store.copy(ns + "../escape", ns + "lake/x.parquet")


def test_the_lake_reads_and_writes_its_files_in_place(store, tmp_path):
    """Through DuckDB (httpfs for S3) with the store's own scoped credentials: a table written as
    Parquet under the tenant's lake/, a copied part registered as a data file, time travel, and
    DuckLake's maintenance deleting an orphan; the catalog is the only file moved whole."""
    import duckdb

    from shared.storage import duck, lake

    tenant = "c" + uuid.uuid4().hex[:12]
    tstore = TenantStore(store, tenant)
    part = tmp_path / "part.parquet"
    con = duck.connect()
    con.execute(f"COPY (SELECT range AS id FROM range(1000)) TO '{part}' (FORMAT parquet)")
    con.close()
    tstore.put("staging/j/t/part-0.parquet", part)
    tstore.copy("staging/j/t/part-0.parquet", "lake/main/t/j-part-0.parquet")
    catalog = tmp_path / "catalog.ducklake"
    con = lake.connect(tstore, catalog, threads=1)
    try:
        con.execute("CREATE TABLE lake.main.t (id BIGINT)")
        con.execute(f"CALL ducklake_add_data_files('lake', 't', {duck.literal(tstore.url('lake/main/t/j-part-0.parquet'))})")
        registered = lake.version(con)
        # 100 rows: past DuckLake's inlining limit (10), so a Parquet file of its own.
        con.execute("INSERT INTO lake.main.t SELECT 1000 + range FROM range(100)")
        assert con.execute("SELECT count(*), sum(id) FROM t").fetchone() == (1100, 499_500 + 104_950)
        assert con.execute(f"SELECT count(*) FROM t AT (VERSION => {registered})").fetchone() == (1000,)
        lake.detach(con)
    finally:
        con.close()
    tstore.put(lake.CATALOG, catalog, if_none_match=True)
    keys = sorted(i.key for i in tstore.list("lake/"))
    assert keys[0] == "lake/main/t/ducklake-" + keys[0][len("lake/main/t/ducklake-"):] and keys[0].endswith(".parquet")
    assert keys[1] == "lake/main/t/j-part-0.parquet" and len(keys) == 2
    # A reader downloads the catalog only and reads the rest in place.
    with lake.reader(tstore) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (1100,)
    # The KPI connection reads the lake with external access off: the tenant's prefix only.
    from functions.analyze import kpis
    (tmp_path / "kpi").mkdir()
    kpi_catalog, _ = lake.fetch_catalog(tstore, tmp_path / "kpi")
    kcon = kpis.open_kpi_connection(kpi_catalog, store=tstore, threads=1)
    try:
        assert kcon.execute("SELECT count(*), sum(id) FROM t").fetchone() == (1100, 499_500 + 104_950)
        with pytest.raises(duckdb.Error):  # no local file outside the tenant's lake
            kcon.execute(f"SELECT * FROM read_parquet({duck.literal(str(part))})").fetchall()
        with pytest.raises(duckdb.Error):  # no URL
            kcon.execute("SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')").fetchall()
        with pytest.raises(duckdb.Error):
            kcon.execute("SET disabled_filesystems = ''")
    finally:
        kcon.close()
    # An orphan (a crashed load's file) is swept by DuckLake's maintenance; the two small files
    # are compacted into one and, past the grace period, deleted.
    tstore.put("lake/main/t/orphan.parquet", part)
    from datetime import datetime, timedelta, timezone
    result = lake.maintain(tstore, snapshot_days=0, now=datetime.now(timezone.utc) + timedelta(hours=2))
    assert result == {"expired_snapshots": 0, "merged_files": 1, "deleted_files": 2, "orphans_deleted": 1,
                      "busy": False}
    after = [i.key for i in tstore.list("lake/")]
    assert len(after) == 1 and after[0].startswith("lake/main/t/ducklake-") and after[0] not in keys
    with lake.reader(tstore) as con:
        assert con.execute("SELECT count(*), sum(id) FROM t").fetchone() == (1100, 499_500 + 104_950)
    if tstore.url("x").startswith("s3://"):
        # The connection's credentials are scoped to this tenant: another prefix is out of reach.
        other = TenantStore(store, "d" + uuid.uuid4().hex[:12])
        other.put("lake/x.parquet", part)
        con = lake.connect(tstore, tmp_path / "c2.ducklake", threads=1)
        try:
            with pytest.raises(Exception, match="403|Forbidden|credentials|Access"):
                con.execute(f"SELECT count(*) FROM read_parquet({duck.literal(other.url('lake/x.parquet'))})").fetchall()
        finally:
            con.close()


# --- TenantStore ------------------------------------------------------------------------------

@pytest.fixture
def base(tmp_path):
    return LocalStore(tmp_path / "tenant-store")


def test_tenant_keys_are_prefixed(base):
    acme = TenantStore(base, "acme")
    assert acme.prefix == "tenants/acme/"
    assert acme.key("jobs/x.json") == "tenants/acme/jobs/x.json"
    etag = acme.put("jobs/x.json", b"{}")
    assert base.get("tenants/acme/jobs/x.json").data == b"{}"
    assert acme.head("jobs/x.json").etag == etag
    assert acme.head("jobs/x.json").key == "tenants/acme/jobs/x.json"


def test_tenant_cannot_reach_another_tenant(base, tmp_path):
    acme, beta = TenantStore(base, "acme"), TenantStore(base, "beta")
    beta.put("secret/x", b"beta's")
    for relative in ["../beta/secret/x", "../../tenants/beta/secret/x", "/tenants/beta/secret/x",
                     "a/../../beta/secret/x", "..", "./../beta/secret/x"]:
        with pytest.raises(InputError):
            acme.get(relative)
        with pytest.raises(InputError):
            acme.get_to_file(relative, tmp_path / "stolen")
        with pytest.raises(InputError):
            acme.put(relative, b"overwrite")
        with pytest.raises(InputError):
            acme.delete(relative)
        with pytest.raises(InputError):
            acme.head(relative)
    # Inside its own space the same relative key names a different object.
    with pytest.raises(NotFound):
        acme.get("secret/x")
    assert beta.get("secret/x").data == b"beta's"
    assert not (tmp_path / "stolen").exists()


def test_tenant_list_is_relative_and_scoped(base):
    ab, abc = TenantStore(base, "ab"), TenantStore(base, "abc")
    ab.put("jobs/1.json", b"1")
    ab.put("artifacts/j/index.json", b"22")
    abc.put("jobs/2.json", b"333")
    base.put("locks/ab/warehouse.lease", b"lease")
    assert [(i.key, i.size) for i in ab.list()] == [("artifacts/j/index.json", 2), ("jobs/1.json", 1)]
    assert [i.key for i in ab.list("jobs/")] == ["jobs/1.json"]
    assert [i.key for i in abc.list()] == ["jobs/2.json"]
    assert [i.key for i in ab.list("../abc/")] == []
    assert ab.list("jobs/").__next__().etag == md5(b"1")


def test_tenant_store_rejects_invalid_tenant(base):
    for tenant in ["", "A", "../x", "tenant/other", "Acme"]:
        with pytest.raises(InputError):
            TenantStore(base, tenant)


def test_artifact_key(base):
    acme = TenantStore(base, "acme")
    assert acme.artifact_key("job-0123456789abcdef", "index.json") == "artifacts/job-0123456789abcdef/index.json"
    assert acme.artifact_key("job-0123456789abcdef", "report_v1.2-final.html").endswith("/report_v1.2-final.html")
    for bad in ["../index.json", "a/b", ".hidden", "", "..", "a..b", "x" * 129]:
        with pytest.raises(InputError):
            acme.artifact_key("job-0123456789abcdef", bad)

"""The ObjectStore contract suite (tests/unit/test_store.py) against S3Store on a real
MinIO, plus what only the S3 backend has: bucket creation, transient errors, 412 mapping.

Every contract test that takes a `store` is imported here unchanged; this module's own `store`
fixture overrides the contract module's, so the same test bodies run against MinIO. The bucket
is fresh for the session (`udb-test-<random>`) and removed at the end.
"""
from __future__ import annotations

import inspect
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from devstack import services
from shared.core.errors import NotFound, PreconditionFailed, TransientError
from shared.storage.s3store import S3Store
from shared.core.settings import Settings
from shared.storage.backends import open_store
from tests.unit import test_store as contract

pytestmark = pytest.mark.integration

ns = contract.ns  # the per-test key prefix fixture

_IMPORTED = []
for _name, _fn in vars(contract).items():
    if _name.startswith("test_") and callable(_fn) and "store" in inspect.signature(_fn).parameters:
        globals()[_name] = _fn
        _IMPORTED.append(_name)


@pytest.fixture(scope="session")
def minio(stack_services):
    user, password = services.minio_credentials()
    return {"endpoint": services.endpoints()["s3"], "access_key": user, "secret_key": password}


def _raw_client(minio):
    return boto3.client("s3", endpoint_url=minio["endpoint"], aws_access_key_id=minio["access_key"],
                        aws_secret_access_key=minio["secret_key"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def _drop_bucket(client, bucket):
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def s3_settings(minio, tmp_path_factory):
    bucket = f"udb-test-{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("udb"), store="s3", bucket=bucket,
                                 s3_endpoint=minio["endpoint"], s3_access_key=minio["access_key"],
                                 s3_secret_key=minio["secret_key"])
    yield settings
    _drop_bucket(_raw_client(minio), bucket)


@pytest.fixture(scope="session")
def s3_store(s3_settings) -> S3Store:
    return S3Store.from_settings(s3_settings)


@pytest.fixture
def store(s3_store):
    return s3_store


def test_the_contract_is_imported():
    # Guards against the import loop silently finding nothing after a rename.
    assert len(_IMPORTED) >= 20, _IMPORTED
    assert "test_put_if_absent_race_has_exactly_one_winner" in _IMPORTED
    assert "test_read_modify_write_with_if_match_loses_no_update" in _IMPORTED


# --- S3-only behaviour ------------------------------------------------------------------------

def test_open_store_builds_s3_and_creates_the_bucket(minio, s3_settings):
    bucket = f"udb-test-{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env(env={}, home=s3_settings.home, store="s3", bucket=bucket,
                                 s3_endpoint=minio["endpoint"], s3_access_key=minio["access_key"],
                                 s3_secret_key=minio["secret_key"])
    raw = _raw_client(minio)
    try:
        store = open_store(settings)
        assert isinstance(store, S3Store)
        raw.head_bucket(Bucket=bucket)  # exists now
        store.ping()
        # Idempotent: a second start with the bucket present is fine.
        S3Store.from_settings(settings).put("x", b"1")
        assert store.get("x").data == b"1"
    finally:
        _drop_bucket(raw, bucket)


def test_etags_have_no_quotes_and_content_type_is_kept(store, ns, minio, s3_settings):
    etag = store.put(ns + "doc.json", b"{}", content_type="application/json")
    assert '"' not in etag
    head = _raw_client(minio).head_object(Bucket=s3_settings.bucket, Key=ns + "doc.json")
    assert head["ContentType"] == "application/json"
    assert all('"' not in info.etag for info in store.list(ns))


def test_if_match_unquoted_or_quoted_etag(store, ns):
    v1 = store.put(ns + "q", b"1")
    v2 = store.put(ns + "q", b"2", if_match=v1)
    v3 = store.put(ns + "q", b"3", if_match=f'"{v2}"')
    assert store.get(ns + "q").etag == v3


def test_list_pages_beyond_a_thousand_keys(store, ns):
    from concurrent.futures import ThreadPoolExecutor
    keys = [f"{ns}many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"x"), keys))
    assert [i.key for i in store.list(ns + "many/")] == keys


def test_put_from_path_of_several_megabytes_is_single_part(store, ns, tmp_path):
    import hashlib
    src = tmp_path / "big.bin"
    data = (b"0123456789abcdef" * 65536) * 20  # 20 MiB: above boto3's multipart threshold
    src.write_bytes(data)
    etag = store.put(ns + "big.bin", src)
    assert etag == hashlib.md5(data).hexdigest()  # a multipart ETag would end in "-N"
    assert store.put(ns + "big.bin", src, if_match=etag) == etag
    out = tmp_path / "back.bin"
    assert store.get_to_file(ns + "big.bin", out) == etag
    assert out.read_bytes() == data


def test_missing_bucket_is_transient_not_found_is_not(minio):
    store = S3Store(f"udb-test-missing-{uuid.uuid4().hex[:8]}", endpoint=minio["endpoint"],
                    access_key=minio["access_key"], secret_key=minio["secret_key"])
    with pytest.raises(TransientError, match="does not exist"):
        store.get("k")


def test_unreachable_endpoint_is_transient_and_fast():
    # A port nothing listens on: connection refused, retried a few times, then TransientError.
    store = S3Store("udb", endpoint="http://127.0.0.1:1", access_key="a", secret_key="b")
    started = time.monotonic()
    for op in (lambda: store.get("k"), lambda: store.head("k"), lambda: store.put("k", b"x"),
               lambda: store.put("k", b"x", if_none_match=True), lambda: list(store.list("")),
               lambda: store.delete("k", if_match="abc"), store.ping):
        with pytest.raises(TransientError, match="unreachable"):
            op()
    assert time.monotonic() - started < 30


def test_from_settings_tolerates_a_down_store(tmp_path):
    # Opening never fails: readiness reports the outage, and strict startup (which checks every
    # dependency before refusing to serve) is the function's decision, not the store's.
    settings = Settings.from_env(env={}, home=tmp_path, store="s3", bucket="udb",
                                 s3_endpoint="http://127.0.0.1:1", s3_access_key="a", s3_secret_key="b")
    store = S3Store.from_settings(settings)
    with pytest.raises(TransientError):
        store.ping()


def test_wrong_credentials_are_an_error_not_a_hang(minio, s3_settings):
    store = S3Store(s3_settings.bucket, endpoint=minio["endpoint"], access_key=minio["access_key"],
                    secret_key="wrong-secret")
    with pytest.raises(TransientError, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        store.get("k")


def test_conditional_delete_on_missing_key_fails(store, ns):
    with pytest.raises(PreconditionFailed):
        store.delete(ns + "nothing", if_match="0" * 32)
    with pytest.raises(NotFound):
        store.get(ns + "nothing")

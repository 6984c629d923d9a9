"""shared/storage/backends.py: which object store a deployment opens (S3 is covered against a
real MinIO in tests/integration/test_s3store.py, which opens it through the same function)."""
from __future__ import annotations

import pytest

from shared.core.settings import Settings
from shared.storage.backends import open_store
from shared.storage.store import LocalStore

pytestmark = pytest.mark.unit


def test_a_local_deployment_opens_a_directory_under_home_store_bucket(tmp_path):
    settings = Settings.from_env({}, home=tmp_path, store="local", bucket="lake")
    store = open_store(settings)
    assert isinstance(store, LocalStore)
    store.put("tenants/t1/a.txt", b"abc")
    assert (tmp_path / "store" / "lake" / "tenants" / "t1" / "a.txt").read_bytes() == b"abc"
    assert store.get("tenants/t1/a.txt").data == b"abc"

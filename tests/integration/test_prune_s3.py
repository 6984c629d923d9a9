"""Retention on the S3 store: POST /admin/prune's `prune` against the running MinIO, in a bucket of
its own, with the same known job ages as the LocalStore tests (tests/unit/test_prune.py)."""
from __future__ import annotations

import uuid

import pytest

from devstack import services
from functions.artifacts.admin import prune
from shared.storage.s3store import S3Store
from tests.unit.test_prune import NOW, UNTOUCHABLE, JOB_A, JOB_B, JOB_E, build, job_keys

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_store(stack_services, s3_client):
    user, password = services.minio_credentials()
    bucket = f"udb-prune-{uuid.uuid4().hex[:10]}"
    store = S3Store(bucket, endpoint=stack_services["s3"], access_key=user, secret_key=password)
    store.ensure_bucket()
    yield store
    for info in list(store.list("")):
        store.delete(info.key)
    s3_client.delete_bucket(Bucket=bucket)


def test_prune_on_minio_deletes_exactly_what_is_past_retention(s3_store):
    before = build(s3_store)
    dry = prune(s3_store, staging_days=2, artifact_days=30, now=NOW, dry_run=True)
    assert {info.key for info in s3_store.list("")} == before
    result = prune(s3_store, staging_days=2, artifact_days=30, now=NOW)
    assert result["deleted"] == dry["deleted"] == {
        "staging": {"jobs": 3, "objects": 4, "bytes": 1200},
        "artifacts": {"jobs": 1, "objects": 3, "bytes": 120},
    }
    assert result["unknown_age"] == {"objects": 2}
    gone = (job_keys("acme", JOB_A, "staging") | job_keys("acme", JOB_B, "staging")
            | job_keys("acme", JOB_B, "artifacts") | job_keys("beta", JOB_E, "staging"))
    assert {info.key for info in s3_store.list("")} == before - gone
    for key in UNTOUCHABLE:
        assert s3_store.get(key).data == b"keep"

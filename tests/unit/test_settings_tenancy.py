import pytest

pytestmark = pytest.mark.unit

import json
import time
from dataclasses import fields
from pathlib import Path

from shared.storage import lease
from shared.core.errors import InputError, TransientError, ValidationError
from shared.core.settings import Settings
from shared.storage.store import LocalStore
from shared.core.tenancy import (DEFAULT_TENANT, identifier, new_job_id, table_name, tenant_prefix,
                            validate_artifact_name, validate_job_id, validate_tenant)

# `$` in TENANT_RE / JOB_RE / ARTIFACT_NAME_RE also matches before a trailing "\n", and the
# validators use re.match: a trailing newline passes validation (fix: fullmatch or `\Z`).

# --- Settings ---------------------------------------------------------------------------------


def test_defaults_from_an_empty_env():
    s = Settings.from_env(env={})
    assert s == Settings()
    assert s.mode == "embedded"
    assert s.home == Path(".udb")
    assert s.store == "local"
    assert s.bucket == "udb"
    assert s.s3_region == "us-east-1"
    assert s.job_events_topic == "udb.job-events"
    assert s.broker_url == ""
    assert (s.namespace, s.broker_name) == ("udb", "udb")
    assert s.eventing_dir == Path(__file__).resolve().parents[2] / "eventing"
    assert s.profile_sample_rows == 50_000
    assert s.staging_part_bytes == 64 * 1024 * 1024
    assert (s.lease_seconds, s.lease_wait_seconds) == (10, 60)
    assert (s.duckdb_memory_limit, s.duckdb_threads) == ("1GB", 2)
    assert s.strict_startup is False
    assert s.log_level == "INFO"


def test_conversions():
    s = Settings.from_env(env={"UDB_DUCKDB_THREADS": "8", "UDB_STRICT_STARTUP": "yes", "UDB_HOME": "/data/udb",
                               "UDB_EVENTING_DIR": "ev", "UDB_MODE": "stack", "K_SINK": "http://broker",
                               "UDB_LEASE_SECONDS": "-5"})
    assert s.duckdb_threads == 8 and isinstance(s.duckdb_threads, int)
    assert s.strict_startup is True
    assert s.home == Path("/data/udb") and isinstance(s.home, Path)
    assert s.eventing_dir == Path("ev")
    assert s.mode == "stack"
    assert s.broker_url == "http://broker"
    assert s.lease_seconds == -5


@pytest.mark.parametrize("raw,value", [("1", True), ("true", True), ("TRUE", True), ("on", True), ("Yes", True),
                                       ("0", False), ("false", False), ("no", False), ("OFF", False)])
def test_bool_conversion(raw, value):
    assert Settings.from_env(env={"UDB_STRICT_STARTUP": raw}).strict_startup is value


def test_empty_env_value_means_default():
    assert Settings.from_env(env={"UDB_DUCKDB_THREADS": "", "UDB_MODE": ""}) == Settings()


def test_bad_values_reported_together():
    with pytest.raises(ValidationError) as info:
        Settings.from_env(env={"UDB_DUCKDB_THREADS": "many", "UDB_MODE": "turbo",
                               "UDB_STRICT_STARTUP": "maybe", "UDB_STORE": "ftp"})
    problems = info.value.problems
    assert set(problems) == {"UDB_DUCKDB_THREADS", "UDB_MODE", "UDB_STRICT_STARTUP", "UDB_STORE"}
    assert problems["UDB_DUCKDB_THREADS"] == "expected int, found 'many'"
    assert problems["UDB_STRICT_STARTUP"] == "expected bool, found 'maybe'"
    assert "turbo" in problems["UDB_MODE"]
    assert "UDB_DUCKDB_THREADS" in str(info.value) and "UDB_MODE" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_int_and_bad_mode():
    with pytest.raises(ValidationError) as info:
        Settings.from_env(env={"UDB_REPORT_SAMPLE_ROWS": "5k", "UDB_MODE": "prod"})
    assert set(info.value.problems) == {"UDB_REPORT_SAMPLE_ROWS", "UDB_MODE"}


def test_s3_needs_endpoint_or_credentials():
    with pytest.raises(ValidationError) as info:
        Settings.from_env(env={"UDB_STORE": "s3"})
    assert set(info.value.problems) == {"UDB_S3_ENDPOINT"}
    assert Settings.from_env(env={"UDB_STORE": "s3", "UDB_S3_ENDPOINT": "http://minio:9000"}).store == "s3"


def test_overrides_win():
    env = {"UDB_MODE": "stack", "UDB_DUCKDB_THREADS": "not-a-number", "UDB_LOG_LEVEL": "DEBUG"}
    s = Settings.from_env(env=env, mode="cluster", duckdb_threads=4)
    assert s.mode == "cluster"
    assert s.duckdb_threads == 4  # the bad env value is never read
    assert s.log_level == "DEBUG"


def test_overrides_are_still_checked():
    with pytest.raises(ValidationError) as info:
        Settings.from_env(env={}, mode="nonsense")
    assert set(info.value.problems) == {"UDB_MODE"}


def test_from_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("UDB_BUCKET", "from-os")
    assert Settings.from_env().bucket == "from-os"
    assert Settings.from_env(env={}).bucket == "udb"


def test_documented_lists_every_field():
    doc = Settings.documented()
    assert len(doc) == len(fields(Settings))
    names = [env for env, _, _ in doc]
    assert names == [f.metadata["env"] for f in fields(Settings)]
    assert len(set(names)) == len(names)
    for env, default, meaning in doc:
        assert env.startswith("UDB_") or env in ("K_SINK", "BROWSER_PATH")  # set by the platform, read by UDB
        assert meaning
    assert ("UDB_MODE", "embedded", "embedded | stack | cluster") in doc
    assert ("UDB_DUCKDB_THREADS", "2", "DuckDB threads per connection") in doc


# --- tenancy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tenant", ["ab", "demo", "acme-corp", "a1", "a" + "b" * 30, "x-1-2"])
def test_valid_tenants(tenant):
    assert validate_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["a", "", "a" + "b" * 31, "Acme", "ACME", "1abc", "-ab", "a_b", "a.b", "a b",
                                    "ab/cd", "../ab", "ab\n", None, 42])
def test_invalid_tenants(tenant):
    with pytest.raises(InputError):
        validate_tenant(tenant)


def test_tenant_boundary_lengths():
    assert validate_tenant("a" * 31)
    with pytest.raises(InputError):
        validate_tenant("a" * 32)
    assert validate_tenant("ab")
    with pytest.raises(InputError):
        validate_tenant("a")


def test_default_tenant_and_prefix():
    assert validate_tenant(DEFAULT_TENANT) == "demo"
    assert tenant_prefix("demo") == "tenants/demo/"
    with pytest.raises(InputError):
        tenant_prefix("Demo")


@pytest.mark.parametrize("job_id", ["job-0123456789abcdef", "job-ffffffffffffffff", "job-0000000000000000"])
def test_valid_job_ids(job_id):
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["job-0123456789ABCDEF", "job-0123456789abcde", "job-0123456789abcdef0",
                                    "0123456789abcdef", "job_0123456789abcdef", "job-0123456789abcdeg",
                                    "job-0123456789abcdef\n", "", None])
def test_invalid_job_ids(job_id):
    with pytest.raises(InputError):
        validate_job_id(job_id)


def test_new_job_ids_are_valid_and_distinct():
    ids = {new_job_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(validate_job_id(i) for i in ids)


@pytest.mark.parametrize("text,expected", [
    ("Sales 2024.csv", "sales_2024_csv"),
    ("sales", "sales"),
    ("ORDERS", "orders"),
    ("  Order Items  ", "order_items"),
    ("order--items__v2", "order_items_v2"),
    ("2024 sales", "t_2024_sales"),
    ("42", "t_42"),
    ("", "t"),
    ("!!!", "t"),
    ("Héllo Wörld", "h_llo_w_rld"),
    ("a" * 60, "a" * 48),
])
def test_identifier(text, expected):
    assert identifier(text) == expected


def test_identifier_fallback():
    assert identifier("", "s") == "s"
    assert identifier("9lives", "src") == "src_9lives"


def test_table_name():
    assert table_name("demo", "Sales") == "demo__sales"
    assert table_name("My Files", "Sales 2024") == "my_files__sales_2024"
    assert table_name("1st", "") == "s_1st__t"


@pytest.mark.parametrize("name", ["index.json", "report.html", "a", "K-1_x.v2.parquet", "x" * 128])
def test_valid_artifact_names(name):
    assert validate_artifact_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../index.json", "a..b", "x" * 129, "-a", "a b", None,
                                  "index.json\n"])
def test_invalid_artifact_names(name):
    with pytest.raises(InputError):
        validate_artifact_name(name)


# --- lease ------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def holder(store, tenant="acme"):
    info = store.head(lease.lease_key(tenant))
    return None if info is None else json.loads(store.get(info.key).data)["owner"]


def test_lease_key():
    assert lease.lease_key("acme") == "locks/acme/warehouse.lease"
    with pytest.raises(InputError):
        lease.lease_key("../acme")


def test_acquire_then_second_acquire_times_out(store):
    first = lease.acquire(store, "acme", seconds=60, wait=0, owner="one")
    assert first.owner == "one" and first.key == "locks/acme/warehouse.lease"
    assert holder(store) == "one"
    started = time.monotonic()
    with pytest.raises(TransientError):
        lease.acquire(store, "acme", seconds=60, wait=0.2, owner="two", poll=0.05)
    assert 0.2 <= time.monotonic() - started < 2
    assert holder(store) == "one"


def test_release_then_acquire_succeeds(store):
    first = lease.acquire(store, "acme", seconds=60, wait=0, owner="one")
    lease.release(store, first)
    assert store.head(first.key) is None
    second = lease.acquire(store, "acme", seconds=60, wait=0, owner="two")
    assert holder(store) == "two"
    assert second.etag == store.head(second.key).etag


def test_leases_are_per_tenant(store):
    lease.acquire(store, "acme", seconds=60, wait=0, owner="one")
    other = lease.acquire(store, "beta", seconds=60, wait=0, owner="two")
    assert other.key == "locks/beta/warehouse.lease"
    assert (holder(store, "acme"), holder(store, "beta")) == ("one", "two")


def test_expired_lease_is_taken_over_and_old_release_keeps_new_holder(store):
    old = lease.acquire(store, "acme", seconds=0.01, wait=0, owner="old")
    time.sleep(0.05)
    new = lease.acquire(store, "acme", seconds=60, wait=0.5, owner="new", poll=0.01)
    assert new.owner == "new"
    assert holder(store) == "new"
    lease.release(store, old)  # the old owner wakes up late: nothing of its own to release
    assert holder(store) == "new"
    assert store.head(new.key).etag == new.etag
    with pytest.raises(TransientError):
        lease.renew(store, old, seconds=60)
    with pytest.raises(TransientError):
        lease.acquire(store, "acme", seconds=60, wait=0, owner="third")
    lease.release(store, new)
    assert store.head(new.key) is None


def test_renew_extends_and_changes_etag(store):
    first = lease.acquire(store, "acme", seconds=60, wait=0, owner="one")
    renewed = lease.renew(store, first, seconds=120)
    assert renewed.owner == "one"
    assert renewed.etag != first.etag
    assert renewed.expires > first.expires
    lease.release(store, first)  # stale etag: does not release the renewed lease
    assert holder(store) == "one"
    lease.release(store, renewed)
    assert holder(store) is None

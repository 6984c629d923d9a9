"""shared/storage/duck.py: DuckDB connections that never download, and safe SQL literals."""
from __future__ import annotations

import stat
import time

import duckdb
import pytest

from shared.core.errors import TransientError
from shared.storage import duck

pytestmark = pytest.mark.unit


@pytest.fixture
def con():
    con = duck.connect()
    yield con
    con.close()


def test_connect_never_downloads_and_reads_no_stored_secrets(con):
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('autoinstall_known_extensions', "
        "'allow_unsigned_extensions', 'secret_directory', 'threads', 'memory_limit')").fetchall())
    assert settings["autoinstall_known_extensions"] == "false"
    assert settings["allow_unsigned_extensions"] == "false"
    assert settings["threads"] == "2"
    assert settings["memory_limit"] in ("1.0 GiB", "953.6 MiB", "1.0 GB")
    secrets_dir = duck._no_stored_secrets()
    assert settings["secret_directory"] == str(secrets_dir)
    assert list(secrets_dir.iterdir()) == []
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert duck._no_stored_secrets() == secrets_dir   # one per process


def test_connect_to_a_file_and_read_only(tmp_path):
    path = tmp_path / "w.duckdb"
    with duck.connect(path, threads=1) as con:
        con.execute("CREATE TABLE t AS SELECT range AS i FROM range(5)")
    with duck.connect(path, read_only=True) as con:
        assert duck.scalar(con, "SELECT sum(i) FROM t") == 10
        with pytest.raises(duckdb.Error):
            con.execute("INSERT INTO t VALUES (9)")


def test_one_and_scalar(con):
    assert duck.one(con, "SELECT 1, 'a', NULL") == (1, "a", None)
    assert duck.scalar(con, "SELECT count(*) FROM range(7)") == 7
    with pytest.raises(RuntimeError, match="expected one row, found none: SELECT 1 WHERE false"):
        duck.one(con, "SELECT 1 WHERE false")


@pytest.mark.parametrize("identifier", ["plain", "Mixed Case", 'quo"te', 'x""y', "select", "ü"])
def test_quote_names_any_column(con, identifier):
    con.execute(f"CREATE TABLE q ({duck.quote(identifier)} INTEGER)")
    assert [d[0] for d in con.execute("SELECT * FROM q").description] == [identifier]
    assert duck.quote('a"b') == '"a""b"'


@pytest.mark.parametrize("value,sql", [
    (None, "NULL"), (True, "TRUE"), (False, "FALSE"), (3, "3"), (-2.5, "-2.5"),
    ("it's", "'it''s'"), ("back\\slash", "'back\\slash'"), ([1, "a", None], "[1, 'a', NULL]"),
    ((), "[]"),
])
def test_literal_text(value, sql):
    assert duck.literal(value) == sql


@pytest.mark.parametrize("value", ["it's", "a\\nb", "'; DROP TABLE t; --", "ünï\ncode\t", "", 12345678901234,
                                   -7, True, None])
def test_literal_round_trips_through_duckdb(con, value):
    assert duck.scalar(con, f"SELECT {duck.literal(value)}") == value


def test_literal_lists_round_trip(con):
    assert duck.scalar(con, f"SELECT {duck.literal(['x', 'y'])}") == ["x", "y"]
    # A float's literal is DuckDB's exact decimal (0.1 reads back as DECIMAL 0.1), a large one a double.
    assert float(duck.scalar(con, f"SELECT {duck.literal(0.1)}")) == 0.1
    assert duck.scalar(con, f"SELECT {duck.literal(1e300)}") == 1e300


def test_literal_refuses_nul():
    with pytest.raises(ValueError, match="cannot hold a NUL"):
        duck.literal("a\x00b")


def test_function_extensions():
    assert duck.function_extensions("writer") == ("httpfs", "ducklake")
    assert duck.function_extensions("sync") == ("httpfs", "postgres_scanner", "excel")
    assert duck.function_extensions("anything-else") == ("httpfs", "postgres_scanner", "excel", "ducklake")
    assert set(duck.FUNCTION_EXTENSIONS) == {"discover", "sync", "writer", "analyze", "artifacts", "reports"}


def test_extensions_load_from_their_packages(con):
    path = duck.extension_path("excel")
    assert path.name == "excel.duckdb_extension"
    assert f"v{duckdb.__version__}" in path.parts
    duck.load(con, "excel")
    loaded = dict(con.execute("SELECT extension_name, loaded FROM duckdb_extensions()").fetchall())
    assert loaded["excel"] is True


def test_an_unknown_extension_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(duck.EXTENSION_PACKAGES, "nosuch", "udb_no_such_extension_package")
    with pytest.raises(TransientError, match="needs the package udb-no-such-extension-package"):
        duck.extension_path("nosuch")


def test_literal_of_infinite_and_nan_floats_is_a_double(con):
    import math

    assert duck.literal(float("inf")) == "'inf'::DOUBLE" and duck.literal(float("-inf")) == "'-inf'::DOUBLE"
    assert duck.scalar(con, f"SELECT {duck.literal(float('inf'))}") == math.inf
    assert duck.scalar(con, f"SELECT {duck.literal(float('-inf'))}") == -math.inf
    assert math.isnan(duck.scalar(con, f"SELECT {duck.literal(float('nan'))}"))
    assert duck.scalar(con, f"SELECT {duck.literal([1.5, float('inf')])}") == [1.5, math.inf]


# --- spares: instances opened ahead of the request that takes them -----------------------------

LAKE = ("ducklake",)
LAKE_S3 = ("ducklake", "httpfs")  # a lake in S3: the stack's writer and analyze


@pytest.fixture
def spares():
    duck.spares.close()
    duck.spares.opened = duck.spares.taken = 0
    delay, duck.spares.refill_delay = duck.spares.refill_delay, 0.0
    yield duck.spares
    duck.spares.close()
    duck.spares.refill_delay = delay


def _setting(con, name: str) -> str:
    return duck.scalar(con, f"SELECT current_setting({duck.literal(name)})::VARCHAR")


def test_a_kept_kind_is_taken_ready_with_the_callers_limits_and_replaced(spares):
    spares.keep([LAKE])
    spares.fill(wait=True)
    assert (spares.opened, spares.taken) == (1, 0)
    con = duck.connect(extensions=LAKE, memory_limit="512MB", threads=3)
    assert spares.taken == 1
    loaded = {r[0] for r in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert "ducklake" in loaded
    # The caller's limits, exactly as a connect-time config sets them.
    with duck.connect(memory_limit="512MB", threads=3) as plain:
        assert _setting(con, "memory_limit") == _setting(plain, "memory_limit")
    assert _setting(con, "threads") == "3"
    assert _setting(con, "allow_unsigned_extensions") == "false"
    assert _setting(con, "autoinstall_known_extensions") == "false"
    assert _setting(con, "secret_directory") == str(duck._no_stored_secrets())
    con.close()
    spares.fill(wait=True)  # the replacement was started by the take; wait for it
    assert spares.opened == 2


def test_a_takes_replacement_waits_before_it_opens(spares):
    """Not while the job that took the spare runs: its replacement opens after the delay."""
    spares.refill_delay = 0.5
    spares.keep([LAKE])
    spares.fill(wait=True)
    duck.connect(extensions=LAKE).close()
    time.sleep(0.2)
    assert (spares.opened, spares.taken) == (1, 1)  # still waiting
    spares.fill(wait=True)
    assert spares.opened == 2


def test_no_instance_is_handed_out_twice_and_none_keeps_a_previous_requests_state(spares, tmp_path):
    """Tenant isolation: what one request did on its instance (a lake attached, a secret, a
    table, the configuration locked) is never seen by the next request's instance."""
    spares.keep([LAKE_S3])
    spares.fill(wait=True)
    first = duck.connect(extensions=LAKE_S3)
    first.execute(f"ATTACH {duck.literal('ducklake:' + str(tmp_path / 'a.ducklake'))} AS lake "
                  f"(DATA_PATH {duck.literal(str(tmp_path / 'a') + '/')})")
    first.execute("CREATE TABLE lake.main.secret_rows AS SELECT 42 AS answer")
    first.execute("CREATE TABLE memory.main.scratch AS SELECT 1 AS x")
    first.execute("CREATE TEMPORARY SECRET tenant_a (TYPE s3, KEY_ID 'a-key', SECRET 'a-secret', "
                  "SCOPE 's3://udb/tenants/a/')")
    first.execute("SET lock_configuration = true")
    spares.fill(wait=True)
    second = duck.connect(extensions=LAKE_S3)
    assert spares.taken == 2 and second is not first
    assert second.execute("SELECT count(*) FROM duckdb_secrets()").fetchone() == (0,)
    assert sorted(r[0] for r in second.execute("SELECT database_name FROM duckdb_databases()").fetchall()) == \
        ["memory", "system", "temp"]
    assert second.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)
    assert _setting(second, "lock_configuration") == "false"
    second.execute("SET threads = 1")  # not locked: its own configuration
    # ... and the first request's instance still has its own (it is not shared either).
    assert first.execute("SELECT answer FROM lake.main.secret_rows").fetchone() == (42,)
    first.close()
    second.close()


def test_only_a_kept_kind_and_only_an_in_memory_instance_is_taken(spares, tmp_path):
    spares.keep([LAKE])
    spares.fill(wait=True)
    for con in (duck.connect(), duck.connect(extensions=LAKE_S3),
                duck.connect(tmp_path / "w.duckdb", extensions=LAKE)):
        con.close()
    assert (spares.opened, spares.taken) == (1, 0)
    spares.close()  # a function's stop: nothing kept any more
    with duck.connect(extensions=LAKE):
        pass
    assert (spares.opened, spares.taken) == (1, 0)


def test_a_forked_child_never_takes_its_parents_spare(spares):
    import os

    spares.keep([LAKE])
    spares.fill(wait=True)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's spare is not handed out here
        try:
            answer = b"none" if duck.spares.take(LAKE) is None and duck.spares.opened == 0 else b"took"
        except BaseException:
            answer = b"error"
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"none"
    with duck.connect(extensions=LAKE):  # the parent's spare is still its own
        pass
    assert spares.taken == 1

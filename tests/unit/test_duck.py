"""shared/storage/duck.py: DuckDB connections that never download, and safe SQL literals."""
from __future__ import annotations

import stat

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

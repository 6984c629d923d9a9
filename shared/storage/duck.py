"""DuckDB connections with extensions loaded from their PyPI packages, never downloaded."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import duckdb

from shared.core.errors import TransientError

# extension name -> the PyPI package that ships its binary for our pinned DuckDB version
EXTENSION_PACKAGES = {
    "httpfs": "duckdb_extension_httpfs",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "excel": "duckdb_extension_excel",
    "ducklake": "duckdb_extension_ducklake",
}
# The extensions each function loads, so the packages its image ships (images/requirements.py)
# and checks at /readyz (shared/serving/httpfn.py): ducklake, and httpfs for a lake in S3, where the
# tenant's lake is read or written (shared/storage/lake.py, analyze's KPI connection); postgres_scanner,
# excel and httpfs where sources are read (shared/sources). tests/unit/test_images.py checks it
# against the extension names each function's modules use. Any other name gets all of them.
FUNCTION_EXTENSIONS = {
    "discover": ("httpfs", "postgres_scanner", "excel"),
    "sync": ("httpfs", "postgres_scanner", "excel"),
    "writer": ("httpfs", "ducklake"),
    "analyze": ("httpfs", "ducklake"),
    "artifacts": ("httpfs", "postgres_scanner", "excel", "ducklake"),
    "reports": ("httpfs", "ducklake"),
}


def function_extensions(function: str) -> tuple[str, ...]:
    """The extensions `function` loads (FUNCTION_EXTENSIONS); every one for any other name."""
    return FUNCTION_EXTENSIONS.get(function, tuple(EXTENSION_PACKAGES))


def extension_path(name: str) -> Path:
    package = EXTENSION_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TransientError(f"DuckDB extension {name!r} needs the package {package.replace('_', '-')}")
    root = Path(list(spec.submodule_search_locations)[0]) / "extensions" / f"v{duckdb.__version__}"
    path = root / f"{name}.duckdb_extension"
    if not path.is_file():
        raise TransientError(f"DuckDB extension {name!r} not found at {path} (DuckDB {duckdb.__version__})")
    return path


_EMPTY: list[Path] = []


def _no_stored_secrets() -> Path:
    """A private (0700), empty directory for DuckDB's persistent secrets, made once per process."""
    if not _EMPTY:
        import tempfile
        _EMPTY.append(Path(tempfile.mkdtemp(prefix="udb-duckdb-secrets-")))
    return _EMPTY[0]


def connect(path: str | Path = ":memory:", *, read_only: bool = False, memory_limit: str = "1GB",
            threads: int = 2, extensions: tuple[str, ...] = ()) -> duckdb.DuckDBPyConnection:
    config: dict[str, str | bool | int | float | list[str]] = {
        # Nothing may download at run time: no extension repository, ever.
        "autoinstall_known_extensions": False,
        "allow_unsigned_extensions": False,
        # No secrets from ~/.duckdb/stored_secrets: a persistent S3 or PostgreSQL secret of the
        # host would be an ambient credential for a tenant's source (issue 16). (Turning
        # persistent secrets off instead breaks the postgres scanner's ATTACH.)
        "secret_directory": str(_no_stored_secrets()),
        "memory_limit": memory_limit,
        "threads": threads,
    }
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    for name in extensions:
        load(con, name)
    return con


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple:
    """The one row of a query that always returns one (an aggregate, a COPY's row count)."""
    row = con.execute(sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"expected one row, found none: {sql[:120]}")
    return row


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> Any:
    """The first column of `one(con, sql)`, e.g. `scalar(con, "SELECT count(*) FROM t")`."""
    return one(con, sql, params)[0]


def load(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(f"LOAD '{extension_path(name)}'")


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(value) -> str:
    """A SQL literal for a string, a number, None or a list of those.

    Why not a `?` parameter: DuckDB's Python client imports pandas (about 1 s) the first time
    any Python value is bound to a parameter, and the core path (discover, sync, writer,
    analyze) otherwise never needs pandas. Strings are single-quoted with quotes doubled, which
    is all DuckDB's standard string literal needs (no backslash escapes)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and not math.isfinite(value):
        # repr gives `inf`/`nan`, which SQL reads as column names.
        return f"'{value}'::DOUBLE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    text = str(value)
    if "\x00" in text:
        raise ValueError("a SQL string literal cannot hold a NUL character")
    return "'" + text.replace("'", "''") + "'"

"""DuckDB connections with extensions loaded from their PyPI packages, never downloaded."""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from shared.core.errors import TransientError

_log = logging.getLogger("udb.duck")

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


def _config(memory_limit: str, threads: int) -> dict[str, str | bool | int | float | list[str]]:
    return {
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


def _open(path: str | Path, read_only: bool, memory_limit: str, threads: int,
          extensions: tuple[str, ...]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=read_only, config=_config(memory_limit, threads))
    try:
        for name in extensions:
            load(con, name)
    except BaseException:
        con.close()
        raise
    return con


def connect(path: str | Path = ":memory:", *, read_only: bool = False, memory_limit: str = "1GB",
            threads: int = 2, extensions: tuple[str, ...] = ()) -> duckdb.DuckDBPyConnection:
    """A new DuckDB instance (a file, or an in-memory database) with `extensions` loaded.

    An in-memory instance whose extensions the process keeps spares of (`spares.keep`, a
    served function's start) is the spare opened ahead of this call, never used before; the
    next spare is opened in the background."""
    kind = tuple(extensions)
    if str(path) == ":memory:" and not read_only:
        con = spares.take(kind)
        if con is not None:
            # The spare was opened with the default limits: this caller's are set now (both are
            # instance settings a SET changes exactly as the connect-time config does).
            con.execute(f"SET memory_limit = {literal(memory_limit)}")
            con.execute(f"SET threads = {int(threads)}")
            return con
    return _open(path, read_only, memory_limit, threads, kind)


class Spares:
    """In-memory DuckDB instances with their extensions loaded, opened ahead of the request
    that takes them: one spare per kind (a tuple of extension names) the process keeps.

    Loading an extension into a new instance checks its signature over the whole file (ducklake
    36 MB, httpfs 22 MB): 0.1-0.3 s of CPU that the writer and analyze paid per job on the way
    to `completed`. A spare moves that cost off the request: each request still gets an
    instance of its own, fresh, that no other request (nor tenant) has touched, and closes it
    as before; an instance is never handed out twice.

    Forks: a spare is opened on a background thread, which must not be mid-way when a process
    forks (the child would inherit DuckDB's and the allocator's locks held). So a fork waits for
    an opening under way to end, and the child starts with no spares (the parent's are left
    unclosed there, referenced forever: their threads did not survive the fork). Nothing is
    opened until the first `fill` or `take` in the process that serves, so a gunicorn master,
    which only forks, never opens one."""

    def __init__(self) -> None:
        self._kinds: set[tuple[str, ...]] = set()
        self._ready: dict[tuple[str, ...], duckdb.DuckDBPyConnection] = {}
        self._filling: dict[tuple[str, ...], threading.Thread] = {}
        self._lock = threading.Lock()
        self._opening = threading.Lock()  # held while a spare is opened; a fork waits for it
        self._abandoned: list = []  # a fork child's inherited spares (never closed there)
        # A take's replacement waits this long before it opens: not while the job that took the
        # spare (and the next function's stage of it, on the same few cores) is running.
        self.refill_delay = 2.0
        self.opened = 0  # spares opened in this process
        self.taken = 0   # spares handed to a caller
        # Lambdas, not bound methods: the child replaces the lock, and its own forks need the new one.
        os.register_at_fork(before=lambda: self._opening.acquire(), after_in_parent=lambda: self._opening.release(),
                            after_in_child=self._forked)

    def keep(self, kinds) -> None:
        """Keep a spare of each kind (a tuple of extension names) from now on; opened by the
        next `fill` (a served function's worker calls it when it starts) or after a `take`."""
        with self._lock:
            self._kinds.update(tuple(k) for k in kinds)

    def take(self, kind: tuple[str, ...]) -> duckdb.DuckDBPyConnection | None:
        """The spare of `kind` (None when the process keeps none or it is not ready yet: the
        caller opens its own); another is opened in the background either way."""
        if kind not in self._kinds:
            return None
        with self._lock:
            con = self._ready.pop(kind, None)
            if con is not None:
                self.taken += 1
        if con is None:  # the first job of a process, or jobs closer together than the refill
            _log.info("no DuckDB spare with %s ready: this job opens its own", ", ".join(kind) or "no extensions")
        self.fill(delay=self.refill_delay)
        return con

    def fill(self, wait: bool = False, delay: float = 0.0) -> None:
        """Open, on a background thread, a spare of each kept kind that has none, after `delay`
        seconds; `wait` until every spare under way is open (tests)."""
        started = []
        with self._lock:
            for kind in self._kinds - set(self._ready) - set(self._filling):
                thread = threading.Thread(target=self._open_spare, args=(kind, delay), daemon=True,
                                          name=f"udb-duckdb-spare-{'-'.join(kind) or 'plain'}")
                self._filling[kind] = thread
                started.append(thread)
            under_way = list(self._filling.values())
        for thread in started:
            thread.start()
        if wait:
            for thread in under_way:
                thread.join()

    def _open_spare(self, kind: tuple[str, ...], delay: float = 0.0) -> None:
        if delay > 0:
            time.sleep(delay)
        if kind not in self._kinds:  # closed meanwhile (a function's stop)
            with self._lock:
                self._filling.pop(kind, None)
            return
        try:
            with self._opening:
                con = _open(":memory:", False, "1GB", 1, kind)
        except Exception as exc:  # a missing extension: the request opening its own says why
            _log.warning("no spare DuckDB instance with %s: %s", kind, exc)
            with self._lock:
                self._filling.pop(kind, None)
            return
        with self._lock:
            self._filling.pop(kind, None)
            if kind in self._kinds and kind not in self._ready:
                self._ready[kind] = con
                self.opened += 1
                return
        con.close()  # not kept any more (close ran meanwhile)

    def close(self) -> None:
        """Close every spare and keep none (a function's stop)."""
        with self._lock:
            ready, self._ready, self._kinds = list(self._ready.values()), {}, set()
        for con in ready:
            con.close()

    def _forked(self) -> None:
        self._abandoned.extend(self._ready.values())
        self._ready, self._filling = {}, {}
        self._lock, self._opening = threading.Lock(), threading.Lock()
        self.opened = self.taken = 0


spares = Spares()


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

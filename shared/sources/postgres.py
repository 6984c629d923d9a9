"""PostgreSQL databases: `postgresql://user:pass@host:port/db[?table=schema.name]` (or `postgres://`).

`inspect` attaches the database read-only through DuckDB's postgres_scanner (loaded from its PyPI
package) and lists every readable table, view and materialized view outside the system schemas,
with DuckDB column types and primary keys: one stream per relation, named `<table>` in `public`
and `<schema>_<table>` elsewhere. `?table=schema.name` (or `?schema=..&table=..`) narrows it to
one. `extract` copies one relation into chunked Parquet with
`COPY (SELECT * FROM pg.schema.table) TO ...`, streaming, as files.extract does.

Passwords never reach stored JSON. A stream's `location` is the DSN *without* the password
(`postgresql://user@host:port/db?schema=s&table=t`), and `redact(hint)` shows a hint's password
as `***` for the source document and the job. Until UDB has a secret store (issue 8), the stand-in
is libpq's own password file (`.pgpass` format: `host:port:db:user:password`, mode 0600), which
is keyed by exactly the parts a password-less DSN keeps, so no reference field is needed:
- `inspect` of a DSN that carries a password records it in `<UDB_HOME>/secrets/pgpass` once the
  connection has succeeded (embedded mode and a single-machine stack therefore just work);
- `extract` connects with `passfile=<that file>` when it exists, so libpq finds the password
  itself; libpq's usual sources still apply before it (`PGPASSWORD`), or instead of it when UDB
  has no file (`PGPASSFILE`, `~/.pgpass`);
- on a cluster, mount a Kubernetes Secret holding a pgpass file at `$UDB_HOME/secrets/pgpass`
  for the sync function (discover's write to a read-only mount is skipped with a warning).
A redacted hint (`***` as password) can be discovered again: the password then comes from the
same places.

Errors: a wrong DSN, an unreachable server, a failed login or a missing database/table at
`inspect` is a SourceError with libpq's one-line reason (connect_timeout=5: never a hang). At
`extract`, the same failures are SourceErrors, except a server that refuses or times out, which
is a TransientError (it answered at discovery: retry later).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from shared import duck, netguard
from shared.errors import SourceError, TransientError
from shared.settings import Settings
from shared.tenancy import identifier

PROVIDER = "postgres"
SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 5
REDACTED = "***"
DEFAULT_PORT = 5432
# libpq parameters a hint may carry besides the table selection; nothing that names local files.
ALLOWED_PARAMS = {"sslmode", "application_name", "target_session_attrs", "connect_timeout"}
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dsn:
    host: str | None
    port: int
    dbname: str
    user: str | None
    password: str | None = field(default=None, repr=False)
    params: tuple[tuple[str, str], ...] = ()
    schema: str | None = None
    table: str | None = None

    def where(self) -> str:
        """`user@host:port/db`: how errors name the database, never with the password."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{_host_for_uri(self.host) or 'localhost'}:{self.port}/{self.dbname}"

    def uri(self, *, schema: str | None = None, table: str | None = None, password: str | None = None) -> str:
        """The DSN as a URI, without the password unless one is passed (e.g. REDACTED)."""
        auth = ""
        if self.user:
            auth = quote(self.user, safe="")
            if password:
                auth += ":" + (password if password == REDACTED else quote(password, safe=""))
            auth += "@"
        query = list(self.params)
        schema, table = schema or self.schema, table or self.table
        if table:
            query += ([("schema", schema)] if schema else []) + [("table", table)]
        tail = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{auth}{_host_for_uri(self.host)}:{self.port}/{quote(self.dbname, safe='')}{tail}"

    def conninfo(self, *, passfile: Path | None = None) -> str:
        """A libpq keyword/value connection string (with the password when the DSN has one)."""
        values = {"host": self.host, "port": str(self.port), "dbname": self.dbname, "user": self.user,
                  "password": self.password, "connect_timeout": str(CONNECT_TIMEOUT)}
        for key, value in self.params:
            if key == "connect_timeout":  # a hint may shorten it, never lengthen it
                value = str(max(1, min(CONNECT_TIMEOUT, int(value))))
            values[key] = value
        if passfile is not None and not self.password:
            values["passfile"] = str(passfile)
        return " ".join(f"{key}={_conn_value(value)}" for key, value in values.items() if value)


def _conn_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _host_for_uri(host: str | None) -> str:
    if host and ":" in host:
        return f"[{host}]"
    return host or ""


def parse(hint: str) -> Dsn:
    """Parse a `postgresql://` / `postgres://` URI. A password of `***` counts as none given."""
    text = hint.strip()
    url = urlsplit(text)
    if url.scheme.lower() not in SCHEMES:
        raise SourceError(f"not a PostgreSQL DSN (expected postgresql://user:pass@host:port/db): {_safe(text)}")
    if "," in url.netloc:
        raise SourceError(f"{_safe(text)}: DSNs with several hosts are not supported")
    try:
        port = url.port or DEFAULT_PORT
    except ValueError:
        raise SourceError(f"{_safe(text)}: the port is not a number") from None
    user = unquote(url.username) if url.username else None
    password = unquote(url.password) if url.password is not None else None
    if password in ("", REDACTED):
        password = None
    dbname = unquote(url.path.lstrip("/"))
    if "/" in dbname:
        raise SourceError(f"{_safe(text)}: the path must be just the database name")
    dbname = dbname or user or "postgres"  # libpq's default: the user name
    params, schema, table, problems = [], None, None, []
    for key, value in parse_qsl(url.query, keep_blank_values=True):
        if key == "table":
            table = value
        elif key == "schema":
            schema = value
        elif key in ALLOWED_PARAMS:
            if key == "connect_timeout" and not value.isdigit():
                problems.append("connect_timeout must be a number of seconds")
            params.append((key, value))
        else:
            problems.append(f"unsupported parameter {key!r} (allowed: table, schema, {', '.join(sorted(ALLOWED_PARAMS))})")
    if problems:
        raise SourceError(f"{_safe(text)}: {'; '.join(problems)}")
    if table is not None and schema is None and "." in table:
        schema, table = table.split(".", 1)
    if table == "" or schema == "":
        raise SourceError(f"{_safe(text)}: empty schema or table name")
    return Dsn(url.hostname, port, dbname, user, password, tuple(params), schema, table)


def redact(hint: str) -> str:
    """The hint with its password shown as `***` (unchanged if it has none or does not parse)."""
    try:
        url = urlsplit(hint.strip())
    except ValueError:  # e.g. a broken [IPv6] host: fall back to a plain pattern
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:" + REDACTED + "@", hint)
    if url.password is None:
        return hint
    netloc = url.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return url._replace(netloc=f"{user}:{REDACTED}@{netloc[1]}").geturl()


def _safe(text: str) -> str:
    return redact(text)


# ---------------------------------------------------------------- the password file (stand-in)

def passfile_path() -> Path:
    return Path(Settings.from_env().home) / "secrets" / "pgpass"


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _pgpass_entry(dsn: Dsn) -> str:
    # libpq matches the host as given in the connection ("localhost" when none is).
    parts = [dsn.host or "localhost", str(dsn.port), dsn.dbname, dsn.user or ""]
    return ":".join(_pgpass_escape(p) for p in parts)


def remember_password(dsn: Dsn, passfile: Path) -> bool:
    """Record the DSN's password in the pgpass file (0600), replacing an older one for the same
    host:port:db:user. False when the file cannot be written (e.g. a read-only Secret mount)."""
    if not dsn.password or not dsn.user:
        return False
    entry = _pgpass_entry(dsn)
    line = f"{entry}:{_pgpass_escape(dsn.password)}\n"
    try:
        passfile.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(passfile.parent / ".pgpass.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                old = passfile.read_text().splitlines(keepends=True) if passfile.exists() else []
                kept = [l for l in old if not l.startswith(entry + ":")]
                if line in old and len(kept) == len(old) - 1:
                    return True
                fd, tmp = tempfile.mkstemp(dir=passfile.parent, prefix=".pgpass-")
                try:
                    os.fchmod(fd, 0o600)
                    with os.fdopen(fd, "w") as out:
                        out.writelines([line] + kept)  # first match wins in libpq
                    os.replace(tmp, passfile)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError as exc:
        log.warning("cannot record the password for %s in %s: %s", dsn.where(), passfile, exc)
        return False
    return True


# ---------------------------------------------------------------- connecting

_REASON = re.compile(r'failed:\s*(?:FATAL:\s*)?(.*)', re.S)


def _reason(exc: Exception, dsn: Dsn, conninfo: str | None = None) -> str:
    """libpq's reason in one line, with no conninfo (and so no password) in it."""
    text = str(exc)
    if conninfo:
        text = text.replace(conninfo, "")
    if dsn.password and dsn.password not in f"{dsn.user} {dsn.dbname} {dsn.host}":
        # Belt and braces; skipped when the password is also a public part of the DSN,
        # where it would only garble the message.
        text = text.replace(dsn.password, REDACTED)
    text = re.sub(r'Unable to connect to Postgres at "[^"]*":\s*', "", text)
    match = _REASON.search(text)
    if match:
        text = match.group(1)
    text = re.sub(r"^[A-Za-z ]*Error:\s*", "", text.strip())
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if "Connection refused" in reason:
        reason += " (is the server running and accepting TCP/IP connections?)"
    return reason


def _unreachable(reason: str) -> bool:
    return any(marker in reason for marker in ("Connection refused", "timeout expired", "timed out",
                                               "could not translate host name", "No route to host",
                                               "Network is unreachable", "server closed the connection"))


def attach(con, dsn: Dsn, *, passfile: Path | None = None) -> None:
    """Attach the database read-only as `pg`; SourceError with libpq's reason when that fails."""
    pf = passfile if passfile is not None and passfile.is_file() else None
    conninfo = dsn.conninfo(passfile=pf)
    host = dsn.host or "localhost"
    # The SSRF guard: a DSN is user input. A unix socket counts as loopback. The checked
    # address is pinned with hostaddr, so libpq does not resolve the name a second time.
    admitted = netguard.check_host("127.0.0.1" if host.startswith("/") else host, dsn.port)
    if not host.startswith("/") and "hostaddr" not in dict(dsn.params):
        conninfo += f" hostaddr={_conn_value(admitted[0])}"
    try:
        con.execute("ATTACH " + "'" + conninfo.replace("'", "''") + "' AS pg (TYPE postgres, READ_ONLY)")
    except Exception as exc:
        reason = _reason(exc, dsn, conninfo)
        if "no password supplied" in reason:
            reason += (f"; give it in the DSN once (postgresql://user:pass@...), or in PGPASSWORD "
                       f"or {passfile or passfile_path()}")
        raise SourceError(f"postgres {dsn.where()}: {reason}") from None


def connect(dsn: Dsn, *, passfile: Path | None = None, memory_limit: str = "1GB", threads: int = 2):
    con = duck.connect(memory_limit=memory_limit, threads=threads, extensions=("postgres_scanner",))
    try:
        attach(con, dsn, passfile=passfile)
    except BaseException:
        con.close()
        raise
    return con


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_RELATIONS_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_total_relation_size(c.oid) ELSE 0 END AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1, 2
"""


def relations(con) -> list[tuple[str, str, str, int]]:
    """(schema, name, relkind, bytes) of every readable user relation, partitions folded in
    their parent."""
    return [(r[0], r[1], r[2], int(r[3] or 0))
            for r in con.execute(f"SELECT * FROM postgres_query('pg', {_lit(_RELATIONS_SQL)})").fetchall()]


def stream_name(schema: str, table: str) -> str:
    return identifier(table if schema == "public" else f"{schema}_{table}")


# ---------------------------------------------------------------- provider interface

def inspect(hint: str, *, passfile: Path | None = None) -> dict:
    dsn = parse(hint)
    passfile = passfile or passfile_path()
    con = connect(dsn, passfile=passfile)
    try:
        remember_password(dsn, passfile)
        try:
            found = relations(con)
        except Exception as exc:
            raise SourceError(f"postgres {dsn.where()}: cannot list tables: {_reason(exc, dsn)}") from None
        if dsn.table is not None:
            found = _select(found, dsn)
        if not found:
            raise SourceError(f"postgres {dsn.where()}: no readable tables outside the system schemas")
        wanted = {(s, t) for s, t, _, _ in found}
        columns: dict[tuple[str, str], list[dict]] = {}
        for schema, table, name, dtype in con.execute(
                "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE database_name = 'pg' AND schema_name NOT IN ('pg_catalog', 'information_schema') "
                "ORDER BY schema_name, table_name, column_index").fetchall():
            if (schema, table) in wanted:
                columns.setdefault((schema, table), []).append({"name": name, "type": dtype})
        keys = {(r[0], r[1]): list(r[2]) for r in con.execute(
            "SELECT schema_name, table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE database_name = 'pg' AND constraint_type = 'PRIMARY KEY'").fetchall()}
    finally:
        con.close()
    streams = []
    for schema, table, kind, size in found:
        cols = columns.get((schema, table))
        if not cols:
            continue  # a relation DuckDB cannot type (e.g. no columns at all)
        temporal = [c["name"] for c in cols if c["type"].startswith(("TIMESTAMP", "DATE"))]
        streams.append({"name": stream_name(schema, table), "format": "postgres",
                        "location": dsn.uri(schema=schema, table=table), "columns": cols,
                        "sync_modes": ["full"], "cursor_candidates": temporal,
                        "primary_key_candidates": keys.get((schema, table), []), "bytes": size})
    if not streams:
        raise SourceError(f"postgres {dsn.where()}: no tables with readable columns")
    names = [s["name"] for s in streams]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise SourceError(f"postgres {dsn.where()}: two tables map to the same name ({', '.join(dupes)}); "
                          f"name one with ?table=schema.name")
    return {"provider": PROVIDER, "short": identifier(dsn.dbname, "db"), "streams": streams}


def _select(found: list, dsn: Dsn) -> list:
    if dsn.schema is not None:
        chosen = [r for r in found if r[0] == dsn.schema and r[1] == dsn.table]
    else:
        chosen = [r for r in found if r[1] == dsn.table]
        if len(chosen) > 1:
            public = [r for r in chosen if r[0] == "public"]
            if not public:
                raise SourceError(f"postgres {dsn.where()}: table {dsn.table!r} is in several schemas "
                                  f"({', '.join(r[0] for r in chosen)}); name one as ?table=schema.name")
            chosen = public
    if not chosen:
        name = f"{dsn.schema}.{dsn.table}" if dsn.schema else dsn.table
        raise SourceError(f"postgres {dsn.where()}: no readable table {name!r}")
    return chosen


def extract(stream: dict, out_dir: Path, *, part_bytes: int, memory_limit: str = "1GB", threads: int = 2,
            passfile: Path | None = None) -> int:
    """Copy one relation into Parquet parts in `out_dir`; returns the row count."""
    dsn = parse(stream["location"])
    if not dsn.table:
        raise SourceError(f"stream {stream.get('name')!r}: location names no table")
    schema = dsn.schema or "public"
    try:
        con = connect(dsn, passfile=passfile or passfile_path(), memory_limit=memory_limit, threads=threads)
    except SourceError as exc:
        if _unreachable(str(exc)):
            raise TransientError(str(exc)) from None
        raise
    try:
        relation = f"pg.{duck.quote(schema)}.{duck.quote(dsn.table)}"
        try:
            rows = con.execute(
                f"COPY (SELECT * FROM {relation}) TO {_lit(str(out_dir))} "
                f"(FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES {int(part_bytes)}, "
                f"FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE)").fetchone()[0]
        except Exception as exc:
            reason = _reason(exc, dsn)
            if "does not exist" in reason and "Table" in str(exc):
                raise SourceError(f"postgres {dsn.where()}: table {schema}.{dsn.table} disappeared since "
                                  f"discovery") from None
            if _unreachable(reason):
                raise TransientError(f"postgres {dsn.where()}: {reason}") from None
            raise SourceError(f"postgres {dsn.where()}: cannot read {schema}.{dsn.table}: {reason}") from None
    finally:
        con.close()
    return int(rows)

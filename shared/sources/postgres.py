"""PostgreSQL databases: `postgresql://user:pass@host:port/db[?table=schema.name]` (or `postgres://`).

`inspect` attaches the database read-only through DuckDB's postgres_scanner (loaded from its PyPI
package) and lists every readable table, view and materialized view outside the system schemas,
with DuckDB column types and primary keys: one stream per relation, named `<table>` in `public`
and `<schema>_<table>` elsewhere. `?table=schema.name` (or `?schema=..&table=..`) narrows it to
one. `extract` copies one relation into chunked Parquet with
`COPY (SELECT * FROM pg.schema.table) TO ...`, streaming, as files.extract does.

Passwords never reach stored JSON, and never cross tenants. A stream's `location` is the DSN
*without* the password (`postgresql://user@host:port/db?schema=s&table=t`), and `redact(hint)`
shows a hint's password as `***` for the source document and the job. The password lives in the
discovering tenant's own secret store (shared/security/secrets.py), under a name derived from
host:port:db:user (`pg-<hash>`), and the streams carry only its reference
(`options.password = secret://pg-<hash>`):
- `inspect` of a DSN that carries a password keeps it in the tenant's secret store once the
  connection has succeeded; a redacted or password-less DSN is connected with the password that
  *this* tenant stored for the same host:port:db:user, if any;
- `extract` resolves the reference in the syncing tenant's store. A reference another tenant's
  catalogue names resolves to nothing there: no password, a failed job;
- the password is handed to libpq as the `password` connection parameter of that one
  connection, never through a file or the environment. libpq's ambient sources are switched off
  for every connection UDB makes to a source (see `conninfo`): `PGPASSWORD` and `~/.pgpass` /
  `PGPASSFILE` (an explicit empty password and a password file that cannot exist), the host's
  client certificate (`sslcertmode=disable`) and Kerberos tickets (`require_auth=!gss,!sspi`,
  `gssencmode=disable`). The probe and DuckDB's postgres scanner (libpq inside the extension)
  both connect with these parameters.
A redacted hint (`***` as password) can be discovered again by the same tenant.

Incremental (`options.incremental`: `true` for each table's first cursor candidate, a
TIMESTAMP/DATE column, or `{cursor_field, initial_value?}`): a sync reads only rows whose cursor
is greater than the last sync's largest (state per source, shared/storage/syncstate.py), and the
writer merges them by the table's primary key (an updated row replaces its old version; a
table without one is appended to). Deletes are not seen.

Errors: a wrong DSN, an unreachable server, a failed login or a missing database/table at
`inspect` is a SourceError with libpq's one-line reason (connect_timeout=5: never a hang). At
`extract`, the same failures are SourceErrors, except a server that refuses or times out, which
is a TransientError (it answered at discovery: retry later).
"""
from __future__ import annotations

import hashlib
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from shared.storage import duck
from shared.security import netguard
from shared.core.errors import NotFound, SourceError, TransientError
from shared.core.settings import Settings
from shared.sources import settings_of
from shared.storage import syncstate as state
from shared.core.tenancy import identifier
from shared.sources.detection import Hint, Scores, Signals
from shared.sources.registry import Connector, register

PROVIDER = "postgres"
OPTIONS = frozenset({"incremental"})
SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 5
REDACTED = "***"
DEFAULT_PORT = 5432
# libpq parameters a hint may carry besides the table selection; nothing that names local files.
ALLOWED_PARAMS = {"sslmode", "application_name", "target_session_attrs", "connect_timeout"}
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")



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

    def conninfo(self, *, password: str | None = None, hostaddr: str | None = None) -> str:
        """A libpq keyword/value connection string with `password` (None: an explicit empty
        one) and the checked address pinned as `hostaddr` (`host` stays, for TLS and errors).

        Every ambient credential libpq would otherwise reach for is switched off here, so the
        only secret a connection can carry is the one passed in: `password=''` keeps
        PGPASSWORD out (libpq fills a parameter from the environment only when it is unset), a
        password file that cannot exist keeps `~/.pgpass` and PGPASSFILE out, `sslcertmode`
        keeps the host's client certificate, `require_auth`/`gssencmode` its Kerberos tickets."""
        values = {"host": self.host, "hostaddr": hostaddr, "port": str(self.port), "dbname": self.dbname,
                  "user": self.user, "connect_timeout": str(CONNECT_TIMEOUT)}
        for key, value in self.params:
            if key == "connect_timeout":  # a hint may shorten it, never lengthen it
                value = str(max(1, min(CONNECT_TIMEOUT, int(value))))
            values[key] = value
        text = " ".join(f"{key}={_conn_value(value)}" for key, value in values.items() if value)
        ambient = {"password": password or "", "passfile": str(_nowhere() / "no-pgpass"),
                   "sslcertmode": "disable", "gssencmode": "disable", "require_auth": "!gss,!sspi"}
        return text + " " + " ".join(f"{key}={_conn_value(value)}" for key, value in ambient.items())


_NOWHERE: list[Path] = []


def _nowhere() -> Path:
    """A private (0700) empty directory: a password file named inside it cannot exist, and
    nobody else can create it."""
    if not _NOWHERE:
        _NOWHERE.append(Path(tempfile.mkdtemp(prefix="udb-pg-")))
    return _NOWHERE[0]


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


# ---------------------------------------------------------------- the tenant's password

def secret_name(dsn: Dsn) -> str:
    """The name a DSN's password has in its tenant's secret store: one per host:port:db:user."""
    key = f"{dsn.host or 'localhost'}:{dsn.port}:{dsn.dbname}:{dsn.user or ''}"
    return "pg-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _secret_store(env):
    """The tenant's secret store, or None where there is none (a bare module call)."""
    if env is None or not getattr(env, "tenant", None):
        return None
    try:
        return env.secret_store()
    except SourceError:
        return None


def stored_password(dsn: Dsn, env) -> str | None:
    """The password this tenant stored for the DSN's host:port:db:user, if any."""
    store = _secret_store(env)
    if store is None:
        return None
    try:
        return store.get(env.tenant, secret_name(dsn))
    except NotFound:
        return None


def remember_password(dsn: Dsn, env) -> str | None:
    """Keep the DSN's password in the tenant's secret store; its `secret://` reference, or None
    when there is no password or no store."""
    if not dsn.password or _secret_store(env) is None:
        return None
    name = secret_name(dsn)
    if stored_password(dsn, env) != dsn.password:
        return env.keep_secret(name, dsn.password)
    return ref_of(dsn)


def ref_of(dsn: Dsn) -> str:
    from shared.security.secrets import ref
    return ref(secret_name(dsn))


def stream_password(stream: dict, dsn: Dsn, env) -> str | None:
    """The password to read a catalogued stream with: the reference the stream carries,
    resolved in the *syncing* tenant's store (a reference into another tenant's store finds
    nothing there), else what this tenant stored for the DSN."""
    reference = (stream.get("options") or {}).get("password")
    if reference:
        if env is None or not getattr(env, "tenant", None):
            raise SourceError(f"postgres {dsn.where()}: the password is in a tenant's secret store, "
                              f"and no tenant is given")
        return env.resolve_secret(reference)
    return dsn.password or stored_password(dsn, env)


# ---------------------------------------------------------------- connecting

_REASON = re.compile(r'failed:\s*(?:FATAL:\s*)?(.*)', re.S)


def _reason(exc: Exception, dsn: Dsn, conninfo: str | None = None, password: str | None = None) -> str:
    """libpq's reason in one line, with no conninfo (and so no password) in it."""
    text = str(exc)
    if conninfo:
        text = text.replace(conninfo, "")
    for secret in {s for s in (dsn.password, password) if s}:
        if secret not in f"{dsn.user} {dsn.dbname} {dsn.host}":
            # Belt and braces; skipped when the password is also a public part of the DSN,
            # where it would only garble the message.
            text = text.replace(secret, REDACTED)
    text = re.sub(r'Unable to connect to Postgres at "[^"]*":\s*', "", text)
    match = _REASON.search(text)
    if match:
        text = match.group(1)
    text = re.sub(r"^[A-Za-z ]*Error:\s*", "", text.strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if "Connection refused" in reason:
        reason += " (is the server running and accepting TCP/IP connections?)"
    return reason


def _unreachable(reason: str) -> bool:
    return any(marker in reason for marker in ("Connection refused", "timeout expired", "timed out",
                                               "could not translate host name", "No route to host",
                                               "Network is unreachable", "server closed the connection"))


def pinned_conninfo(dsn: Dsn, password: str | None, settings: Settings) -> str:
    """The connection string after the SSRF guard: the host is resolved and checked once here,
    and the checked address is pinned with `hostaddr`, so libpq does not resolve the name a
    second time (DNS rebinding). A unix-socket host counts as loopback."""
    host = dsn.host or "localhost"
    admitted = netguard.check_host("127.0.0.1" if host.startswith("/") else host, dsn.port, settings)
    pin = None if host.startswith("/") or "hostaddr" in dict(dsn.params) else admitted[0]
    return dsn.conninfo(password=password, hostaddr=pin)


def _no_password_hint(reason: str) -> str:
    if "no password supplied" in reason:
        reason += ("; give it in the DSN once (postgresql://user:pass@...): each tenant's password is "
                   "its own, and one another tenant gave is never used")
    return reason


def attach(con, dsn: Dsn, *, settings: Settings, password: str | None = None) -> None:
    """Attach the database read-only as `pg`; SourceError with libpq's reason when that fails.
    The host is checked against the SSRF allowlist of `settings` (the caller's)."""
    conninfo = pinned_conninfo(dsn, password, settings)
    try:
        con.execute("ATTACH " + "'" + conninfo.replace("'", "''") + "' AS pg (TYPE postgres, READ_ONLY)")
    except Exception as exc:
        reason = _no_password_hint(_reason(exc, dsn, conninfo, password))
        raise SourceError(f"postgres {dsn.where()}: {reason}") from None


def connect(dsn: Dsn, *, settings: Settings, password: str | None = None, memory_limit: str = "1GB",
            threads: int = 2):
    con = duck.connect(memory_limit=memory_limit, threads=threads, extensions=("postgres_scanner",))
    try:
        attach(con, dsn, settings=settings, password=password)
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

def inspect(hint: str, *, env=None) -> dict:
    dsn = parse(hint)
    password = dsn.password or stored_password(dsn, env)
    con = connect(dsn, settings=settings_of(env), password=password)
    try:
        # Logged in: keep the hint's password in the tenant's store (or point at the one this
        # tenant stored before); a bare call without a store keeps nothing.
        reference = remember_password(dsn, env) if dsn.password else (ref_of(dsn) if password else None)
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
    spec = _incremental_spec(getattr(env, "options", None) or {})
    streams: list[dict] = []
    for schema, table, _kind, size in found:
        cols = columns.get((schema, table))
        if not cols:
            continue  # a relation DuckDB cannot type (e.g. no columns at all)
        temporal = [c["name"] for c in cols if c["type"].startswith(("TIMESTAMP", "DATE"))]
        cursors = temporal + [c["name"] for c in cols if c["name"] not in temporal
                              and c["type"] in _NUMERIC_CURSOR_TYPES and _CURSOR_NAME.search(c["name"])]
        streams.append({"name": stream_name(schema, table), "format": "postgres",
                        "location": dsn.uri(schema=schema, table=table), "columns": cols,
                        "sync_modes": ["full", "incremental"] if cursors else ["full"],
                        "cursor_candidates": cursors,
                        "primary_key_candidates": keys.get((schema, table), []), "bytes": size})
        options: dict[str, Any] = {"password": reference} if reference else {}  # the tenant's secret, by reference
        if spec is not None:
            incremental = _stream_incremental(spec, streams[-1], dsn, several=len(found) > 1)
            if incremental:
                options["incremental"] = incremental
        if options:
            streams[-1]["options"] = options
    if not streams:
        raise SourceError(f"postgres {dsn.where()}: no tables with readable columns")
    table_names = [s["name"] for s in streams]
    if len(set(table_names)) != len(table_names):
        dupes = sorted({n for n in table_names if table_names.count(n) > 1})
        raise SourceError(f"postgres {dsn.where()}: two tables map to the same name ({', '.join(dupes)}); "
                          f"name one with ?table=schema.name")
    return {"provider": PROVIDER, "short": identifier(dsn.dbname, "db"), "streams": streams}


_NUMERIC_CURSOR_TYPES = ("BIGINT", "INTEGER", "SMALLINT", "HUGEINT", "UBIGINT", "UINTEGER")
_CURSOR_NAME = re.compile(r"(updated|modified|changed|version|seq|xmin|lsn)", re.I)


def _incremental_spec(options: dict) -> dict | None:
    spec = options.get("incremental")
    if not spec:
        return None
    if spec is True:
        return {}
    if not isinstance(spec, dict) or set(spec) - {"cursor_field", "initial_value"}:
        raise SourceError("options.incremental: expected true or {cursor_field, initial_value?}, "
                          f"found {spec!r}")
    if "cursor_field" in spec and not isinstance(spec["cursor_field"], str):
        raise SourceError("options.incremental.cursor_field: expected a column name")
    return spec


def _stream_incremental(spec: dict, stream: dict, dsn: Dsn, *, several: bool) -> dict | None:
    """The stream's incremental options, or None where a table of several cannot be read so
    (it stays a full sync, and `detection` says why); with one table, an error."""
    columns = {c["name"]: c["type"] for c in stream["columns"]}
    field = spec.get("cursor_field") or (stream["cursor_candidates"] or [None])[0]
    problem = None
    if field is None:
        problem = "no cursor_field given and no cursor candidate (a TIMESTAMP or DATE column)"
    elif field not in columns:
        problem = f"no column {field!r} (columns: {', '.join(columns)})"
    if problem:
        if several:
            stream.setdefault("detection", []).append(f"full sync: options.incremental: {problem}")
            return None
        raise SourceError(f"postgres {dsn.where()}: options.incremental for {stream['name']}: {problem}")
    out = {"cursor_field": field, "cursor_type": columns[field],
           "primary_key": list(stream["primary_key_candidates"])}
    if spec.get("initial_value") is not None:
        out["initial_value"] = spec["initial_value"]
    return out


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
            env=None) -> int:
    """Copy one relation into Parquet parts in `out_dir`; returns the row count."""
    dsn = parse(stream["location"])
    if not dsn.table:
        raise SourceError(f"stream {stream.get('name')!r}: location names no table")
    schema = dsn.schema or "public"
    password = stream_password(stream, dsn, env)
    try:
        con = connect(dsn, settings=settings_of(env), password=password, memory_limit=memory_limit,
                      threads=threads)
    except SourceError as exc:
        if _unreachable(str(exc)):
            raise TransientError(str(exc)) from None
        raise
    incremental = (stream.get("options") or {}).get("incremental")
    where, last = "", None
    if incremental:
        field = incremental["cursor_field"]
        last = state.stream_state(env, stream["name"]).get("last_value", incremental.get("initial_value"))
        if last is not None:
            # The cursor's own type, so the comparison is pushed down to PostgreSQL's index.
            where = f" WHERE {duck.quote(field)} > CAST({_lit(str(last))} AS {incremental['cursor_type']})"
    try:
        relation = f"pg.{duck.quote(schema)}.{duck.quote(dsn.table)}"
        try:
            rows = duck.scalar(con,
                f"COPY (SELECT * FROM {relation}{where}) TO {_lit(str(out_dir))} "
                f"(FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES {int(part_bytes)}, "
                f"FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE)")
        except Exception as exc:
            reason = _reason(exc, dsn, password=password)
            if "does not exist" in reason and "Table" in str(exc):
                raise SourceError(f"postgres {dsn.where()}: table {schema}.{dsn.table} disappeared since "
                                  f"discovery") from None
            if _unreachable(reason):
                raise TransientError(f"postgres {dsn.where()}: {reason}") from None
            raise SourceError(f"postgres {dsn.where()}: cannot read {schema}.{dsn.table}: {reason}") from None
        if incremental and rows:
            newest = duck.scalar(con, f"SELECT max({duck.quote(field)})::VARCHAR FROM "
                                 f"read_parquet({_lit(str(Path(out_dir) / '*.parquet'))})")
            state.save_stream(env, stream["name"], {"cursor_field": field, "last_value": newest})
    finally:
        con.close()
    return int(rows)


# libpq's key=value connection strings: recognised, but only a postgresql:// URI is read.
LIBPQ_KEYWORDS = re.compile(r"^\s*(host|dbname|user|port|hostaddr)\s*=", re.I)


def probe_postgres(dsn: Dsn, settings: Settings, *, connect_timeout: int = 2) -> dict:
    """Connect once with psycopg at the checked address: {"version", "parameters"}, where
    `parameters` are the connection parameters libpq used (psycopg never returns the password)."""
    import psycopg

    conninfo = pinned_conninfo(dsn, dsn.password, settings)
    with psycopg.connect(conninfo + f" connect_timeout={int(connect_timeout)}", autocommit=True) as con:
        return {"version": con.info.server_version, "parameters": con.info.get_parameters()}


def _probe(hint: str, scores: Scores, settings: Settings) -> None:
    """Connect once with the hint's own password (never a stored one: the probe runs before
    the tenant's catalogue step), at the address the SSRF guard checked (`hostaddr`)."""
    try:
        dsn = parse(hint)
    except SourceError:
        return  # not probed; the catalogue step gives the reason
    import psycopg

    started = time.monotonic()
    try:
        answer = probe_postgres(dsn, settings)
        where = answer["parameters"].get("hostaddr") or dsn.host or "localhost"
        scores.note(PROVIDER, f"connected to {where} (PostgreSQL {answer['version'] // 10000}) "
                              f"in {1000 * (time.monotonic() - started):.0f} ms")
    except SourceError:
        return  # refused by the SSRF guard: the catalogue step gives the reason
    except psycopg.Error as exc:
        reason = _reason(exc, dsn)
        if "password" in reason or "authentication" in reason or "does not exist" in reason:
            scores.note(PROVIDER, f"a PostgreSQL server answered: {reason}")


@register
class PostgresConnector(Connector):
    """Tables of a PostgreSQL database (a postgresql:// DSN), optionally incremental."""
    providers = (PROVIDER,)
    schemes = SCHEMES
    options = OPTIONS

    def signals(self, hint: Hint) -> Signals | None:
        if hint.scheme in SCHEMES:
            return Signals().add(PROVIDER, 0.95, "DSN syntax")
        if not hint.scheme and LIBPQ_KEYWORDS.match(hint.text):
            return Signals(claim=True).add(PROVIDER, 0.6, "libpq key=value syntax (give a postgresql:// URI)")
        return None

    def probe(self, hint: Hint, scores: Scores) -> str | None:
        if hint.scheme in SCHEMES:
            _probe(hint.text, scores, hint.settings)
        return None

"""The tenant's warehouse as a DuckLake: a small catalog plus Parquet data files in the store.

    tenants/<t>/catalog.ducklake        the catalog, a DuckDB file (tables, snapshots, the files
                                        of each snapshot, the batch catalogue udb_meta.batches)
    tenants/<t>/lake/<schema>/<table>/  the Parquet data files, read and written in place
                                        (s3:// through httpfs in the stack, a path in embedded)

Only the catalog moves through a function: the writer downloads it under its lease, commits
and uploads it with If-Match on the ETag it started from; readers download it and read the
data files in place. A load therefore costs what it adds, not the warehouse's size.

The catalog is uploaded whole and last: data files written by a load that never uploads its
catalog are not part of any snapshot anyone can see (orphans, which prune sweeps with
`ducklake_delete_orphaned_files`). Nothing in the catalog refers to the staging area: staged
parts become data files by a copy under `lake/` (server-side in S3, a hard link locally).

The drift reference of a table is the snapshot before its latest load (`AT (VERSION => n)`,
n recorded per batch in udb_meta.batches.previous_version); readers see it as the view
`udb_snapshots.<table>` in the connection's own in-memory database, so nothing is copied.

A tenant that outgrows a DuckDB-file catalog (many concurrent writers are not the issue — the
writer is serialised — but a catalog of many thousands of snapshots and files) can move the
catalog to PostgreSQL: DuckLake attaches `ducklake:postgres:...` the same way
(docs/scaling.md).
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from shared.storage import duck
from shared.core.errors import NotFound
from shared.core.settings import Settings
from shared.storage.store import TenantStore

CATALOG = "catalog.ducklake"
DATA = "lake/"
LEGACY = "warehouse.duckdb"  # the whole-file warehouse before the lake; migrated by the writer
NAME = "lake"
CATALOG_BLOCK_SIZE = 16384

BATCHES_DDL = """
CREATE SCHEMA IF NOT EXISTS lake.udb_meta;
CREATE TABLE IF NOT EXISTS lake.udb_meta.batches (
    batch_id VARCHAR NOT NULL, job_id VARCHAR NOT NULL, table_name VARCHAR NOT NULL,
    rows BIGINT NOT NULL, schema_hash VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL,
    previous_version BIGINT
);
"""


def is_s3(store: TenantStore) -> bool:
    return store.url("x").startswith("s3://")


def _extensions(in_s3: bool) -> tuple[str, ...]:
    """The DuckDB extensions a connection on a lake loads: httpfs too for a lake in S3."""
    return ("ducklake", "httpfs") if in_s3 else ("ducklake",)


def keep_spares(settings: Settings) -> None:
    """Have this process keep a DuckDB instance with the lake's extensions opened ahead of the
    next `connect` (duck.Spares): a served writer or analyze asks for it at start. The kind
    follows the deployment's store, as `open_store` picks it (no store is touched here)."""
    duck.spares.keep([_extensions(settings.store == "s3")])


def connect(store: TenantStore, catalog: Path, *, read_only: bool = False, memory_limit: str = "1GB",
            threads: int = 2, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A connection with the tenant's lake attached as `lake` (and in use): the catalog at the
    local path `catalog`, the data files under the tenant's `lake/` in the store."""
    con = duck.connect(database, memory_limit=memory_limit, threads=threads, extensions=_extensions(is_s3(store)))
    try:
        attach(con, store, catalog, read_only=read_only)
    except Exception:
        con.close()
        raise
    return con


def attach(con: duckdb.DuckDBPyConnection, store: TenantStore, catalog: Path, *, read_only: bool = False) -> None:
    secret = store.duckdb_secret()
    if secret:
        con.execute(secret)
    # The store's own address of the tenant's lake/ is authoritative, not the one the catalog
    # recorded when it was made: a moved store (another UDB_HOME, a renamed bucket) keeps
    # working, since DuckLake stores the data files' paths relative to it.
    options = [f"DATA_PATH {duck.literal(data_path(store))}", "OVERRIDE_DATA_PATH true"]
    if read_only:
        options.append("READ_ONLY")
    elif not Path(catalog).exists():
        # A new catalog in 16 KB blocks, not DuckDB's default 256 KB: its ~25 small metadata tables
        # then take ~0.5 MB instead of ~8 MB, which every load downloads, checkpoints and uploads.
        options.append(f"METADATA_PARAMETERS MAP {{'block_size': {CATALOG_BLOCK_SIZE}}}")
    con.execute(f"ATTACH {duck.literal('ducklake:' + str(catalog))} AS {NAME} ({', '.join(options)})")
    con.execute(f"USE {NAME}")


def data_path(store: TenantStore) -> str:
    url = store.url(DATA + "x")
    return url[:-1]


def tenant_root(store: TenantStore) -> str:
    """The tenant's whole prefix as DuckDB addresses it (for allowed_directories)."""
    return store.url("x")[:-1]


def detach(con: duckdb.DuckDBPyConnection) -> None:
    """Close the lake so that its catalog file is complete on disk (checkpointed, no WAL)."""
    con.execute("USE memory")
    con.execute(f"DETACH {NAME}")


def fetch_catalog(store: TenantStore, into: Path) -> tuple[Path, str]:
    """Download the catalog into the directory `into`: (path, etag). NotFound when the tenant has
    no lake yet."""
    path = Path(into) / CATALOG
    etag = store.get_to_file(CATALOG, path)
    return path, etag


@contextmanager
def reader(store: TenantStore, *, memory_limit: str = "1GB", threads: int = 2,
           references: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection on the tenant's lake (its catalog downloaded, nothing else), with
    the drift references as views `udb_snapshots.<table>`. NotFound when there is no lake."""
    with tempfile.TemporaryDirectory(prefix="udb-lake-") as tmp:
        catalog, _ = fetch_catalog(store, Path(tmp))
        con = connect(store, catalog, read_only=True, memory_limit=memory_limit, threads=threads)
        try:
            if references:
                create_reference_views(con)
            yield con
        finally:
            con.close()


def open_reader(store: TenantStore, into: Path, **kw) -> duckdb.DuckDBPyConnection:
    """As `reader`, for a caller that closes the connection itself: the catalog is downloaded
    into the directory `into` (a fresh name each time) and left there."""
    import uuid
    folder = Path(into) / f"lake-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    catalog, _ = fetch_catalog(store, folder)
    con = connect(store, catalog, read_only=True, **kw)
    create_reference_views(con)
    return con


def tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The warehouse tables (the lake's schema main), sorted."""
    return [r[0] for r in con.execute(
        f"SELECT table_name FROM duckdb_tables() WHERE database_name = '{NAME}' AND schema_name = 'main' "
        "ORDER BY table_name").fetchall()]


def reference_versions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Per table, the snapshot before its latest applied load (only tables loaded before)."""
    if not duck.scalar(con, f"SELECT count(*) FROM duckdb_tables() WHERE database_name = '{NAME}' "
                       "AND schema_name = 'udb_meta' AND table_name = 'batches'"):
        return {}
    rows = con.execute(
        f"SELECT table_name, arg_max(previous_version, applied_at) FROM {NAME}.udb_meta.batches "
        "GROUP BY table_name").fetchall()
    present = set(tables(con))
    return {t: v for t, v in rows if v is not None and t in present}


def create_reference_views(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """`udb_snapshots.<table>`: the table as of its reference snapshot, by time travel (a view
    in the connection's in-memory database; nothing copied, nothing written to the lake)."""
    versions = reference_versions(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS memory.udb_snapshots")
    # `udb_snapshots.<t>` resolves to the views, `<t>` and `main.<t>` to the lake.
    con.execute(f"SET search_path = '{NAME}.main,memory.udb_snapshots'")
    for table, version in versions.items():
        q = duck.quote(table)
        con.execute(f"CREATE OR REPLACE VIEW memory.udb_snapshots.{q} AS "
                    f"SELECT * FROM {NAME}.main.{q} AT (VERSION => {int(version)})")
    return versions


def has_reference(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(duck.scalar(con, "SELECT count(*) FROM duckdb_views() WHERE database_name = 'memory' "
                            f"AND schema_name = 'udb_snapshots' AND view_name = {duck.literal(table)}"))


def require(store: TenantStore, message: str) -> None:
    """Raise NotFound(message) when the tenant has no lake."""
    if store.head(CATALOG) is None:
        raise NotFound(message)


def store_spec(store: TenantStore) -> dict:
    """How a child process reopens this tenant's store (no credentials: an S3 child takes them
    from its own settings, as the parent did)."""
    url = store.url("x")
    if url.startswith("s3://"):
        return {"kind": "s3", "bucket": url[len("s3://"):].split("/", 1)[0], "tenant": store.tenant}
    return {"kind": "local", "root": str(Path(url[:-len(store.key("x"))])), "tenant": store.tenant}


def store_from_spec(spec: dict, settings) -> TenantStore:
    """The store `store_spec` describes; an S3 one opened with the endpoint and keys of
    `settings` (the child's, which its parent handed down)."""
    if spec["kind"] == "s3":
        from shared.storage.s3store import S3Store
        return TenantStore(S3Store(spec["bucket"], endpoint=settings.s3_endpoint, access_key=settings.s3_access_key,
                                   secret_key=settings.s3_secret_key, region=settings.s3_region), spec["tenant"])
    from shared.storage.store import LocalStore
    return TenantStore(LocalStore(Path(spec["root"])), spec["tenant"])


def version(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's current snapshot id."""
    return duck.scalar(con, f"SELECT max(snapshot_id) FROM {NAME}.snapshots()")


def import_warehouse(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Copy a whole-file DuckDB warehouse (the layout before the lake) into the attached lake:
    each table of schema main, its drift reference (udb_snapshots.<t>) as the table's previous
    snapshot, and the batch catalogue (udb_meta.batches), the latest batch of each table
    pointing at that snapshot. Returns the number of tables."""
    con.execute(BATCHES_DDL)
    con.execute(f"ATTACH {duck.literal(str(path))} AS legacy (READ_ONLY)")
    try:
        def names(schema):
            return [r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'legacy' "
                f"AND schema_name = {duck.literal(schema)} ORDER BY table_name").fetchall()]
        tables = names("main")
        references = [t for t in names("udb_snapshots") if t in tables]
        previous = {}
        if references:
            con.execute("BEGIN")
            for table in references:
                q = duck.quote(table)
                con.execute(f"CREATE TABLE {NAME}.main.{q} AS SELECT * FROM legacy.udb_snapshots.{q}")
            con.execute("COMMIT")  # the references: the snapshot before the current tables
            previous = dict.fromkeys(references, version(con))
        con.execute("BEGIN")
        for table in tables:
            q = duck.quote(table)
            con.execute(f"CREATE OR REPLACE TABLE {NAME}.main.{q} AS SELECT * FROM legacy.main.{q}")
        if "batches" in names("udb_meta"):
            con.execute(f"INSERT INTO {NAME}.udb_meta.batches SELECT batch_id, job_id, table_name, rows, schema_hash, "
                        "applied_at, NULL FROM legacy.udb_meta.batches")
        for table in tables:
            # A table must have a batch for its reference to be found: the migration's own when
            # the old catalogue had none.
            known = duck.scalar(con, f"SELECT count(*) FROM {NAME}.udb_meta.batches "
                                f"WHERE table_name = {duck.literal(table)}")
            if not known:
                rows = duck.scalar(con, f"SELECT count(*) FROM {NAME}.main.{duck.quote(table)}")
                con.execute(f"INSERT INTO {NAME}.udb_meta.batches VALUES ({duck.literal('migrated/' + table)}, "
                            f"'migrated', {duck.literal(table)}, {rows}, '', now(), NULL)")
        for table, snapshot in previous.items():
            con.execute(f"UPDATE {NAME}.udb_meta.batches SET previous_version = {int(snapshot)} WHERE batch_id = ("
                        f"SELECT arg_max(batch_id, applied_at) FROM {NAME}.udb_meta.batches "
                        f"WHERE table_name = {duck.literal(table)})")
        con.execute("COMMIT")
    finally:
        con.execute("DETACH legacy")
    return len(tables)


def create_from_warehouse(store: TenantStore, path: Path) -> str:
    """A new lake for the tenant holding the whole-file warehouse at `path` (import_warehouse),
    its catalog uploaded only if the tenant has none: the catalog's ETag. For tools and tests
    that build a warehouse with plain DuckDB."""
    with tempfile.TemporaryDirectory(prefix="udb-lake-") as tmp:
        catalog = Path(tmp) / CATALOG
        con = connect(store, catalog, threads=1)
        try:
            import_warehouse(con, Path(path))
            detach(con)
        finally:
            con.close()
        return store.put(CATALOG, catalog, if_none_match=True)


# Files a maintenance run scheduled for deletion (expired or compacted away) and files no
# snapshot knows (a crashed load's) are deleted only once older than this: a reader holding a
# catalog copy from before the run may still be reading them, and an unfinished load writes
# its files before its catalog is uploaded (the lease keeps loads out while maintenance runs).
FILE_GRACE_HOURS = 1


def maintain(store: TenantStore, *, snapshot_days: int, now=None, dry_run: bool = False,
             lease_seconds: int = 10, lease_wait: float = 0, raw_store=None) -> dict:
    """Prune one tenant's lake with DuckLake's own maintenance, under the writer's lease:

    1. expire the snapshots older than `snapshot_days` (0: keep all), except the current one and
       each table's drift reference (ducklake_expire_snapshots with their versions);
    2. compact small adjacent data files (ducklake_merge_adjacent_files); the catalog is uploaded
       with If-Match on the ETag it was read with;
    3. delete the files an earlier run scheduled for deletion (ducklake_cleanup_old_files) and
       files no snapshot knows, e.g. a crashed load's (ducklake_delete_orphaned_files), both only
       past FILE_GRACE_HOURS; the catalog uploaded again.

    Returns the counts. A tenant whose lease is held (a load running) is skipped: {"busy": True}.
    """
    from datetime import datetime, timedelta, timezone

    from shared.storage import lease
    from shared.core.errors import PreconditionFailed, TransientError

    now = now or datetime.now(timezone.utc)
    raw = raw_store if raw_store is not None else store.store
    result = {"expired_snapshots": 0, "merged_files": 0, "deleted_files": 0, "orphans_deleted": 0, "busy": False}
    try:
        held = lease.acquire(raw, store.tenant, seconds=max(lease_seconds, 60), wait=lease_wait)
    except TransientError:
        result["busy"] = True
        return result
    try:
        with tempfile.TemporaryDirectory(prefix="udb-lake-prune-") as tmp:
            try:
                catalog, etag = fetch_catalog(store, Path(tmp))
            except NotFound:
                return result
            con = connect(store, catalog, threads=1)
            try:
                keep = set(reference_versions(con).values()) | {version(con)}
                if snapshot_days > 0:
                    cutoff = (now - timedelta(days=snapshot_days)).isoformat()
                    old = [r[0] for r in con.execute(
                        f"SELECT snapshot_id FROM {NAME}.snapshots() WHERE snapshot_time < {duck.literal(cutoff)}::TIMESTAMPTZ "
                        "ORDER BY snapshot_id").fetchall() if r[0] not in keep]
                    if old:
                        result["expired_snapshots"] = len(old)
                        if not dry_run:
                            con.execute(f"CALL ducklake_expire_snapshots('{NAME}', versions => {duck.literal(old)})")
                before = _file_count(con)
                if not dry_run:
                    con.execute(f"CALL ducklake_merge_adjacent_files('{NAME}')")
                    result["merged_files"] = max(0, before - _file_count(con))
                grace = (now - timedelta(hours=FILE_GRACE_HOURS)).isoformat()
                doomed = con.execute(f"CALL ducklake_cleanup_old_files('{NAME}', dry_run => true, "
                                     f"older_than => {duck.literal(grace)}::TIMESTAMPTZ)").fetchall()
                orphans = con.execute(f"CALL ducklake_delete_orphaned_files('{NAME}', dry_run => true, "
                                      f"older_than => {duck.literal(grace)}::TIMESTAMPTZ)").fetchall()
                result["deleted_files"], result["orphans_deleted"] = len(doomed), len(orphans)
                if dry_run:
                    return result
                detach(con)
                con.close()
                held = lease.renew(raw, held, seconds=max(lease_seconds, 60))
                try:
                    etag = store.put(CATALOG, catalog, if_match=etag)
                except PreconditionFailed:
                    raise TransientError(f"the lake of {store.tenant} changed during prune; retrying") from None
                # Step 3 deletes only files the uploaded catalog no longer needs.
                con = connect(store, catalog, threads=1)
                con.execute(f"CALL ducklake_cleanup_old_files('{NAME}', older_than => {duck.literal(grace)}::TIMESTAMPTZ)")
                con.execute(f"CALL ducklake_delete_orphaned_files('{NAME}', older_than => {duck.literal(grace)}::TIMESTAMPTZ)")
                detach(con)
                con.close()
                try:
                    store.put(CATALOG, catalog, if_match=etag)
                except PreconditionFailed:
                    raise TransientError(f"the lake of {store.tenant} changed during prune; retrying") from None
            finally:
                con.close()
    finally:
        lease.release(raw, held)
    return result


def _file_count(con: duckdb.DuckDBPyConnection) -> int:
    return sum(duck.scalar(con, f"SELECT count(*) FROM ducklake_list_files('{NAME}', {duck.literal(t)})")
               for t in tables(con))

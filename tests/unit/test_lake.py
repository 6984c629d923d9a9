"""The warehouse as a DuckLake (shared/storage/lake.py), on a real LocalStore: the writer registers staged
parts as data files, appends and merges, keeps loads idempotent, time-travels for the drift
reference, migrates an old warehouse.duckdb, and prune expires, compacts and sweeps orphans."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from functions.analyze import kpis
from functions.artifacts.admin import prune
from functions.writer.handler import handle as writer
from shared.storage import duck, lake
from shared.core import events
from shared.core.errors import NotFound
from shared.serving.runtime import invoke

pytestmark = pytest.mark.unit
TENANT = "acme"
TABLE = "src__items"


def stage(ctx, job: str, sql: str, *, mode: str = "replace", key: list[str] | None = None, table: str = TABLE,
          parts: int = 1) -> dict:
    """Stage the rows of `sql` as `parts` Parquet parts the way sync does; the staged event."""
    store = ctx.tenant_store(TENANT)
    con = duck.connect()
    keys, total = [], 0
    try:
        rows = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        for i in range(parts):
            local = Path(ctx.settings.home) / f"{job}-{i}.parquet"
            con.execute(f"COPY (SELECT * FROM ({sql}) LIMIT {rows // parts + (rows if i == parts - 1 else 0)} "
                        f"OFFSET {i * (rows // parts)}) TO '{local}' (FORMAT parquet)")
            part = f"staging/{job}/{table}/part-{i}.parquet"
            store.put(part, local)
            keys.append(part)
            total += local.stat().st_size
    finally:
        con.close()
    batch = {"table": table, "stream": "items", "batch_id": f"{job}/{table}", "parts": keys, "rows": rows,
             "bytes": total, "schema_hash": "h", "columns": [{"name": "id", "type": "BIGINT"}], "mode": mode}
    if key:
        batch["primary_key"] = key
    return events.make_event(events.SYNC_STAGED, {"source_id": "src-1234abcd", "source_short": "src",
                                                  "tables": [batch], "autoanalyze": False},
                             tenant=TENANT, job_id=job, function="test")


def load(ctx_for, *args, **kw) -> dict:
    reply = invoke(writer, stage(ctx_for("writer"), *args, **kw), ctx_for("writer"))
    assert reply["type"] == events.WAREHOUSE_LOADED, events.event_data(reply)
    return events.event_data(reply)["tables"][0]


def query(ctx, sql: str):
    with lake.reader(ctx.tenant_store(TENANT)) as con:
        return con.execute(sql).fetchall()


def lake_files(ctx) -> list[str]:
    root = Path(ctx.settings.home) / "store" / "udb" / "tenants" / TENANT / "lake"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))


def job(n: int) -> str:
    return f"job-{n:016x}"


ROWS = "SELECT range AS id, 'v' || range AS v FROM range({})"


def test_replace_registers_the_staged_parts_as_the_tables_data_files(ctx_for):
    assert load(ctx_for, job(1), ROWS.format(1000), parts=2) == {
        "table": TABLE, "rows": 1000, "applied": True, "previous_rows": None}
    ctx = ctx_for("writer")
    # The parts, copied under lake/ as they are, are the table's only data files.
    assert lake_files(ctx) == [f"main/{TABLE}/{job(1)}-part-0.parquet", f"main/{TABLE}/{job(1)}-part-1.parquet"]
    with lake.reader(ctx.tenant_store(TENANT)) as con:
        files = con.execute(f"SELECT data_file FROM ducklake_list_files('lake', '{TABLE}') ORDER BY 1").fetchall()
        assert [Path(f).name for (f,) in files] == [f"{job(1)}-part-0.parquet", f"{job(1)}-part-1.parquet"]
        assert con.execute(f"SELECT count(*), sum(id) FROM {TABLE}").fetchone() == (1000, 499_500)
    # The staging area is the sync's: deleting it (prune does, after its retention) loses nothing.
    store = ctx.tenant_store(TENANT)
    for info in list(store.list("staging/")):
        store.delete(info.key)
    assert query(ctx, f"SELECT count(*) FROM {TABLE}") == [(1000,)]
    # Only the small catalog is a whole object; nothing named warehouse.duckdb.
    assert store.head(lake.CATALOG) is not None and store.head(lake.LEGACY) is None


def test_append_merge_idempotence_and_the_drift_reference_by_time_travel(ctx_for):
    ctx = ctx_for("writer")
    load(ctx_for, job(1), ROWS.format(1000))
    # Columns in another order: inserted by name, not registered.
    assert load(ctx_for, job(2), "SELECT 'n' || range AS v, 1000 + range AS id FROM range(10)", mode="append") == {
        "table": TABLE, "rows": 1010, "applied": True, "previous_rows": 1000}
    # Merge by key: ids 0-2 updated, 5000-5001 new.
    merged = "SELECT * FROM (VALUES (0, 'u0'), (1, 'u1'), (2, 'u2'), (5000, 'n'), (5001, 'n')) t(id, v)"
    assert load(ctx_for, job(3), merged, mode="merge", key=["id"]) == {
        "table": TABLE, "rows": 1012, "applied": True, "previous_rows": 1010}
    # At-least-once delivery: a batch already in the catalogue is skipped, the lake unchanged.
    etag = ctx.tenant_store(TENANT).head(lake.CATALOG).etag
    again = invoke(writer, stage(ctx, job(2), "SELECT 'n' AS v, 1 AS id", mode="append"), ctx)
    assert events.event_data(again)["tables"][0] == {"table": TABLE, "rows": 1012, "applied": False,
                                                      "previous_rows": None}
    assert ctx.tenant_store(TENANT).head(lake.CATALOG).etag == etag
    assert query(ctx, f"SELECT v FROM {TABLE} WHERE id IN (0, 1, 2, 5000) ORDER BY id") == [
        ("u0",), ("u1",), ("u2",), ("n",)]
    assert query(ctx, "SELECT job_id, rows FROM udb_meta.batches ORDER BY applied_at") == [
        (job(1), 1000), (job(2), 1010), (job(3), 1012)]
    # The drift reference is the table before its latest load, read by time travel: no copy.
    assert query(ctx, f"SELECT count(*), count(*) FILTER (v = 'v0') FROM udb_snapshots.{TABLE}") == [(1010, 1)]
    with lake.reader(ctx.tenant_store(TENANT)) as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'udb_snapshots'").fetchone() == (0,)
        version = lake.reference_versions(con)[TABLE]
        assert con.execute(f"SELECT count(*) FROM lake.main.{TABLE} AT (VERSION => {version})").fetchone() == (1010,)


def test_a_failed_load_leaves_the_catalog_and_prune_sweeps_its_files(ctx_for):
    ctx = ctx_for("writer")
    load(ctx_for, job(1), ROWS.format(100))
    etag = ctx.tenant_store(TENANT).head(lake.CATALOG).etag
    bad = stage(ctx, job(2), ROWS.format(50), table="src__other")
    bad_data = events.event_data(bad)
    bad_data["tables"][0]["rows"] = 51  # the staged count disagrees with the files: SourceError
    bad = events.make_event(events.SYNC_STAGED, bad_data, tenant=TENANT, job_id=job(2), function="test")
    reply = invoke(writer, bad, ctx)
    assert reply["type"] == events.JOB_FAILED
    assert "staged 51 rows but read 50" in events.event_data(reply)["reason"]
    assert ctx.tenant_store(TENANT).head(lake.CATALOG).etag == etag  # the catalog untouched
    assert f"main/src__other/{job(2)}-part-0.parquet" in lake_files(ctx)  # an orphan
    assert query(ctx, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'") == [(TABLE,)]
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    result = prune(ctx.store, staging_days=0, artifact_days=0, now=later, snapshot_days=0)
    assert result["lake"][TENANT]["orphans_deleted"] == 1
    assert lake_files(ctx) == [f"main/{TABLE}/{job(1)}-part-0.parquet"]
    assert query(ctx, f"SELECT count(*) FROM {TABLE}") == [(100,)]


def test_prune_expires_old_snapshots_but_the_reference_and_compacts_small_files(ctx_for):
    ctx = ctx_for("writer")
    load(ctx_for, job(1), ROWS.format(100))
    for n in range(2, 6):  # four small appends: four more snapshots and data files
        load(ctx_for, job(n), f"SELECT {n * 1000} + range AS id, 'a' AS v FROM range(10)", mode="append")
    store = ctx.tenant_store(TENANT)
    with lake.reader(store) as con:
        before = con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0]
        reference = lake.reference_versions(con)[TABLE]
        assert con.execute(f"SELECT count(*) FROM ducklake_list_files('lake', '{TABLE}')").fetchone() == (5,)
    # Ten days later, retention seven: every snapshot but the current one and the reference expires.
    later = datetime.now(timezone.utc) + timedelta(days=10)
    first = prune(ctx.store, staging_days=0, artifact_days=0, now=later, snapshot_days=7)["lake"][TENANT]
    # Eight snapshots (schema, batches table, five loads): six expire. The compacted-away files
    # are deleted in the same run here only because `now` is ten days ahead of their scheduling.
    assert before == 8 and first == {"expired_snapshots": 6, "merged_files": 4, "deleted_files": 5,
                                     "orphans_deleted": 0, "busy": False}
    with lake.reader(store) as con:
        assert [r[0] for r in con.execute("SELECT snapshot_id FROM lake.snapshots() ORDER BY 1").fetchall()][0] == reference
        assert con.execute(f"SELECT count(*) FROM ducklake_list_files('lake', '{TABLE}')").fetchone() == (1,)
        assert con.execute(f"SELECT count(*), sum(id) FROM {TABLE}").fetchone() == (140, 4950 + sum(
            n * 10_000 + 45 for n in range(2, 6)))
        assert con.execute(f"SELECT count(*) FROM udb_snapshots.{TABLE}").fetchone() == (130,)
    # One merged file serves the current table and its reference (rows carry their snapshots).
    assert len(lake_files(ctx)) == 1 and lake_files(ctx)[0].startswith(f"main/{TABLE}/ducklake-")
    second = prune(ctx.store, staging_days=0, artifact_days=0, now=later + timedelta(hours=2), snapshot_days=7)
    # The compaction was a snapshot of its own: the one before it (the last load's) expires now.
    assert second["lake"][TENANT] == {"expired_snapshots": 1, "merged_files": 0, "deleted_files": 0,
                                      "orphans_deleted": 0, "busy": False}
    assert query(ctx, f"SELECT count(*) FROM {TABLE}") == [(140,)]
    assert query(ctx, f"SELECT count(*) FROM udb_snapshots.{TABLE}") == [(130,)]


def test_an_old_warehouse_duckdb_is_migrated_on_the_next_load_and_removed(ctx_for, tmp_path):
    ctx = ctx_for("writer")
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE main.src__old AS SELECT range AS id FROM range(300)")
    con.execute("CREATE SCHEMA udb_snapshots; CREATE TABLE udb_snapshots.src__old AS SELECT range AS id FROM range(200)")
    con.execute("CREATE SCHEMA udb_meta; CREATE TABLE udb_meta.batches (batch_id VARCHAR PRIMARY KEY, "
                "job_id VARCHAR NOT NULL, table_name VARCHAR NOT NULL, rows BIGINT NOT NULL, "
                "schema_hash VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)")
    con.execute(f"INSERT INTO udb_meta.batches VALUES ('{job(7)}/src__old', '{job(7)}', 'src__old', 300, 'h', now())")
    con.close()
    store = ctx.tenant_store(TENANT)
    store.put(lake.LEGACY, old)
    assert load(ctx_for, job(8), ROWS.format(10)) == {"table": TABLE, "rows": 10, "applied": True,
                                                       "previous_rows": None}
    assert store.head(lake.LEGACY) is None  # migrated, then removed
    assert query(ctx, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1") == [
        ("src__items",), ("src__old",)]
    assert query(ctx, "SELECT count(*) FROM src__old") == [(300,)]
    assert query(ctx, "SELECT count(*) FROM udb_snapshots.src__old") == [(200,)]  # its drift reference
    assert query(ctx, "SELECT batch_id, rows FROM udb_meta.batches ORDER BY applied_at") == [
        (f"{job(7)}/src__old", 300), (f"{job(8)}/{TABLE}", 10)]
    # The old catalogue still makes loads idempotent: its batch is not applied again.
    again = invoke(writer, stage(ctx, job(7), ROWS.format(5), table="src__old"), ctx)
    assert events.event_data(again)["tables"][0]["applied"] is False
    assert query(ctx, "SELECT count(*) FROM src__old") == [(300,)]


def test_the_kpi_connection_reads_the_lake_and_nothing_outside_the_tenant(ctx_for, tmp_path):
    ctx = ctx_for("writer")
    load(ctx_for, job(1), ROWS.format(100))
    outside = Path(ctx.settings.home) / "store" / "udb" / "tenants" / "beta" / "lake" / "x.parquet"
    outside.parent.mkdir(parents=True)
    duck.connect().execute(f"COPY (SELECT 1 AS secret) TO '{outside}' (FORMAT parquet)")
    store = ctx.tenant_store(TENANT)
    (tmp_path / "catalog").mkdir()
    catalog, _ = lake.fetch_catalog(store, tmp_path / "catalog")
    con = kpis.open_kpi_connection(catalog, store=store)
    try:
        assert con.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (100,)
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_parquet('{outside}')").fetchall()
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_readers_say_when_a_tenant_has_no_lake(ctx_for):
    with pytest.raises(NotFound):
        with lake.reader(ctx_for("writer").tenant_store("nobody")):
            pass


def test_the_kpi_guard_keeps_tenant_sql_off_the_lakes_catalog_and_history():
    from shared.security import sqlguard
    rejected = {
        "SELECT * FROM ducklake_list_files('lake', 't')":
            "table function ducklake_list_files() is not allowed (allowed: generate_series, range, unnest)",
        "SELECT * FROM ducklake_snapshots('lake')":
            "table function ducklake_snapshots() is not allowed (allowed: generate_series, range, unnest)",
        "SELECT * FROM lake.snapshots()": "table function snapshots() is not allowed (allowed: generate_series, range, unnest)",
        "SELECT * FROM lake.main.t": "references to other databases are not allowed (lake.main.t)",
        "SELECT * FROM lake.udb_meta.batches": "references to other databases are not allowed (lake.udb_meta.batches)",
        "SELECT * FROM t AT (VERSION => 1)": "HISTORICALDATA is not allowed",
        "SELECT * FROM udb_snapshots.t": "schema 'udb_snapshots' is not allowed; only the tenant's tables in 'main' can be read",
    }
    for sql, reason in rejected.items():
        with pytest.raises(sqlguard.SQLRejected) as info:
            sqlguard.check_select(sql, ["t"])
        assert str(info.value) == f"query rejected: {reason}", sql
    assert sqlguard.check_select("SELECT count(*) FROM t", ["t"]).sql == "SELECT COUNT(*) FROM t"


def test_the_analysis_reader_locked_down_reads_the_lake_and_nothing_outside_the_tenant(ctx_for, tmp_path):
    """The analysis profiles on its reader connection, then locks that same connection down for
    the KPIs (kpis.lock_down), as open_kpi_connection locks its own."""
    ctx = ctx_for("writer")
    load(ctx_for, job(1), ROWS.format(100))
    load(ctx_for, job(2), ROWS.format(40))
    outside = Path(ctx.settings.home) / "store" / "udb" / "tenants" / "beta" / "lake" / "y.parquet"
    outside.parent.mkdir(parents=True)
    duck.connect().execute(f"COPY (SELECT 1 AS secret) TO '{outside}' (FORMAT parquet)")
    store = ctx.tenant_store(TENANT)
    catalog, _ = lake.fetch_catalog(store, tmp_path)
    con = lake.connect(store, catalog, read_only=True)
    try:
        lake.create_reference_views(con)
        con.execute("SET threads = 1")  # the profiler may change its settings before the lock
        kpis.lock_down(con, store)
        assert con.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (40,)
        assert con.execute(f"SELECT count(*) FROM udb_snapshots.{TABLE}").fetchone() == (100,)
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_parquet('{outside}')").fetchall()
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_text('/etc/passwd')").fetchall()
        for setting in ("SET enable_external_access = true", "SET threads = 2", "SET lock_configuration = false",
                        "SET allowed_directories = ['/']"):
            with pytest.raises(duckdb.Error, match="configuration has been locked"):
                con.execute(setting)
    finally:
        con.close()


def test_an_analysis_opens_one_duckdb_instance_and_loads_ducklake_once(ctx_for, monkeypatch):
    """analyze used to open two instances (a reader and a KPI one), each loading the ducklake
    extension (its signature checked: 0.1-0.3 s each); one now, with the same KPI results."""
    from functions.analyze.handler import handle as analyze

    load(ctx_for, job(1), ROWS.format(250))
    loaded = []
    real = duck.load
    monkeypatch.setattr(duck, "load", lambda con, name: (loaded.append(name), real(con, name))[1])
    event = events.make_event(events.ANALYZE_REQUESTED, {"tables": [TABLE]}, tenant=TENANT, job_id=job(3),
                              function="test")
    reply = invoke(analyze, event, ctx_for("analyze"))
    assert reply["type"] == events.ANALYSIS_COMPLETED, events.event_data(reply)
    assert loaded == ["ducklake"]  # a local store: no httpfs
    store = ctx_for("analyze").tenant_store(TENANT)
    import json
    results = {k["name"]: k["result"]["rows"] for k in
               json.loads(store.get(store.artifact_key(job(3), f"kpis-{TABLE}.json")).data) if "result" in k}
    assert results["row_count"] == [[250]]
    names = {e["name"] for e in json.loads(store.get(store.artifact_key(job(3), "index.json")).data)["artifacts"]}
    assert {f"profile-{TABLE}.json", f"kpis-{TABLE}.json", "summary.md", "index.html"} <= names
    for name in names:  # every artifact the index names is stored (the uploads ran in parallel)
        assert store.head(store.artifact_key(job(3), name)) is not None, name

"""PostgreSQL incremental syncs against a real PostgreSQL, through the discover, sync and
writer handlers: an insert round appends exactly the new rows, an update round replaces the
changed rows by primary key (the row count stays), a table without a key is appended to, and
the cursor lives in the source's state. Options a provider does not read are refused by name.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from shared.core.settings import Settings
from tests.conftest import LOOPBACK

from devstack import services
from functions.discover.handler import handle as discover
from functions.sync.handler import handle as sync
from functions.writer.handler import handle as writer
from shared.core import events
from shared.core.errors import SourceError
from shared.serving.runtime import invoke
from shared.sources import SourceEnv, inspect_source, postgres
from shared.core.tenancy import new_job_id
from shared.storage import lake

pytestmark = pytest.mark.integration
PEERS = Settings(net_allowlist=LOOPBACK)  # settings under which the loopback test peers are reachable

TENANT = "acme"


@pytest.fixture(scope="module")
def pg_db(stack_services):
    """A fresh database: public.orders (100 rows, PK id, updated_at), public.log (50 rows, no
    PK, a bigint `version` cursor), public.plain (no cursor candidate)."""
    server = postgres.parse(services.endpoints()["postgres"])
    name = f"udbinc_{uuid.uuid4().hex[:8]}"
    admin = server.uri(password=server.password)
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres.Dsn(server.host, server.port, name, server.user, server.password)
    try:
        with psycopg.connect(dsn.uri(password=dsn.password), autocommit=True) as con:
            con.execute("""
                CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL, updated_at timestamp NOT NULL);
                INSERT INTO orders SELECT i, i * 10, TIMESTAMP '2025-01-01' + make_interval(mins => i)
                FROM generate_series(1, 100) g(i);
                CREATE TABLE log (version bigint NOT NULL, msg text);
                INSERT INTO log SELECT i, 'm' || i FROM generate_series(1, 50) g(i);
                CREATE TABLE plain (a int, b text);
                INSERT INTO plain VALUES (1, 'x');
            """)
        yield dsn
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(dsn: postgres.Dsn, text: str) -> None:
    with psycopg.connect(dsn.uri(password=dsn.password), autocommit=True) as con:
        con.execute(text)


def hint(dsn: postgres.Dsn, table: str) -> str:
    return dsn.uri(password=dsn.password) + f"?table=public.{table}"


def run_sync(event, ctx_for) -> dict | None:
    """sync then writer; the writer's reply data, or None when nothing was new."""
    staged = invoke(sync, event, ctx_for("sync"))
    if staged is None:
        return None
    assert staged["type"] == events.SYNC_STAGED, events.event_data(staged)
    loaded = invoke(writer, staged, ctx_for("writer"))
    assert loaded["type"] == events.WAREHOUSE_LOADED, events.event_data(loaded)
    return {"staged": events.event_data(staged), "loaded": events.event_data(loaded)}


def resync(source_id: str, ctx_for):
    return run_sync(events.make_event(events.SYNC_REQUESTED, {"source_id": source_id}, tenant=TENANT,
                                      job_id=new_job_id(), function="test"), ctx_for)


def warehouse(ctx_for, tmp_path: Path, query: str):
    con = lake.open_reader(ctx_for("writer").tenant_store(TENANT), tmp_path)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def discover_source(dsn, table, options, ctx_for):
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint(dsn, table), "options": options},
                                tenant=TENANT, job_id=new_job_id(), function="test")
    discovered = invoke(discover, request, ctx_for("discover"))
    assert discovered["type"] == events.SOURCE_DISCOVERED, events.event_data(discovered)
    return discovered


def test_pg_incremental_insert_and_update_rounds_merge_by_key(pg_db, ctx_for, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    discovered = discover_source(pg_db, "orders", {"incremental": {"cursor_field": "updated_at"}}, ctx_for)
    source = events.event_data(discovered)["source"]
    stream = source["streams"][0]
    assert stream["sync_modes"] == ["full", "incremental"]
    assert stream["options"]["incremental"] == {"cursor_field": "updated_at", "cursor_type": "TIMESTAMP",
                                                "primary_key": ["id"]}
    table = f"{source['short']}__orders"
    first = run_sync(discovered, ctx_for)
    assert first["staged"]["tables"][0]["rows"] == 100 and first["staged"]["tables"][0]["mode"] == "merge"
    assert warehouse(ctx_for, tmp_path, f"SELECT count(*), sum(amount) FROM {table}") == [(100, 50500)]
    state = json.loads(ctx_for("sync").tenant_store(TENANT).get(f"state/{source['id']}.json").data)
    assert state["streams"]["orders"]["last_value"] == "2025-01-01 01:40:00"

    # Nothing changed: no batch, the warehouse stays.
    assert resync(source["id"], ctx_for) is None

    # Insert round: 20 new rows, only they are read.
    sql(pg_db, "INSERT INTO orders SELECT i, i * 10, TIMESTAMP '2025-01-01' + make_interval(mins => i) "
               "FROM generate_series(101, 120) g(i)")
    # A sync whose load never happens (the writer failed, the reply was lost) moves no cursor:
    # the next sync reads the same 20 rows.
    orphan = invoke(sync, events.make_event(events.SYNC_REQUESTED, {"source_id": source["id"]}, tenant=TENANT,
                                            job_id=new_job_id(), function="test"), ctx_for("sync"))
    assert events.event_data(orphan)["tables"][0]["rows"] == 20
    assert events.event_data(orphan)["tables"][0]["state"] == {"cursor_field": "updated_at",
                                                               "last_value": "2025-01-01 02:00:00"}
    second = resync(source["id"], ctx_for)
    assert second["staged"]["tables"][0]["rows"] == 20
    assert warehouse(ctx_for, tmp_path, f"SELECT count(*), count(DISTINCT id), sum(amount) FROM {table}") == \
        [(120, 120, 72600)]

    # Update round: 5 old rows change (amount + 1000, a newer updated_at): they replace their rows.
    sql(pg_db, "UPDATE orders SET amount = amount + 1000, updated_at = TIMESTAMP '2025-02-01' WHERE id % 20 = 0")
    third = resync(source["id"], ctx_for)
    assert third["staged"]["tables"][0]["rows"] == 6  # ids 20, 40, 60, 80, 100, 120
    assert third["loaded"]["tables"][0]["rows"] == 120
    assert warehouse(ctx_for, tmp_path, f"SELECT count(*), count(DISTINCT id), sum(amount) FROM {table}") == \
        [(120, 120, 72600 + 6000)]
    assert warehouse(ctx_for, tmp_path, f"SELECT amount FROM {table} WHERE id = 40") == [(1400,)]
    # The rows before the update are the drift reference.
    assert warehouse(ctx_for, tmp_path, f"SELECT count(*), sum(amount) FROM udb_snapshots.{table}") == \
        [(120, 72600)]


def test_pg_incremental_true_without_a_key_appends(pg_db, ctx_for, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    discovered = discover_source(pg_db, "log", {"incremental": True}, ctx_for)
    source = events.event_data(discovered)["source"]
    assert source["streams"][0]["options"]["incremental"] == {"cursor_field": "version", "cursor_type": "BIGINT",
                                                              "primary_key": []}
    first = run_sync(discovered, ctx_for)
    assert first["staged"]["tables"][0]["mode"] == "append"
    sql(pg_db, "INSERT INTO log SELECT i, 'm' || i FROM generate_series(51, 57) g(i)")
    second = resync(source["id"], ctx_for)
    assert second["staged"]["tables"][0]["rows"] == 7
    table = f"{source['short']}__log"
    assert warehouse(ctx_for, tmp_path, f"SELECT count(*), sum(version), max(version) FROM {table}") == \
        [(57, 57 * 58 // 2, 57)]


def test_options_a_provider_does_not_read_are_refused(pg_db, tmp_path, monkeypatch):
    from shared.security.secrets import LocalSecretStore
    monkeypatch.delenv("PGPASSWORD", raising=False)
    env = SourceEnv(tenant=TENANT, secrets=LocalSecretStore(tmp_path / "secrets"),
                    options={"incremental": True}, settings=PEERS)
    with pytest.raises(SourceError, match=r"options.incremental for plain: no cursor_field given and no cursor "
                                          r"candidate"):
        inspect_source("postgres", hint(pg_db, "plain"), env)
    env.options = {"incremental": {"cursor_field": "nope"}}
    with pytest.raises(SourceError, match=r"options.incremental for orders: no column 'nope' \(columns: id, "
                                          r"amount, updated_at\)"):
        inspect_source("postgres", hint(pg_db, "orders"), env)
    env.options = {"paginator": "none"}
    with pytest.raises(SourceError, match=r"options: 'paginator' not supported by provider 'postgres'; it reads: "
                                          r"incremental, oauth, provider"):
        inspect_source("postgres", hint(pg_db, "orders"), env)
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match=r"options: 'incremental' not supported by provider 'file'"):
        inspect_source("file", str(csv), SourceEnv(options={"incremental": True}))

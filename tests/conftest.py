"""Fixtures shared by every test: isolated settings and generated data with known answers."""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from shared.serving import runtime
from shared.core.settings import Settings

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.0/8,::1"
os.environ.setdefault("UDB_NET_ALLOWLIST", LOOPBACK)  # sources on loopback: services, test peers
pytest_plugins = ["tests.plugins.no_network_mocks", "tests.stack_fixtures", "pytester"]


@pytest.fixture(autouse=True)
def _no_duckdb_spares_across_tests():
    """A test that starts a served writer or analyze in this process (its main.py, a Lifecycle
    with `prepare`) makes the process keep DuckDB spares (shared/storage/duck.py): dropped after
    each test, so no later test's instance counts or loads come from them."""
    yield
    from shared.storage import duck
    duck.spares.close()


@pytest.fixture
def settings(tmp_path) -> Settings:
    # An empty env: no developer setting leaks into a test. Loopback allowlisted, as the
    # environment above says for processes the tests start: sources on loopback are test peers.
    return Settings.from_env(env={}, home=tmp_path / "udb", eventing_dir=REPO / "eventing",
                             profile_sample_rows=5_000, log_level="WARNING", net_allowlist=LOOPBACK)


@pytest.fixture
def ctx_for(settings):
    contexts = {}

    def make(function: str) -> runtime.Context:
        if function not in contexts:
            contexts[function] = runtime.start(function, settings)
        return contexts[function]

    return make


def create_pg_orders(pg, table: str, rows: int = 15_000) -> None:
    """A PostgreSQL table with the sales CSV's known answers (order_id 0..rows-1, amount =
    i % 100, discount NULL when i % 10 = 0, 4 regions, one row per hour), keyed by order_id."""
    pg.execute(f"DROP TABLE IF EXISTS {table}")
    pg.execute(f"""CREATE TABLE {table} AS
        SELECT i AS order_id, (ARRAY['north','south','east','west'])[i % 4 + 1] AS region,
               TIMESTAMP '2025-01-01' + i * INTERVAL '1 hour' AS ordered_at,
               (i % 100)::double precision AS amount,
               CASE WHEN i % 10 = 0 THEN NULL ELSE (i % 7) / 10.0 END::double precision AS discount
        FROM generate_series(0, {int(rows) - 1}) AS s(i)""")
    pg.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (order_id)")


def write_sales(path: Path, rows: int, *, offset: float = 0.0) -> Path:
    """A sales CSV with known answers: order_id 1..rows, amount = (i % 100) + offset,
    discount NULL when i % 10 = 0, region cycling over 4 values, one row per hour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    duckdb.execute(f"""
        COPY (
            SELECT i + 1 AS order_id,
                   ['north', 'south', 'east', 'west'][i % 4 + 1] AS region,
                   TIMESTAMP '2025-01-01' + to_hours(i) AS ordered_at,
                   (i % 100) + {offset} AS amount,
                   CASE WHEN i % 10 = 0 THEN NULL ELSE (i % 7) / 10 END AS discount
            FROM range({rows}) t(i)
        ) TO '{path}' (HEADER)""")
    return path


@pytest.fixture
def sales_csv(tmp_path) -> Path:
    return write_sales(tmp_path / "data" / "sales.csv", 10_000)

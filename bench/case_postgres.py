"""PostgreSQL table -> warehouse: `udb run --no-analyze` vs dlt sql_table (pyarrow backend).

The table lives in its own schema, udb_bench (never another schema's tables), and is made
once per size from the generated CSV; later runs reuse it.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench import common

CASE = "postgres"
TITLE = "PostgreSQL table -> warehouse (UDB vs dlt sql_database, pyarrow backend)"
TOOLS = ["udb", "dlt"]
SCHEMA = "udb_bench"
DDL = """CREATE TABLE {schema}.{table} (
    order_id bigint PRIMARY KEY, ordered_at timestamp, region text, channel text, product text,
    quantity integer, unit_price numeric(10, 2), amount numeric(12, 2), discount double precision, email text)"""


def dsn() -> str:
    from devstack import services

    return services.endpoints()["postgres"]


def prepare(data: Path, quick: bool) -> dict:
    import psycopg

    rows = common.QUICK_ROWS if quick else common.FULL_ROWS
    table = f"sales_{rows}"
    csv = common.make_csv(data / f"sales-{rows}.csv", rows)
    with psycopg.connect(dsn(), autocommit=True) as pg:
        pg.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        present = pg.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{SCHEMA}.{table}"]).fetchone()[0]
        if not present or pg.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone()[0] != rows:
            pg.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{table}")
            pg.execute(DDL.format(schema=SCHEMA, table=table))
            with pg.cursor().copy(f"COPY {SCHEMA}.{table} FROM STDIN (FORMAT csv, HEADER)") as copy, \
                    open(csv, "rb") as fh:
                while block := fh.read(1 << 20):
                    copy.write(block)
            pg.execute(f"ANALYZE {SCHEMA}.{table}")
    return {"rows": rows, "dsn": dsn(), "schema": SCHEMA, "table": table,
            # The server is on loopback, which UDB's SSRF guard refuses unless allowed.
            "env": {"UDB_NET_ALLOWLIST": "127.0.0.0/8"},
            "described": f"{SCHEMA}.{table}: {rows:,} rows x {common.COLUMNS} columns"}


def run(tool: str, params: dict, run_dir: Path) -> dict:
    if tool == "udb":
        return common.udb_load(f"{params['dsn']}?table={params['schema']}.{params['table']}", run_dir)
    started = time.perf_counter()
    from dlt.sources.sql_database import sql_table

    resource = sql_table(credentials=params["dsn"].replace("postgresql://", "postgresql+psycopg://", 1),
                         schema=params["schema"], table=params["table"], backend="pyarrow",
                         write_disposition="replace")
    common.dlt_pipeline(run_dir).run(resource)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": common.dlt_rows(run_dir, params["table"])}

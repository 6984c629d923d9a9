"""Write the demo dataset: a sales table (200,000 rows) and the customers it refers to.

Deterministic (every value is a function of the row number), so the demo's numbers are the
same on every machine. Usage: python samples/make_demo.py OUT_DIR [ROWS]
"""
from __future__ import annotations

import sys
from pathlib import Path

import duckdb

SALES_SQL = """
SELECT
    i + 1                                                        AS order_id,
    (i * 7919) % {customers} + 1                                 AS customer_id,
    TIMESTAMP '2025-01-01 00:00:00' + to_seconds((i * 104729) % 31536000) AS ordered_at,
    ['north', 'south', 'east', 'west', 'central'][(i * 31) % 5 + 1]         AS region,
    ['web', 'store', 'phone'][(i * 17) % 3 + 1]                             AS channel,
    'SKU-' || lpad(((i * 13) % 250)::VARCHAR, 4, '0')                        AS product,
    (i * 37) % 9 + 1                                             AS quantity,
    round(4.99 + ((i * 53) % 9500) / 100.0, 2)                    AS unit_price,
    round(((i * 37) % 9 + 1) * (4.99 + ((i * 53) % 9500) / 100.0), 2) AS amount,
    CASE WHEN i % 13 = 0 THEN NULL ELSE ((i * 11) % 30) / 100.0 END AS discount
FROM range({rows}) t(i)
"""

CUSTOMERS_SQL = """
SELECT
    i + 1                                                        AS customer_id,
    'Customer ' || (i + 1)                                       AS name,
    'customer' || (i + 1) || '@example.com'                      AS email,
    ['DE', 'FR', 'US', 'GB', 'NL', 'ES'][(i * 7) % 6 + 1]        AS country,
    ['consumer', 'smb', 'enterprise'][(i * 5) % 3 + 1]           AS segment,
    DATE '2020-01-01' + ((i * 97) % 1800)::INTEGER               AS signed_up_on
FROM range({customers}) t(i)
"""


def make(out: Path, rows: int = 200_000, customers: int = 5_000) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"COPY ({SALES_SQL.format(rows=rows, customers=customers)}) TO '{out / 'sales.csv'}' (HEADER)")
    con.execute(f"COPY ({CUSTOMERS_SQL.format(customers=customers)}) TO '{out / 'customers.parquet'}' (FORMAT parquet)")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".udb/samples/demo")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    make(target, n)
    print(f"sample data in {target}/ (sales.csv: {n:,} rows, customers.parquet: 5,000 rows)")

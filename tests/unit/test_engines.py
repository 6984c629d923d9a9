"""functions/reports/engines.py: what the report engines are fed (the pure parts: sampling,
PII masking and escaping of the frame, sampling notes, drift-reference cache keys). The engines
themselves render in test_reports.py and the reliability tests."""
from __future__ import annotations

import duckdb
import pytest

from functions.reports import engines

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    con.execute("""CREATE TABLE people AS SELECT i AS id, 'user' || i || '@example.com' AS email,
                   'call +44 20 7946 0958 now' AS note, (i * 2.5)::DOUBLE AS amount, 'plain <b>' || i AS label
                   FROM range(100) r(i)""")
    yield con
    con.close()


def test_table_names():
    assert engines.table_parts('udb_snapshots."my table"') == ["udb_snapshots", "my table"]
    assert engines.table_ref("sales 2024.csv") == '"sales 2024.csv"'
    assert engines.table_label(["s", "t"]) == "s.t"


def test_sample_frame_full_and_reservoir(con):
    df, note = engines.sample_frame(con, "people", max_rows=1000)
    assert len(df) == 100 and note == {"table": "people", "total_rows": 100, "sampled_rows": 100, "method": "full",
                                       "seed": None, "columns": 5, "reported_columns": 5}
    sampled, note = engines.sample_frame(con, "people", max_rows=10, seed=7, max_columns=2)
    assert list(sampled.columns) == ["id", "email"] and len(sampled) == 10
    assert note == {"table": "people", "total_rows": 100, "sampled_rows": 10, "method": "reservoir", "seed": 7,
                    "columns": 5, "reported_columns": 2}
    again, _ = engines.sample_frame(con, "people", max_rows=10, seed=7, max_columns=2)
    assert sorted(again["id"]) == sorted(sampled["id"])          # reproducible


def test_sampling_text():
    assert engines.sampling_text(None) == "Computed on the full data."
    assert engines.sampling_text({"method": "full", "total_rows": 1234}) == "Computed on all 1,234 rows."
    assert engines.sampling_text({"method": "reservoir", "sampled_rows": 10, "total_rows": 5000, "seed": 42,
                                  "columns": 4000, "reported_columns": 200}) == (
        "Computed on a sample: 10 of 5,000 rows (reservoir sampling, seed 42). Exact full-table statistics are in "
        "the DuckDB profile. Reported on the first 200 of 4,000 columns (UDB_REPORTS_MAX_COLUMNS); the DuckDB "
        "profile covers every column.")
    assert engines.columns_text({"columns": 3, "reported_columns": 3}) == ""


def test_prepare_frame_masks_escapes_and_cleans(con):
    df, _ = engines.sample_frame(con, "people", max_rows=1000)
    df.loc[0, "amount"] = float("inf")
    prepared = engines.prepare_frame(df)
    assert prepared.attrs[engines.PREPARED] is True
    assert engines.prepare_frame(prepared) is prepared
    assert set(prepared["email"]) == {"u***@example.com"}
    assert prepared.loc[1, "note"] == "call *** now"
    assert prepared.loc[1, "label"] == "plain &lt;b&gt;1"
    assert prepared["amount"].isna().sum() == 1 and prepared.loc[2, "amount"] == 5.0
    assert df.loc[1, "email"] == "user1@example.com"                 # the input is not changed
    assert list(prepared["id"]) == list(range(100))


def test_escape_frame_names_too():
    import pandas as pd
    frame = engines.escape_frame(pd.DataFrame({"<script>": ["a&b", None], "n": [1, 2]}))
    assert list(frame.columns) == ["&lt;script&gt;", "n"]
    assert frame.iloc[0, 0] == "a&amp;b" and frame.iloc[1, 0] is None


def test_the_sampling_banner_goes_after_body():
    banner = engines.sampling_banner(True, "Computed on a <sample>.")
    assert "Computed on a &lt;sample&gt;." in banner
    assert engines._insert_after_body("<html><BODY class='x'><p>r</p></body>", "<div>n</div>") == \
        "<html><BODY class='x'><div>n</div><p>r</p></body>"
    assert engines._insert_after_body("<p>no body</p>", "<div>n</div>") == "<div>n</div><p>no body</p>"


def test_fingerprints_and_reference_keys(con):
    con.execute("CREATE OR REPLACE TABLE a AS SELECT * FROM (VALUES (1, 'x'), (2, 'y')) v(n, s)")
    con.execute("CREATE OR REPLACE TABLE b AS SELECT * FROM (VALUES (2, 'y'), (1, 'x')) v(n, s)")
    con.execute("CREATE OR REPLACE TABLE c AS SELECT * FROM (VALUES (1, 'x'), (3, 'y')) v(n, s)")
    fp = engines.table_fingerprint(con, "a")
    assert fp == engines.table_fingerprint(con, "b")                  # row order does not matter
    assert fp != engines.table_fingerprint(con, "c") and len(fp) == 64
    parquet, meta, folder = engines.reference_key(con, "a", 1000)
    assert folder == "cache/drift-reference/a/"
    assert parquet.startswith(folder) and parquet.endswith(".parquet") and meta == parquet[:-8] + ".json"
    assert engines.reference_key(con, "b", 1000)[0].rsplit("/", 1)[1] == parquet.rsplit("/", 1)[1]
    assert engines.reference_key(con, "a", 999)[0] != parquet
    assert engines.reference_key(con, "a", 1000, cache_name="my table/x")[2] == "cache/drift-reference/my_table_x/"

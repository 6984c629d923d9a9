"""functions/analyze/profile/columns.py: per-column statistics of the two batched scans: string
patterns, lengths, text versus category, non-finite floats, temporal units, lists."""
from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from functions.analyze.profile import columns, profile_table

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def cols():
    con = duckdb.connect()
    con.execute("CREATE TABLE s (v VARCHAR, f DOUBLE, longtext VARCHAR, tm TIME, l INTEGER[], ts TIMESTAMP)")
    con.execute("""INSERT INTO s VALUES
        ('a@b.org', 1.5, repeat('word ', 20), TIME '10:00', [1, 2], TIMESTAMP '2024-01-01 00:00'),
        ('+44 20 7946 0958', 'inf', repeat('x', 60), TIME '11:00', [3], TIMESTAMP '2024-01-01 05:00'),
        ('https://example.com/x', 'nan', repeat('y', 45), NULL, NULL, TIMESTAMP '2024-01-01 10:00'),
        ('2024-05-17', NULL, '', NULL, [], NULL),
        ('123e4567-e89b-12d3-a456-426614174000', 0, 'short', NULL, NULL, NULL),
        ('', -2, NULL, NULL, NULL, NULL)""")
    profile = profile_table(con, "s", mask_values=False)
    con.close()
    return {c["name"]: c for c in profile["column_profiles"]}


def test_string_patterns_and_lengths(cols):
    v = cols["v"]
    assert v["patterns"] == {"email": 1, "phone": 1, "url": 1, "uuid": 1, "date_like": 1}
    values = ["a@b.org", "+44 20 7946 0958", "https://example.com/x", "2024-05-17",
              "123e4567-e89b-12d3-a456-426614174000", ""]
    assert (v["min_length"], v["max_length"], v["total_length"], v["empty"]) == \
        (0, 36, sum(map(len, values)), 1)
    assert v["mean_length"] == sum(map(len, values)) / 6
    assert (v["kind"], v["distinct"], v["unique"]) == ("categorical", 6, True)
    assert v["top_k"][0] == {"value": "", "count": 1}


def test_long_strings_are_text_not_categories(cols):
    text = cols["longtext"]
    assert text["mean_length"] == (100 + 60 + 45 + 0 + 5) / 5 > columns.TEXT_MEAN_LENGTH
    assert text["kind"] == "text"
    assert text["patterns"] == {"email": 0, "phone": 0, "url": 0, "uuid": 0, "date_like": 0}
    assert (text["nulls"], text["empty"]) == (1, 1)


def test_non_finite_floats_are_counted_and_left_out_of_the_moments(cols):
    f = cols["f"]
    assert (f["count"], f["nulls"], f["non_finite"], f["zeros"]) == (5, 1, 2, 1)
    assert f["mean"] == pytest.approx((1.5 + 0 - 2) / 3)
    assert f["min"] == -2.0
    assert f["quantiles"]["p50"] == 0.0
    assert [t["value"] for t in f["top_k"]] == [-2.0, 0.0, 1.5]


def test_temporal_units_and_time_of_day(cols):
    ts = cols["ts"]
    assert (ts["min"], ts["max"], ts["histogram_unit"]) == ("2024-01-01T00:00:00", "2024-01-01T10:00:00", "hour")
    assert sum(b["count"] for b in ts["histogram"]) == 3
    tm = cols["tm"]
    assert (tm["kind"], tm["min"], tm["max"], tm["histogram_unit"]) == ("temporal", "10:00:00", "11:00:00", None)


def test_lists_are_profiled_as_their_text(cols):
    lst = cols["l"]
    assert (lst["kind"], lst["count"], lst["distinct"]) == ("text", 3, 3)
    assert (lst["min_length"], lst["max_length"], lst["total_length"]) == (2, 6, len("[1, 2]") + len("[3]") + len("[]"))
    assert [t["value"] for t in lst["top_k"]] == ["[1, 2]", "[3]", "[]"]


@pytest.mark.parametrize("lo,hi,unit", [
    (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3), "hour"),
    (dt.date(2024, 1, 1), dt.date(2024, 3, 31), "day"),
    (dt.date(2024, 1, 1), dt.datetime(2026, 12, 31), "week"),
    (dt.date(2000, 1, 1), dt.date(2020, 1, 1), "month"),
    (dt.date(1000, 1, 1), dt.date(2020, 1, 1), "year"),
    ("2024-01-01", "2024-03-01", None),     # values, not their text
    (None, dt.date(2024, 1, 1), None),
])
def test_time_unit(lo, hi, unit):
    assert columns.time_unit(lo, hi) == unit


# Values at the edges of each pattern's prefilter: the counts must be the regex's alone.
EDGE_VALUES = [
    "a@b.co", "x@y", "a@b.c", "http://a.b/c", "HTTP://A.B", "ftp://x.y", "https://", " http://a.b", "httpx://a.b",
    "+1 555 123 4567", "(555) 123-4567", "555-123-4567", "+15551234567", "+1(555)123-4567", "(12) 3456",
    "+44 20 7946 0958", "555 123 4567 ", " 555-123-4567", "日本 555-123-4567", "555-123-456７", "0123456789",
    "2024-01-02", "12/31/2024", "2024-01-02 10:11:12", "1.2.2024", "31.12.24", "x2024-01-02", "２024-01-02",
    "123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-42661417400z", "ab", "", None,
]


def test_pattern_counts_are_the_regex_counts_at_every_prefilter_edge():
    """Each prefilter is a condition every match meets: the counts equal the plain regex's
    (Python's re, RE2's syntax here) over values just inside and just outside each prefilter."""
    import re

    con = duckdb.connect()
    con.execute("CREATE TABLE e (v VARCHAR)")
    con.executemany("INSERT INTO e VALUES (?)", [(v,) for v in EDGE_VALUES])
    patterns = profile_table(con, "e", mask_values=False)["column_profiles"][0]["patterns"]
    values = [v for v in EDGE_VALUES if v is not None]
    date = re.compile(columns.PATTERNS["date_like"][0])
    expected = {name: sum(1 for v in values if re.fullmatch(regex, v, flags=re.ASCII)
                          and not (name == "phone" and date.fullmatch(v)))
                for name, (regex, _) in columns.PATTERNS.items()}
    assert expected == {"email": 1, "phone": 6, "url": 2, "uuid": 1, "date_like": 5}
    assert patterns == expected


def test_a_nan_does_not_hide_a_float_columns_bounds():
    """NaN sorts above every number in DuckDB; the bounds leave it out and non_finite counts it.
    (An infinite bound is still the bound, which JSON holds as null.) A -inf used to fail the
    whole profile: its histogram bucket was cast to INTEGER."""
    con = duckdb.connect()
    con.execute("""CREATE TABLE n AS SELECT * FROM (VALUES (1.5::DOUBLE, 1.5::FLOAT), (-3.0, 'nan'), ('nan', 'nan'),
                   ('-inf', 4.0), (NULL, NULL)) v(d, f)""")
    con.execute("CREATE TABLE all_nan AS SELECT 'nan'::DOUBLE AS z FROM range(3)")
    d, f = profile_table(con, "n", mask_values=False)["column_profiles"]
    assert (d["min"], d["max"], d["non_finite"], d["count"]) == (None, 1.5, 2, 4)
    counts = [b["count"] for b in d["histogram"]]
    assert (d["histogram"][0]["lo"], d["histogram"][-1]["hi"], counts[0], counts[-1], sum(counts)) == (-3.0, 1.5, 1, 1, 2)
    assert (f["min"], f["max"], f["non_finite"], f["count"]) == (1.5, 4.0, 2, 4)
    z = profile_table(con, "all_nan", mask_values=False)["column_profiles"][0]
    assert (z["min"], z["max"], z["non_finite"]) == (None, None, 3)

"""functions/analyze/profile/page.py: the profile as one self-contained HTML page."""
from __future__ import annotations

import duckdb
import pytest

from functions.analyze.profile import page, profile_table

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value,text", [
    (None, "–"), (True, "yes"), (12345678, "12,345,678"), (0.0, "0"), (3.14159, "3.142"), (12345.678, "12,345.68"),
    (0.0001234, "1.2340e-04"), (1e16, "1.0000e+16"), ("VARCHAR", "VARCHAR"),
])
def test_fmt(value, text):
    assert page.fmt(value) == text


def test_pct_and_bars():
    assert (page.pct(None), page.pct(0.25), page.pct(1)) == ("–", "25.0%", "100.0%")
    assert page.bars([("a", 10), ("b", 5), ("c", 0)]) == [
        {"label": "a", "count": "10", "width": page.BAR_MAX_PX},
        {"label": "b", "count": "5", "width": round(page.BAR_MAX_PX / 2)},
        {"label": "c", "count": "0", "width": 1}]
    assert page.bars([]) == []


def test_column_section_of_a_personal_column_says_what_is_withheld():
    col = {"name": "card", "type": "BIGINT", "kind": "numeric", "count": 3, "nulls": 0, "null_share": 0.0,
           "distinct": 1, "distinct_method": "exact", "min": "4***", "max": "4***", "top_k": [],
           "pii": {"kind": "card_number", "withheld": ["mean", "histogram"]}}
    section = page.column_section(col, [{"kind": "pii"}, {"kind": "constant"}])
    assert (section["name"], section["kind"], section["alert_kinds"]) == ("card", "numeric", ["pii", "constant"])
    assert section["blocks"][0]["kv"] == [("type", "BIGINT"), ("non-null", "3"), ("nulls", "0 (0.0%)"),
                                          ("distinct", "1 (exact)"), ("min", "4***"), ("max", "4***")]
    assert section["blocks"][-1]["note"] == ("Personal data: values are masked and the statistics that would show "
                                             "them are withheld (mean, histogram).")


def test_the_page_of_a_real_profile_is_self_contained_and_escaped():
    con = duckdb.connect()
    con.execute('CREATE TABLE "<script>t" AS SELECT i AS "<b>n</b>", \'<img src=x>\' AS label, '
                "'ada@example.com' AS email FROM range(5) r(i)")
    html = page.render_profile_html(profile_table(con, '"<script>t"'))
    assert "<script" not in html and "<img" not in html and "<b>n</b>" not in html
    assert "&lt;script&gt;t" in html and "&lt;b&gt;n&lt;/b&gt;" in html and "&lt;img src=x&gt;" in html
    assert "ada@example.com" not in html and "a***@example.com" in html
    assert "http://" not in html and "https://" not in html
    assert "exact count(DISTINCT)" in html

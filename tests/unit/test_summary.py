"""functions/analyze/summary.py: the rule-based summary; every sentence comes from numbers in the JSON."""
from __future__ import annotations

import re

import pytest

from functions.analyze.summary import markdown_text, render, summarize

pytestmark = pytest.mark.unit

PROFILE = {"table": "csv__sales", "rows": 1000, "columns": 4, "duplicate_rows": 25, "size_bytes": 150_000,
           "alerts": [
               {"column": "note", "kind": "many_nulls", "message": "40.0% of values are null", "value": 0.4},
               {"column": "email", "kind": "pii", "message": "90.0% of values look like email addresses", "value": 0.9},
           ]}


@pytest.mark.parametrize("template,data,text", [
    ("{n:num}", {"n": 1234567}, "1,234,567"),
    ("{n:num}", {"n": 2.0}, "2"),
    ("{n:num}", {"n": 1234.5678}, "1,234.57"),
    ("{n:num}", {"n": 0.000123456}, "0.0001235"),
    ("{n:num}", {"n": None}, "n/a"),
    ("{n:num}", {"n": True}, "yes"),
    ("{n:pct}", {"n": 0.1234}, "12.3%"),
    ("{n:spct}", {"n": -0.05}, "-5.0%"),
    ("{n:spct}", {"n": 0.5}, "+50.0%"),
    ("{n:size}", {"n": 1023}, "1,023 B"),
    ("{n:size}", {"n": 150_000}, "146.5 KB"),
    ("{n:size}", {"n": 3 * 1024 ** 5}, "3,072.0 TB"),
    ("{n:code}", {"n": "a`b"}, "`a\u02cbb`"),
    ("{n:codes}", {"n": ["a", "b"]}, "`a`, `b`"),
    ("row{n:plural}", {"n": 1}, "row"),
    ("row{n:plural}", {"n": 2}, "rows"),
    ("{n}", {"n": 12345}, "12,345"),
    ("{n}", {"n": "text"}, "text"),
])
def test_render_formats(template, data, text):
    assert render(template, data) == text


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match=r"unknown summary format 'x'"):
        render("{n:x}", {"n": 1})


def test_markdown_text_escapes_outside_code_spans_only():
    assert markdown_text("a <img onerror=x> [l](javascript:y) `<keep> *this*` *b* _c_ & \\") == \
        "a \\<img onerror=x\\> \\[l\\](javascript:y) `<keep> *this*` \\*b\\* \\_c\\_ \\& \\\\"


def test_tables_and_alerts():
    markdown, data = summarize([PROFILE], [], None)
    texts = [f["text"] for f in data["facts"]]
    assert texts == [
        "Table `csv__sales` has 1,000 rows and 4 columns (about 146.5 KB uncompressed).",
        "Table `csv__sales` has 25 duplicate rows (2.5%).",
        "Table `csv__sales` raised 2 data-quality alerts.",
        "`csv__sales.email` (pii): 90.0% of values look like email addresses.",   # pii ranks first
        "`csv__sales.note` (many nulls): 40.0% of values are null.",
    ]
    assert data["tables"] == [{"table": "csv__sales", "rows": 1000, "columns": 4, "duplicate_rows": 25,
                               "size_bytes": 150_000, "alerts": 2}]
    assert [f["id"] for f in data["facts"]] == ["table:csv__sales:rows", "table:csv__sales:duplicate_rows",
                                               "table:csv__sales:alerts", "alert:csv__sales:email:pii",
                                               "alert:csv__sales:note:many_nulls"]
    assert data["facts"][0]["source"] == "profile:csv__sales.rows" and data["facts"][0]["value"] == 1000
    assert markdown.splitlines()[:4] == ["# Analysis summary", "", "## Tables", ""]
    assert "## Top alerts" in markdown
    # Every line of the markdown is a fact's text; templates hold no digits.
    assert [line[2:] for line in markdown.splitlines() if line.startswith("- ")] == \
        [markdown_text(t) for t in texts]
    assert not any(re.search(r"\d", f["template"]) for f in data["facts"])


def test_only_the_top_ten_alerts():
    many = {**PROFILE, "alerts": [{"column": f"c{i:02d}", "kind": "skewed", "message": "m", "value": i}
                                  for i in range(15)]}
    _, data = summarize([many], [], None)
    assert [a["column"] for a in data["alerts"]] == [f"c{i:02d}" for i in range(10)]


@pytest.mark.parametrize("kpi,headline,value", [
    ({"name": "row_count", "title": "Rows", "columns": ["n"], "rows": [[1000]]}, "Rows: 1,000.", 1000),
    ({"name": "freshness", "title": "Freshness", "columns": ["newest", "age"], "rows": [["2024-05-01", 36.0]]},
     "Freshness: newest value 2024-05-01, 36 hours before the analysis ran.", 36.0),
    ({"name": "null_rate", "title": "Null rate", "columns": ["column", "rate"], "rows": [["note", 0.4], ["x", 0.1]]},
     "Highest null rate: column `note` with 40.0% (2 columns with nulls).", 0.4),
    ({"name": "revenue_by_month", "title": "Revenue", "columns": ["month", "revenue"],
      "rows": [["2024-01", 100.0], ["2024-02", 150.0]]},
     "Revenue: latest month 2024-02 = 150 (+50.0% vs previous month), over 2 months.", 150.0),
    ({"name": "revenue_by_region", "title": "By region", "columns": ["region", "revenue"],
      "chart": {"type": "bar", "x": "region", "y": ["revenue"]}, "rows": [["north", 5], ["south", 9], ["east", 2]]},
     "By region: highest is `south` with 9 (3 groups shown).", 9),
    ({"name": "stats", "title": "Stats", "columns": ["label", "mean"], "rows": [["all", 2.5]]},
     "Stats: label = all; mean = 2.50.", 2.5),
    ({"name": "empty", "title": "Empty", "columns": ["a"], "rows": []}, "Empty: no rows.", None),
    ({"name": "broken", "title": "Broken", "error": "timeout after 10 s"}, "Broken: not computed (timeout after 10 s).",
     None),
])
def test_kpi_headlines(kpi, headline, value):
    _, data = summarize([], [kpi], None)
    assert data["kpis"] == [{"name": kpi["name"], "table": None, "title": kpi["title"], "headline": headline,
                             "value": value}]


def test_a_kpi_definition_carrying_its_result_and_custom_kpis():
    # The definition's name and title win over its result's.
    item = {"name": "rows", "title": "Row count", "table": "csv__sales",
            "result": {"name": "row_count", "columns": ["n"], "rows": [[7]]}}
    markdown, data = summarize([], [], None, custom_kpis=[item, {"name": "bad", "title": "Bad", "error": "no table"}])
    assert [k["headline"] for k in data["custom_kpis"]] == ["Row count: n = 7.", "Bad: not computed (no table)."]
    assert data["facts"][0]["id"] == "kpi:csv__sales:rows" and data["facts"][0]["section"] == "custom_kpis"
    assert "## Tenant KPIs" in markdown and "## KPIs" not in markdown


def test_duplicate_fact_ids_are_numbered():
    kpi = {"name": "row_count", "title": "Rows", "columns": ["n"], "rows": [[1]]}
    _, data = summarize([], [kpi, kpi, kpi], None)
    assert [f["id"] for f in data["facts"]] == ["kpi:row_count", "kpi:row_count#2", "kpi:row_count#3"]


def test_drift_per_table():
    drift = {"csv__sales": {"dataset_drift": True, "share": 0.5, "threshold": 0.5, "drifted_columns": ["amount", "qty"],
                            "columns": [{"column": "amount", "drifted": True, "score": 0.01, "test": "K-S p_value",
                                         "threshold": 0.05},
                                        {"column": "qty", "drifted": True, "score": 0.002, "threshold": 0.05},
                                        {"column": "region", "drifted": False, "score": 0.9},
                                        {"column": "day", "drifted": False}],
                            "reference": "snapshot-1"}}
    _, data = summarize([], [], drift)
    assert [f["text"] for f in data["facts"]] == [
        "Table `csv__sales` drifted against its reference: 2 of 4 columns drifted (50.0%, dataset threshold 50.0%).",
        "Drifted columns in `csv__sales`: `amount`, `qty`.",
        "Column `amount` drift score 0.01 by K-S p_value (threshold 0.05).",
        "Column `qty` drift score 0.002 by its test (threshold 0.05).",
    ]
    assert data["drift"] == {"csv__sales": {"dataset_drift": True, "drifted_columns": ["amount", "qty"], "share": 0.5,
                                            "threshold": 0.5, "reference": "snapshot-1"}}


def test_a_single_drift_verdict_without_columns():
    _, data = summarize([], [], {"dataset_drift": False, "share": 0.0, "drifted_columns": []})
    assert [f["text"] for f in data["facts"]] == ["The data did not drift against its reference: 0 columns drifted (0.0%)."]
    assert data["drift"] == {"dataset_drift": False, "drifted_columns": [], "share": 0.0, "threshold": None}


def test_documents():
    stats = {"table": "docs__fragments", "documents": 1, "elements": 6,
             "elements_by_type": [{"element_type": "Title", "count": 2}, {"element_type": "NarrativeText", "count": 4}],
             "text_length": {"mean": 17.4, "max": 38, "quantiles": {"p50": 16.0}},
             "top_terms": [{"term": t} for t in ("revenue", "report", "quarterly", "grew", "held", "extra")]}
    markdown, data = summarize([], [], None, text_stats=[stats])
    assert [f["text"] for f in data["facts"]] == [
        "Table `docs__fragments` holds 1 document in 6 elements of 2 types.",
        "Element text in `docs__fragments` is 17.40 characters long on average (median 16, longest 38).",
        "Most frequent terms in `docs__fragments`: `revenue`, `report`, `quarterly`, `grew`, `held`.",
    ]
    assert data["documents"] == [{"table": "docs__fragments", "documents": 1, "elements": 6,
                                  "top_terms": ["revenue", "report", "quarterly", "grew", "held"]}]
    assert "## Documents" in markdown


def test_nothing_analysed():
    markdown, data = summarize([], [], None)
    assert markdown == "# Analysis summary\n\nNo tables were analysed.\n"
    assert data == {"tables": [], "alerts": [], "drift": None, "kpis": [], "custom_kpis": [], "documents": [],
                    "facts": []}


def test_hostile_names_are_shown_not_rendered():
    profile = {"table": "t", "rows": 1, "columns": 1, "size_bytes": 8,
               "alerts": [{"column": "x", "kind": "constant", "message": "every non-null value is '<script>[a](b)'",
                           "value": "<script>"}]}
    markdown, _ = summarize([profile], [], None)
    assert "- `t.x` (constant): every non-null value is '\\<script\\>\\[a\\](b)'." in markdown

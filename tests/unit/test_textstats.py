"""functions/analyze/textstats.py: text statistics of a document-fragments table, over every row."""
from __future__ import annotations

import duckdb
import pytest

from functions.analyze.textstats import is_document_table, render_text_stats_html, text_stats

pytestmark = pytest.mark.unit

ROWS = [
    # document, element_id, element_type, text, page, section
    ("a.pdf", "1", "Title", "Quarterly Report", 1, "intro"),
    ("a.pdf", "2", "NarrativeText", "Revenue grew and revenue margins held.", 1, "intro"),
    ("a.pdf", "3", "NarrativeText", "The report covers revenue.", 2, "body"),
    ("b.docx", "1", "Title", "Minutes", None, None),
    ("b.docx", "2", "ListItem", "", None, None),
    ("b.docx", "3", None, None, None, None),
]


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("CREATE TABLE docs__fragments (document VARCHAR, element_id VARCHAR, element_type VARCHAR, "
                "text VARCHAR, page INTEGER, section VARCHAR, metadata VARCHAR)")
    con.executemany("INSERT INTO docs__fragments VALUES (?, ?, ?, ?, ?, ?, '{}')", ROWS)
    yield con
    con.close()


def test_is_document_table_in_every_form():
    names = ["document", "element_id", "element_type", "text", "page", "section", "metadata"]
    assert is_document_table(names)
    assert is_document_table([n.upper() for n in names] + ["extra"])
    assert is_document_table([(n, "VARCHAR") for n in names])
    assert is_document_table([{"name": n} for n in names])
    assert not is_document_table(names[:-1])


def test_counts(con):
    stats = text_stats(con, "docs__fragments")
    assert stats["table"] == "docs__fragments"
    assert (stats["documents"], stats["elements"], stats["pages"], stats["sections"]) == (2, 6, 2, 2)
    assert stats["elements_by_type"] == [{"element_type": "NarrativeText", "count": 2},
                                         {"element_type": "Title", "count": 2},
                                         {"element_type": "(none)", "count": 1},
                                         {"element_type": "ListItem", "count": 1}]
    assert stats["elements_per_document"] == {"min": 3, "mean": 3.0, "max": 3,
                                              "top": [{"document": "a.pdf", "elements": 3},
                                                      {"document": "b.docx", "elements": 3}]}


def test_text_lengths(con):
    length = text_stats(con, "docs__fragments")["text_length"]
    lengths = sorted(len(r[3]) for r in ROWS if r[3] is not None)   # [0, 7, 16, 26, 38]
    assert lengths == [0, 7, 16, 26, 38]
    assert (length["count"], length["nulls"], length["empty"]) == (5, 1, 1)
    assert (length["min"], length["max"]) == (0, 38)
    assert length["mean"] == pytest.approx(sum(lengths) / 5)
    assert length["quantiles"]["p50"] == 16.0
    assert length["quantiles"]["p25"] == 7.0
    assert length["quantiles"]["p75"] == 26.0
    assert length["quantiles"]["p05"] == pytest.approx(0 + 0.2 * 7)
    assert length["characters"] == 87
    # Words are runs of letters: 2 + 6 + 4 + 1 + 0.
    assert length["words"] == 13
    histogram = length["histogram"]
    assert len(histogram) == 20 and histogram[0]["lo"] == 0 and histogram[-1]["hi"] == pytest.approx(38.0)
    assert sum(b["count"] for b in histogram) == 5
    assert histogram[-1]["count"] == 1   # the longest text lands in the last bin


def test_top_terms_skip_stopwords_and_short_words(con):
    terms = text_stats(con, "docs__fragments")["top_terms"]
    assert terms[:2] == [{"term": "revenue", "count": 3, "documents": 1}, {"term": "report", "count": 2, "documents": 1}]
    names = {t["term"] for t in terms}
    assert not names & {"the", "and"}
    assert names == {"revenue", "report", "quarterly", "grew", "margins", "held", "covers", "minutes"}
    assert len(text_stats(con, "docs__fragments", top_terms=1)["top_terms"]) == 1


def test_a_table_that_is_not_a_fragments_table(con):
    con.execute("CREATE TABLE plain (a INTEGER, text VARCHAR)")
    with pytest.raises(ValueError, match=r"plain is not a fragments table: it lacks the columns \['document', "):
        text_stats(con, "plain")


def test_an_all_null_text_column_has_no_histogram(con):
    con.execute("CREATE TABLE empty AS SELECT * FROM docs__fragments WHERE text IS NULL")
    length = text_stats(con, "empty")["text_length"]
    assert length["histogram"] == [] and length["max"] is None and length["count"] == 0
    assert length["quantiles"] == {"p05": None, "p25": None, "p50": None, "p75": None, "p95": None}


def test_the_page_is_self_contained_and_escaped(con):
    con.execute("INSERT INTO docs__fragments VALUES ('<script>x.pdf', '9', 'Title', 'scripted words', 1, 's', '{}')")
    html = render_text_stats_html(text_stats(con, "docs__fragments"))
    assert "<script" not in html
    assert "&lt;script&gt;x.pdf" in html
    assert "revenue" in html and "NarrativeText" in html
    assert "http://" not in html and "https://" not in html

"""Every HTML page UDB builds comes from an autoescaped Jinja2 template (shared/core/templating.py):
hostile names and values (a table or column called `<script>alert(1)</script>`, a fact holding
`"><img onerror=...>`) reach each page as text. Each page is parsed with html.parser and its
elements counted: the payloads must add no element and no attribute, and must appear escaped."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import duckdb
import jinja2
import pytest
from markupsafe import escape as jinja_escape

from functions.analyze.profile import profile_table, render_profile_html
from functions.analyze.textstats import render_text_stats_html
from functions.reports.engines import sampling_banner
from shared.analysis.charts import chart_html
from shared.core.templating import environment, render
from shared.storage.jobindex import render_index_html

pytestmark = [pytest.mark.unit, pytest.mark.security]

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror="alert(2)">'
QUOTE_IMG = "'><img src=x onerror=alert(3)>"


def esc(value: str) -> str:
    """A value as Jinja2's autoescape writes it (quotes as &#34; and &#39;)."""
    return str(jinja_escape(value))


class Elements(HTMLParser):
    """Start tags of a page, and every attribute named on* (an event handler)."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [(tag, name) for name, _ in attrs if name.startswith("on")]

    def handle_data(self, data):
        self.text.append(data)


def assert_inert(page: str, scripts: int = 0, imgs: int = 0) -> Elements:
    """No payload became markup: no event handler, only the page's own scripts and images."""
    found = Elements(page)
    assert found.tags.count("img") == page.count("<img") == imgs, "an <img> from the data became an element"
    assert found.handlers == []
    assert found.tags.count("script") == scripts
    assert SCRIPT not in page
    return found


# ---------------------------------------------------------------- the profile page (analyze)


def test_profile_page_escapes_hostile_table_column_and_values():
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE "{SCRIPT}" AS SELECT
        CASE WHEN i % 2 = 0 THEN '{SCRIPT}' ELSE '{IMG.replace("'", "''")}' END AS "{IMG.replace('"', '""')}",
        i AS "{QUOTE_IMG.replace('"', '""')}"
        FROM range(10) r(i)""")
    prof = profile_table(con, (SCRIPT,))
    assert prof["table"] == SCRIPT and [c["name"] for c in prof["column_profiles"]] == [IMG, QUOTE_IMG]
    page = render_profile_html(prof)
    found = assert_inert(page)
    text = "".join(found.text)
    # SCRIPT: <title>, <h1>, its column's min or max, a top value. IMG (a column name and a
    # value): the columns table, its section heading, min or max, a top value. QUOTE_IMG (an
    # integer column): the columns table, its section heading, its `unique` alert row.
    assert (text.count(SCRIPT), text.count(IMG), text.count(QUOTE_IMG)) == (4, 4, 3)
    assert text.count(f"Profile: {SCRIPT}") == 2
    assert [(a["column"], a["kind"]) for a in prof["alerts"]] == [(QUOTE_IMG, "unique")]
    assert esc(SCRIPT) in page
    # The hostile column is a 2-value categorical: both values in its top-values table.
    top = prof["column_profiles"][0]["top_k"]
    assert sorted(t["value"] for t in top) == sorted([SCRIPT, IMG]) and [t["count"] for t in top] == [5, 5]


# ---------------------------------------------------------------- the text statistics page (analyze)


def test_text_stats_page_escapes_hostile_names():
    stats = {"table": SCRIPT, "documents": 1, "elements": 2, "pages": 1, "sections": 1,
             "text_length": {"characters": 10, "words": 2, "min": 1, "mean": 5.0, "max": 9, "quantiles": {"p50": 5.0},
                             "empty": 0, "nulls": 0, "histogram": [{"lo": 0.0, "hi": 10.0, "count": 2}]},
             "elements_per_document": {"mean": 2.0, "top": [{"document": IMG, "elements": 2}]},
             "elements_by_type": [{"element_type": QUOTE_IMG, "count": 2}],
             "top_terms": [{"term": SCRIPT, "count": 3, "documents": 1}]}
    page = render_text_stats_html(stats)
    found = assert_inert(page)
    text = "".join(found.text)
    assert text.count(SCRIPT) == 3  # <title>, <h1>, the top term
    assert text.count(IMG) == 1 and text.count(QUOTE_IMG) == 1


# ---------------------------------------------------------------- the job's report page (artifacts)


def test_job_index_page_escapes_hostile_facts_names_and_reasons():
    index = {"job_id": "job-1", "tenant": "acme", "tables": [SCRIPT],
             "notes": [{"kind": "row_cap", "message": IMG}],
             "reports": [{"id": IMG, "title": SCRIPT, "state": "failed", "reason": QUOTE_IMG, "artifacts": []},
                         {"id": "ydata", "title": "ydata", "state": "ready", "artifacts": [IMG], "note": SCRIPT}]}
    entries = [{"name": IMG, "media_type": "text/html", "bytes": 2048, "description": SCRIPT, "table": SCRIPT},
               {"name": QUOTE_IMG, "media_type": "image/png", "bytes": 10, "description": IMG, "table": None}]
    facts = [{"text": f"Column `{SCRIPT}` holds {IMG}"}]
    page = render_index_html(index, entries, facts)
    found = assert_inert(page, imgs=1)  # the gallery's image of the PNG artifact
    assert f'<img src="{esc(QUOTE_IMG)}" alt="{esc(IMG)}">' in page
    # The fact's backticked name is still shown as code, escaped.
    assert f"<li>Column <code>{esc(SCRIPT)}</code> holds {esc(IMG)}</li>" in page
    # Links keep the hostile artifact names inside their attribute values.
    hrefs = re.findall(r'<a href="([^"]*)"', page)
    assert esc(IMG) in hrefs and esc(QUOTE_IMG) in hrefs
    # The ready report's link, the table's artifact, the job's PNG and index.json, summary.json, the gallery.
    assert found.tags.count("a") == 6
    text = "".join(found.text)
    assert f"Table {SCRIPT}" in text and "row cap: " + IMG in text and QUOTE_IMG in text


# ---------------------------------------------------------------- KPI charts (analyze)


@pytest.mark.parametrize("plotlyjs", ["plotly.min.js", False])
def test_chart_page_escapes_title_and_keeps_values_inside_the_script(plotlyjs):
    kpi = {"name": "k", "title": SCRIPT, "chart": {"type": "bar", "x": "g", "y": "n"}}
    result = {"columns": ["g", "n"], "rows": [["</script><script>alert(4)</script>", 3], [IMG, 5]]}
    page = chart_html(kpi, result, plotlyjs=plotlyjs)
    assert_inert(page, scripts=2 if plotlyjs else 1)
    assert "</script><script>alert(4)" not in page
    assert f"<title>{esc(SCRIPT)}</title>" in page
    spec = json.loads(re.search(r"var spec = (.*);\nPlotly", page).group(1))
    assert spec["data"][0]["x"] == ["</script><script>alert(4)</script>", IMG] and spec["data"][0]["y"] == [3, 5]
    if plotlyjs:
        assert '<script src="plotly.min.js"></script>' in page


# ---------------------------------------------------------------- the ydata page's note (reports)


def test_sampling_banner_escapes_its_note():
    banner = sampling_banner(True, f"Computed on a sample ({SCRIPT} sampling).")
    found = assert_inert(banner)
    assert found.tags == ["div", "strong"]
    assert "".join(found.text) == f"Sample: Computed on a sample ({SCRIPT} sampling)."


# ---------------------------------------------------------------- the template environment


def test_every_template_is_autoescaped_and_undefined_names_fail():
    env = environment("functions.analyze.profile")
    assert env.autoescape("any.txt") is True and env.autoescape(None) is True
    assert env.from_string("{{ x }}").render(x=SCRIPT) == esc(SCRIPT)
    with pytest.raises(jinja2.UndefinedError):
        render("functions.reports", "sampling_note.html", sampled=True)

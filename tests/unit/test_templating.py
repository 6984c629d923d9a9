"""shared/core/templating.py: pages from a package's templates/, every value autoescaped."""
from __future__ import annotations

import jinja2
import pytest
from markupsafe import Markup

from shared.core import templating

pytestmark = pytest.mark.unit


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package with templates/page.html, notes.txt and strict.html."""
    root = tmp_path / "udb_unit_pages"
    (root / "templates").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "templates" / "page.html").write_text(
        "<h1>{{ title }}</h1>\n{% for c in columns %}\n<li>{{ c }}</li>\n{% endfor %}\n")
    (root / "templates" / "notes.txt").write_text("{{ note }}")
    (root / "templates" / "strict.html").write_text("{{ missing }}")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "udb_unit_pages"
    templating.environment.cache_clear()


def test_values_are_escaped_and_blocks_trimmed(package):
    html = templating.render(package, "page.html", title="<script>alert(1)</script>",
                             columns=["a & b", '"quoted"'])
    assert html == ("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>\n<li>a &amp; b</li>\n"
                    "<li>&#34;quoted&#34;</li>\n")


def test_a_template_not_named_html_is_escaped_too(package):
    assert templating.render(package, "notes.txt", note="<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"


def test_markup_is_left_as_it_is(package):
    assert templating.render(package, "notes.txt", note=Markup("<b>trusted</b>")) == "<b>trusted</b>"


def test_a_missing_value_is_an_error_not_an_empty_string(package):
    with pytest.raises(jinja2.UndefinedError, match="'missing' is undefined"):
        templating.render(package, "strict.html")


def test_one_environment_per_package(package):
    assert templating.environment(package) is templating.environment(package)
    with pytest.raises(jinja2.TemplateNotFound):
        templating.render(package, "nope.html")


def test_udb_pages_render_from_their_packages():
    # The job index page of shared.storage, as jobindex renders it: a hostile description shows as text.
    from shared.storage import jobindex
    entry = {"name": "a.html", "description": "<img src=x onerror=alert(1)>", "media_type": "text/html", "bytes": 3,
             "table": "t"}
    html = jobindex.render_index_html({"job_id": "job-0000000000000001", "tenant": "acme", "tables": ["t"],
                                       "reports": []}, [entry], [])
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    assert "job-0000000000000001" in html

"""HTML pages from Jinja2 templates, every value autoescaped.

A package that builds a page keeps its templates in its own `templates/` folder (shipped as
package data and copied into the function images) and renders them with `render(__package__,
"page.html", ...)`. Autoescaping is on for every template, whatever its name, so a table or
column name such as `<script>` reaches the page as text; a value is markup only where the code
says so with `markupsafe.Markup` (trusted, UDB-made content such as the inlined plotly.js).
"""
from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


@cache
def environment(package: str) -> jinja2.Environment:
    """The Jinja2 environment of one package's `templates/` folder (built once per package)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        # default=True: a template whose name does not end in .html is escaped all the same.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
        # A name the template uses but the caller did not pass is a bug, not an empty string.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(package: str, template: str, **context: Any) -> str:
    """Render `template` from `package`'s templates/ folder with `context`, autoescaped."""
    return environment(package).get_template(template).render(**context)

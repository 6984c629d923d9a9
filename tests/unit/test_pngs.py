"""functions/reports/pngs.py: the Plotly figure of a KPI chart, and what rendering PNGs says when
there is nothing to render with. (PNGs from a real Chromium: e2e/test_report_page.py and the
reports tests.)"""
from __future__ import annotations

import time

import pytest

from functions.reports import pngs
from shared.analysis.charts import chart_spec

pytestmark = pytest.mark.unit

KPI = {"name": "rev", "title": "Revenue", "chart": {"type": "bar", "x": "region", "y": "revenue"}}
RESULT = {"columns": ["region", "revenue"], "rows": [["north", 3], ["south", 5]]}


def test_chart_figure_is_the_html_charts_figure():
    figure = pngs.chart_figure(KPI, RESULT)
    spec = chart_spec(KPI, RESULT)
    data = figure.to_plotly_json()["data"]
    assert len(data) == 1
    assert (data[0]["type"], list(data[0]["x"]), list(data[0]["y"]), data[0]["name"]) == \
        ("bar", ["north", "south"], [3, 5], "revenue")
    layout = figure.to_plotly_json()["layout"]
    assert layout["title"]["text"] == spec["layout"]["title"]["text"] == "Revenue"
    assert list(layout["colorway"]) == spec["layout"]["colorway"]


def test_nothing_to_render():
    assert pngs.render_pngs([], None) == ({}, None)
    assert pngs.render_pngs([], "/no/chromium") == ({}, None)


def test_without_chromium_nothing_is_rendered_and_it_says_why():
    assert pngs.render_pngs([("chart-rev.png", pngs.chart_figure(KPI, RESULT))], None) == \
        ({}, "no Chromium given (see find_chromium)")
    assert pngs.render_pngs([("chart-rev.png", pngs.chart_figure(KPI, RESULT))], "") == \
        ({}, "no Chromium given (see find_chromium)")


def test_a_chromium_that_does_not_start_is_a_reason_not_a_crash(tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    started = time.monotonic()
    out, why = pngs.render_pngs([("chart-rev.png", pngs.chart_figure(KPI, RESULT))], str(fake), timeout_s=5)
    assert out == {}
    assert why.startswith(f"Chromium at {fake} could not render charts: BrowserFailedError: ")
    assert "The browser seemed to close immediately after starting." in why
    assert time.monotonic() - started < 10


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_charts_drawn_in_one_tab_are_the_charts_drawn_each_alone():
    """render_pngs keeps kaleido's tab between figures (no page reload): each figure's PNG is
    byte for byte the one a fresh browser session draws for that figure alone, so no figure
    leaves anything on the page the next one draws on."""
    from shared.analysis.charts import PNG_HEIGHT, PNG_WIDTH, find_chromium

    chromium, why = find_chromium()
    assert chromium, f"this test needs Chromium: {why}"
    figures = [
        ("bar", pngs.chart_figure(KPI, RESULT)),
        ("line", pngs.chart_figure({"name": "t", "title": "Trend", "chart": {"type": "line", "x": "d", "y": "n"}},
                                   {"columns": ["d", "n"], "rows": [["2024-01-0%d" % i, i * i] for i in range(1, 8)]})),
        ("bar2", pngs.chart_figure({**KPI, "title": "Revenue again"},
                                   {"columns": ["region", "revenue"], "rows": [["east", 9], ["west", 1], ["north", 4]]})),
    ]
    together, why = pngs.render_pngs(figures, chromium, timeout_s=60)
    assert why is None and sorted(together) == ["bar", "bar2", "line"]
    assert {_png_size(png) for png in together.values()} == {(PNG_WIDTH, PNG_HEIGHT)}
    assert len(set(together.values())) == 3
    for name, figure in figures:
        alone, why = pngs.render_pngs([(name, figure)], chromium, timeout_s=60)
        assert why is None and alone[name] == together[name], name

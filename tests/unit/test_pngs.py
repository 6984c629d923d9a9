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

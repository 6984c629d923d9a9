"""shared/analysis/charts.py: the Plotly figure of a KPI result, its HTML page, and where Chromium is."""
from __future__ import annotations

import json
import os
import re

import pytest

from shared.analysis import charts

pytestmark = pytest.mark.unit

RESULT = {"columns": ["region", "revenue", "orders"],
          "rows": [["north", 10.5, 3], ["south", 20.0, 5], [None, 1.0, 1]], "row_count": 3}


def _kpi(kind, y="revenue", x="region", **kw):
    return {"name": "rev", "title": "Revenue by region", "chart": {"type": kind, "x": x, "y": y}, **kw}


def test_bar_chart_one_trace_per_y_with_null_labels():
    spec = charts.chart_spec(_kpi("bar", y=["revenue", "orders"]), RESULT)
    assert spec["data"] == [
        {"type": "bar", "x": ["north", "south", "(null)"], "y": [10.5, 20.0, 1.0], "name": "revenue"},
        {"type": "bar", "x": ["north", "south", "(null)"], "y": [3, 5, 1], "name": "orders"}]
    layout = spec["layout"]
    assert layout["title"] == {"text": "Revenue by region", "x": 0.05}
    assert layout["xaxis"]["title"] == {"text": "region", "standoff": 15}
    assert layout["yaxis"]["title"] == {"text": "revenue, orders", "standoff": 15}
    assert layout["colorway"][0] == "#636efa" and layout["paper_bgcolor"] == "white"
    assert "annotations" not in layout
    # The shared template is copied, never changed.
    assert "title" not in charts.WHITE["xaxis"]


def test_line_and_scatter_keep_raw_x_values():
    line = charts.chart_spec(_kpi("line"), RESULT)["data"]
    assert line == [{"type": "scatter", "x": ["north", "south", None], "y": [10.5, 20.0, 1.0],
                     "mode": "lines+markers", "name": "revenue"}]
    assert charts.chart_spec(_kpi("scatter"), RESULT)["data"][0]["mode"] == "markers"


def test_pie_and_indicator():
    pie = charts.chart_spec(_kpi("pie"), RESULT)
    assert pie["data"] == [{"type": "pie", "labels": ["north", "south", "(null)"], "values": [10.5, 20.0, 1.0],
                            "name": "revenue"}]
    assert pie["layout"]["title"] == {"text": "Revenue by region", "x": 0.05}
    assert "title" not in pie["layout"]["xaxis"]
    indicator = charts.chart_spec(_kpi("indicator"), RESULT)
    assert indicator["data"] == [{"type": "indicator", "mode": "number", "value": 10.5, "title": {
        "text": "Revenue by region<br><span style='font-size:0.7em'>region: north</span>"}}]
    assert "title" not in indicator["layout"]
    # A value that is not a number (a bool, text) is left out rather than drawn wrong.
    flag = charts.chart_spec(_kpi("indicator", y="ok", x=None), {"columns": ["ok"], "rows": [[True]]})
    assert flag["data"] == [{"type": "indicator", "mode": "number", "title": {"text": "Revenue by region"}}]


def test_no_rows_and_unknown_columns():
    empty = charts.chart_spec(_kpi("bar"), {"columns": ["region", "revenue"], "rows": []})
    assert empty["data"] == []
    assert empty["layout"]["annotations"] == [{"text": "No data", "showarrow": False, "font": {"size": 20}}]
    missing = charts.chart_spec(_kpi("bar", y="nope", x="nada"), RESULT)
    assert missing["data"] == [{"type": "bar", "x": [], "y": [], "name": "nope"}]
    untitled = charts.chart_spec({"name": "plain", "chart": {"type": "bar", "x": "region", "y": "revenue"}}, RESULT)
    assert untitled["layout"]["title"]["text"] == "plain"


@pytest.mark.parametrize("capped_by,cap", [("bytes", "byte cap"), ("rows", "row cap")])
def test_a_truncated_result_says_so(capped_by, cap):
    result = {**RESULT, "truncated": True, "capped_by": capped_by, "row_count": 12000}
    note = charts.chart_spec(_kpi("bar"), result)["layout"]["annotations"][-1]
    assert note["text"] == f"first 12,000 rows only ({cap})"
    assert (note["xref"], note["x"], note["y"]) == ("paper", 1, 1.08)


def test_chart_html_escapes_every_value_in_the_script():
    kpi = _kpi("bar", title="</script><script>alert(1)</script>")
    result = {"columns": ["region", "revenue"], "rows": [["</script><b>&'", 1]]}
    html = charts.chart_html(kpi, result, plotlyjs=charts.PLOTLY_JS)
    assert "</script><script>alert(1)" not in html and "</script><b>" not in html
    assert '<script src="plotly.min.js"' in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html   # the <title>
    spec = re.search(r"\\u003c/script\\u003e\\u003cb\\u003e\\u0026\\u0027", html)
    assert spec is not None


def test_chart_html_inlines_plotly_js_offline():
    html = charts.chart_html(_kpi("bar"), RESULT)
    js = charts.plotly_js()
    assert len(js) > 1_000_000 and html.count(js) == 1
    page = html.replace(js, "")
    assert "<script><" + "/script>" in page and "http" not in page   # nothing fetched from anywhere
    assert 'Plotly.newPlot("chart", spec.data, spec.layout, {"displaylogo": false, "responsive": true});' in page


def test_chart_spec_is_plain_json():
    spec = charts.chart_spec(_kpi("bar"), RESULT)
    assert json.loads(json.dumps(spec)) == spec


def test_find_chromium(tmp_path, monkeypatch):
    exe = tmp_path / "my-chromium"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    plain = tmp_path / "not-executable"
    plain.write_text("")
    assert charts.find_chromium(str(exe)) == (str(exe), None)
    assert charts.find_chromium("", str(exe)) == (str(exe), None)
    assert charts.find_chromium(str(plain), str(exe)) == (None, f"no Chromium at {plain} (UDB_CHROMIUM_PATH)")
    assert charts.find_chromium("", str(tmp_path / "gone")) == (None, f"no Chromium at {tmp_path / 'gone'} (BROWSER_PATH)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    assert charts.find_chromium() == (None, "no Chromium found (install it with scripts/ensure-chromium.sh, "
                                            "or set UDB_CHROMIUM_PATH or BROWSER_PATH)")
    (bindir / "chromium-browser").write_text("#!/bin/sh\n")
    os.chmod(bindir / "chromium-browser", 0o755)
    assert charts.find_chromium() == (str(bindir / "chromium-browser"), None)


def test_plotly_js_is_read_once_per_process():
    first = charts.plotly_js_bytes()
    assert charts.plotly_js_bytes() is first  # the same bytes for every job, not read again
    assert first == charts.plotly_js().encode("utf-8") and len(first) > 3_000_000

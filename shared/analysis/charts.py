"""KPI charts: the Plotly figure of a KPI result (analyze writes it as an HTML page, the
reports function as PNG through functions/reports/pngs.py), and where Chromium is.

Shared by both functions so the PNG shows exactly the figure of the HTML chart. Nothing here
imports plotly: the figure is plain JSON for plotly.js, and the Plotly object kaleido needs is
made in functions/reports/pngs.py, so the analyze image carries plotly.js alone, not the plotly
package (images/requirements.py PACKAGE_DATA). kaleido is only in the reports function.
"""
from __future__ import annotations

import functools

import json
import os
import shutil
from pathlib import Path
from typing import Any

from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from shared.core.templating import render

PLOTLY_JS = "plotly.min.js"


def plotly_js() -> str:
    """plotly.js as shipped in the plotly package (offline), written once per job as an artifact.
    Read from the package's data without importing plotly (its import and figure validation
    cost seconds on the core path). The analyze and artifacts images hold only this file of the
    pinned plotly wheel, at its place in the package, which find_spec finds all the same."""
    return plotly_js_bytes().decode("utf-8")


@functools.cache
def plotly_js_bytes() -> bytes:
    """plotly.js as bytes, read once per process: analyze writes the same 4.5 MB with every job
    (reading and decoding it each time cost 15-40 ms of the job)."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("plotly is not installed: its plotly.min.js draws the charts")
    root = Path(list(spec.submodule_search_locations)[0])
    data = (root / "package_data" / "plotly.min.js").read_bytes()
    data.decode("utf-8")  # as read_text did: a damaged file fails here, not in a browser
    return data


CHART_TYPES = ("bar", "line", "scatter", "pie", "indicator")
# The parts of Plotly's `plotly_white` template the charts use, as plain layout (plotly.js has no
# named templates; the Python package applies them).
WHITE = {"colorway": ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880",
                      "#FF97FF", "#FECB52"],
         "font": {"color": "#2a3f5f"}, "paper_bgcolor": "white", "plot_bgcolor": "white", "hovermode": "closest",
         **{axis: {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "ticks": "", "zerolinecolor": "#EBF0F8",
                   "automargin": True, "zerolinewidth": 2} for axis in ("xaxis", "yaxis")}}


def chart_spec(kpi: dict, result: dict) -> dict:
    """The Plotly figure of a KPI result as plain JSON ({data, layout}), from its chart spec
    {type, x, y}: what plotly.js draws in the HTML chart and what the reports function hands to
    Plotly and kaleido for the PNG.

    type is bar | line | scatter | pie | indicator; y is one column or a list of columns
    (one trace each); x is the category/time column (the labels of a pie).
    """
    chart: dict[str, Any] = kpi.get("chart") or {}
    columns, rows = result.get("columns", []), result.get("rows", [])

    def values(name: Any) -> list:
        if name not in columns:
            return []
        index = columns.index(name)
        return [row[index] for row in rows]

    kind = chart.get("type")
    ys_names: list = chart["y"] if isinstance(chart.get("y"), list) else [chart.get("y")]
    title = kpi.get("title") or kpi.get("name", "")
    data: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    layout = {**json.loads(json.dumps(WHITE)), "margin": {"l": 60, "r": 30, "t": 70, "b": 60}}
    if not rows:
        annotations.append({"text": "No data", "showarrow": False, "font": {"size": 20}})
    elif kind == "indicator":
        ys = values(ys_names[0])
        value = ys[0] if ys else None
        subtitle = ""
        if chart.get("x") and values(chart["x"]):
            subtitle = f"<br><span style='font-size:0.7em'>{chart['x']}: {values(chart['x'])[0]}</span>"
        trace: dict[str, Any] = {"type": "indicator", "mode": "number", "title": {"text": f"{title}{subtitle}"}}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            trace["value"] = value
        data.append(trace)
    elif kind == "pie":
        labels = ["(null)" if v is None else str(v) for v in values(chart.get("x"))]
        data.append({"type": "pie", "labels": labels, "values": values(ys_names[0]), "name": ys_names[0]})
    else:
        for y_name in ys_names:
            ys = values(y_name)
            if kind in ("line", "scatter"):
                mode = "lines+markers" if kind == "line" else "markers"
                data.append({"type": "scatter", "x": values(chart.get("x")), "y": ys, "mode": mode, "name": y_name})
            else:
                xs = ["(null)" if v is None else str(v) for v in values(chart.get("x"))]
                data.append({"type": "bar", "x": xs, "y": ys, "name": y_name})
    if kind not in ("indicator", "pie"):
        layout["title"] = {"text": title, "x": 0.05}
        layout["xaxis"]["title"] = {"text": chart.get("x"), "standoff": 15}
        layout["yaxis"]["title"] = {"text": ", ".join(str(y) for y in ys_names), "standoff": 15}
    elif kind == "pie":
        layout["title"] = {"text": title, "x": 0.05}
    if result.get("truncated"):
        cap = "byte cap" if result.get("capped_by") == "bytes" else "row cap"
        annotations.append({"text": f"first {result.get('row_count'):,} rows only ({cap})", "showarrow": False,
                            "xref": "paper", "yref": "paper", "x": 1, "y": 1.08, "xanchor": "right",
                            "font": {"size": 11}})
    if annotations:
        layout["annotations"] = annotations
    return {"data": data, "layout": layout}


def chart_html(kpi: dict, result: dict, plotlyjs: bool | str = True) -> str:
    """HTML page with the Plotly chart of a KPI result (templates/chart.html, autoescaped).
    `plotlyjs=True` inlines plotly.js (4.5 MB); a file name such as PLOTLY_JS links it beside the
    page instead (offline all the same)."""
    # The figure as JSON in a <script>: htmlsafe_json_dumps writes <, >, & and ' as \u escapes,
    # so no value (a group named "</script>") can end the script element.
    spec = htmlsafe_json_dumps(chart_spec(kpi, result), dumps=json.dumps, default=str, allow_nan=False)
    return render(
        __package__, "chart.html",
        title=str(kpi.get("title") or kpi.get("name", "")),
        # plotly.js from the installed plotly package: trusted, inlined as it is.
        plotly_js=Markup(plotly_js()) if plotlyjs is True else None,
        plotly_src=str(plotlyjs) if plotlyjs and plotlyjs is not True else None,
        spec=spec,
    )


# ---------------------------------------------------------------- PNG charts

PNG_WIDTH, PNG_HEIGHT = 900, 500


def find_chromium(configured: str = "", browser_path: str = "") -> tuple[str | None, str | None]:
    """(path, None) for the Chromium to render PNG charts with, or (None, why not).

    The configured path (UDB_CHROMIUM_PATH) wins, then BROWSER_PATH (both from the caller's
    Settings: `chromium_path`, `browser_path`), then chromium, chromium-browser, google-chrome
    on PATH.
    """
    for candidate, source in ((configured, "UDB_CHROMIUM_PATH"), (browser_path, "BROWSER_PATH")):
        if candidate:
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate, None
            return None, f"no Chromium at {candidate} ({source})"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found, None
    return None, ("no Chromium found (install it with scripts/ensure-chromium.sh, or set UDB_CHROMIUM_PATH "
                  "or BROWSER_PATH)")

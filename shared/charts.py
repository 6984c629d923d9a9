"""KPI charts: the Plotly figure of a KPI result (analyze writes it as an HTML page, the
reports function as PNG through functions/reports/pngs.py), and where Chromium is.

Shared by both functions so the PNG shows exactly the figure of the HTML chart. Plotly is
imported where used; find_chromium needs nothing. kaleido is only in the reports function.
"""
from __future__ import annotations

import os
import shutil


PLOTLY_JS = "plotly.min.js"


def plotly_js() -> str:
    """plotly.js as shipped in the plotly package (offline), written once per job as an artifact."""
    from plotly.offline import get_plotlyjs
    return get_plotlyjs()


CHART_TYPES = ("bar", "line", "scatter", "pie", "indicator")


def chart_figure(kpi: dict, result: dict):
    """The Plotly figure of a KPI result, from its chart spec {type, x, y}.

    type is bar | line | scatter | pie | indicator; y is one column or a list of columns
    (one trace each); x is the category/time column (the labels of a pie).
    """
    import plotly.graph_objects as go

    chart = kpi.get("chart") or {}
    columns, rows = result.get("columns", []), result.get("rows", [])

    def values(name):
        if name not in columns:
            return []
        index = columns.index(name)
        return [row[index] for row in rows]

    kind = chart.get("type")
    ys_names = chart.get("y") if isinstance(chart.get("y"), list) else [chart.get("y")]
    title = kpi.get("title") or kpi.get("name", "")
    fig = go.Figure()
    if not rows:
        fig.add_annotation(text="No data", showarrow=False, font={"size": 20})
    elif kind == "indicator":
        ys = values(ys_names[0])
        value = ys[0] if ys else None
        subtitle = ""
        if chart.get("x") and values(chart["x"]):
            subtitle = f"<br><span style='font-size:0.7em'>{chart['x']}: {values(chart['x'])[0]}</span>"
        fig.add_trace(go.Indicator(
            mode="number",
            value=value if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
            title={"text": f"{title}{subtitle}"},
        ))
    elif kind == "pie":
        labels = ["(null)" if v is None else str(v) for v in values(chart.get("x"))]
        fig.add_trace(go.Pie(labels=labels, values=values(ys_names[0]), name=ys_names[0]))
    else:
        for y_name in ys_names:
            ys = values(y_name)
            if kind in ("line", "scatter"):
                mode = "lines+markers" if kind == "line" else "markers"
                fig.add_trace(go.Scatter(x=values(chart.get("x")), y=ys, mode=mode, name=y_name))
            else:
                xs = ["(null)" if v is None else str(v) for v in values(chart.get("x"))]
                fig.add_trace(go.Bar(x=xs, y=ys, name=y_name))
    if kind not in ("indicator", "pie"):
        fig.update_layout(title=title, xaxis_title=chart.get("x"), yaxis_title=", ".join(str(y) for y in ys_names))
    elif kind == "pie":
        fig.update_layout(title=title)
    if result.get("truncated"):
        fig.add_annotation(text=f"first {result.get('row_count'):,} rows only (row cap)", showarrow=False,
                           xref="paper", yref="paper", x=1, y=1.08, xanchor="right", font={"size": 11})
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 30, "t": 70, "b": 60})
    return fig


def chart_html(kpi: dict, result: dict, plotlyjs: bool | str = True) -> str:
    """HTML page with a Plotly chart of a KPI result. `plotlyjs=True` inlines plotly.js (4.5 MB);
    a file name such as PLOTLY_JS links it beside the page instead (offline all the same)."""
    fig = chart_figure(kpi, result)
    return fig.to_html(include_plotlyjs=plotlyjs, full_html=True, config={"displaylogo": False})


# ---------------------------------------------------------------- PNG charts

PNG_WIDTH, PNG_HEIGHT = 900, 500


def find_chromium(configured: str = "") -> tuple[str | None, str | None]:
    """(path, None) for the Chromium to render PNG charts with, or (None, why not).

    The configured path (UDB_CHROMIUM_PATH) wins, then BROWSER_PATH, then chromium,
    chromium-browser, google-chrome on PATH.
    """
    for candidate, source in ((configured, "UDB_CHROMIUM_PATH"), (os.environ.get("BROWSER_PATH", ""), "BROWSER_PATH")):
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

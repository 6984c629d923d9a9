"""PNG charts: the Plotly figures of a job's charts rendered by headless Chromium (kaleido).

Only the reports function imports kaleido; analyze writes the same figures as HTML
(shared/analysis/charts.py).
"""
from __future__ import annotations

import asyncio
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from shared.analysis.charts import PNG_HEIGHT, PNG_WIDTH, chart_spec

_PNG_LOCK = threading.Lock()


def chart_figure(kpi: dict, result: dict):
    """A KPI chart's figure (shared.analysis.charts.chart_spec, the one the HTML chart draws) as a
    plotly.graph_objects.Figure, for kaleido's PNG export. Here, not in shared.analysis.charts, so that
    only the reports function imports the plotly package."""
    import plotly.graph_objects as go

    return go.Figure(chart_spec(kpi, result))


async def _write_all(kaleido, jobs: list[dict], kopts: dict):
    """kaleido.write_fig_from_object, in a Kaleido whose tab is not reloaded between figures.

    kaleido 1.5 reloads its page after every figure, and so parses plotly.js (4.5 MB) again each
    time: 10 charts took 3.2 s wall and 4.9 s of CPU (Chromium's processes included), against
    1.9 s and 3.1 s without the reload, with byte-identical PNGs. kaleido's page script draws each
    figure with Plotly.toImage, which makes a temporary element and removes it, so one figure
    leaves nothing another draws on; the tab and the browser are this call's alone.
    """
    class OneTab(kaleido.Kaleido):
        async def _return_kaleido_tab(self, tab) -> None:  # kaleido's own: tab.reload(), then this
            await self.tabs_ready.put(tab)

    async with OneTab(**kopts) as session:
        return await session.write_fig_from_object(jobs)


def render_pngs(figures: list[tuple[str, Any]], chromium: str | None, *,
                timeout_s: float = 60) -> tuple[dict[str, bytes], str | None]:
    """Render (name, figure) pairs to PNG bytes in one headless Chromium session (kaleido).

    Offline: plotly.js comes from the plotly package and MathJax is off, so the page loads
    nothing from the network. Returns ({name: png bytes}, why) where `why` says why some
    or all charts were not rendered (None when every one was).
    """
    if not figures:
        return {}, None
    if not chromium:
        return {}, "no Chromium given (see find_chromium)"
    try:
        with warnings.catch_warnings():
            # kaleido 1.x warns about plotly < 6 at import; its own API works with plotly 5.
            warnings.simplefilter("ignore")
            import kaleido
    except ImportError as exc:
        return {}, f"kaleido is not installed ({exc})"
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="udb-png-") as tmp:
        jobs = [{"fig": fig, "path": str(Path(tmp) / f"{i}.png"),
                 "opts": {"format": "png", "width": PNG_WIDTH, "height": PNG_HEIGHT}}
                for i, (_, fig) in enumerate(figures)]
        try:
            # One browser session at a time per process: concurrent kaleido sessions from
            # several request threads were seen to deadlock on Chromium's pipe.
            with _PNG_LOCK:
                errors = asyncio.run(_write_all(kaleido, jobs, {"path": chromium, "mathjax": False,
                                                                "timeout": timeout_s}))
        except Exception as exc:  # a browser that does not start, crashes or hangs
            return {}, f"Chromium at {chromium} could not render charts: {type(exc).__name__}: {exc}"
        for (name, _), job in zip(figures, jobs, strict=True):
            path = Path(job["path"])
            if path.is_file() and path.stat().st_size:
                out[name] = path.read_bytes()
    missing = len(figures) - len(out)
    if missing:
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in (errors or ())[:3]) or "no image written"
        return out, f"{missing} of {len(figures)} charts could not be rendered ({detail})"
    return out, None

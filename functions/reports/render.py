"""One report, rendered in a child process: `python -m functions.reports.render SPEC.json`.

The reports function runs every engine (ydata-profiling, Evidently, kaleido's Chromium) in a
process of its own, under a deadline and a memory bound (functions/reports/bounded.py): a
report that runs too long or grows too big is killed and recorded as failed with the reason,
and the function that asked for it, its other reports and the job are unharmed.

The spec names the kind of report, the read-only copy of the warehouse, the table, the output
folder and the limits; the child writes the report's files there and a `result.json`:
{"ok": true, "artifacts": [{name, media_type, description}], "note": ..., "info": {...}} or
{"ok": false, "error": "<type>: <message>"}.

`python -m functions.reports.render --warm ENGINE` is the same child started ahead of its
report (functions/reports/bounded.py keeps them): it imports its engine (seconds: Evidently
3.7-5 s, ydata-profiling 2.4-3.5 s on this project's 2-core machine) and then waits for one line
on stdin, {"spec": path, "env": {...}}, takes the caller's environment as it is then and renders
that spec like the plain form. End of input before a line: it exits, having rendered nothing.

Settings: this module is a child process's entry point. The parent hands its own Settings down
in the environment it passes (`shared.core.settings.child_env`: every setting as its UDB_*
variable, on the stdin pipe for a warm child, never in the spec file on disk, since they hold
the S3 keys), and `main` builds them once from it; the renderers take them as an argument. So
the child masks by the parent's PII policy and opens the parent's S3, whatever the parent's
Settings were built from.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # UDB modules are imported after the caller's environment is taken
    from shared.core.settings import Settings

RESULT = "result.json"


def _fault(spec: dict, kind: str) -> None:
    """The tests' fault injection (UDB_FAULTS, as Context.fault): `reports.<kind>` kills this
    child, `reports.<kind>:raise` makes its engine raise."""
    faults = (spec.get("faults") or "").split(",")
    if f"reports.{kind}" in faults:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"reports.{kind}:raise" in faults:
        raise RuntimeError(f"fault injected at reports.{kind}")


def _sampling_note(sampling: dict) -> str:
    if sampling["sampled_rows"] < sampling["total_rows"]:
        text = f"sample of {sampling['sampled_rows']:,} of {sampling['total_rows']:,} rows"
    else:
        text = f"all {sampling['total_rows']:,} rows"
    if sampling.get("reported_columns", 0) < sampling.get("columns", 0):
        text += f", first {sampling['reported_columns']:,} of {sampling['columns']:,} columns"
    return text


def _write(out: Path, name: str, body: str | bytes) -> None:
    (out / name).write_bytes(body.encode() if isinstance(body, str) else body)


def _connect(spec: dict, settings: Settings):
    from shared.storage import duck, lake
    if spec.get("lake"):  # the tenant's lake: `warehouse` is the local copy of its catalog
        con = lake.connect(lake.store_from_spec(spec["lake"], settings), Path(spec["warehouse"]), read_only=True,
                           memory_limit=spec.get("duckdb_memory_limit", "1GB"), threads=int(spec.get("duckdb_threads", 2)))
        lake.create_reference_views(con)
        return con
    return duck.connect(spec["warehouse"], read_only=True, memory_limit=spec.get("duckdb_memory_limit", "1GB"),
                        threads=int(spec.get("duckdb_threads", 2)))


def _frame(con, spec: dict, settings: Settings):
    from functions.reports import engines
    from shared.security.pii import Policy

    frame, sampling = engines.sample_frame(con, spec["table"], int(spec["sample_rows"]),
                                           max_columns=int(spec.get("max_columns") or 0))
    return engines.prepare_frame(frame, Policy.of(settings)), sampling


def _table_frame(spec: dict, settings: Settings):
    """The table's sampled frame, from a connection opened and closed for it."""
    con = _connect(spec, settings)
    try:
        return _frame(con, spec, settings)
    finally:
        con.close()


def render_ydata(spec: dict, out: Path, settings: Settings) -> dict:
    from functions.reports import engines

    frame, sampling = _table_frame(spec, settings)
    _fault(spec, "ydata")
    table = spec["table"]
    _write(out, f"ydata-{table}.html", engines.ydata_report_html(frame, table, sampling))
    return {"artifacts": [{"name": f"ydata-{table}.html", "media_type": "text/html",
                           "description": f"ydata-profiling report of {table} ({_sampling_note(sampling)}, PII masked)"}],
            "note": engines.columns_text(sampling) or None, "info": {"sampling": sampling}}


def render_evidently_summary(spec: dict, out: Path, settings: Settings) -> dict:
    from functions.reports import engines

    frame, sampling = _table_frame(spec, settings)
    _fault(spec, "evidently-summary")
    table = spec["table"]
    html, result = engines.evidently_summary(frame)
    _write(out, f"quality-{table}.html", html)
    _write(out, f"quality-{table}.json", json.dumps(result, indent=2, default=str))
    note = _sampling_note(sampling)
    return {"artifacts": [
        {"name": f"quality-{table}.html", "media_type": "text/html",
         "description": f"Evidently data summary with tests for {table} ({note})"},
        {"name": f"quality-{table}.json", "media_type": "application/json",
         "description": f"Evidently data summary results for {table}"}],
        "note": engines.columns_text(sampling) or None, "info": {"sampling": sampling}}


class _DirCache:
    """The drift-reference cache as the child sees it: what the parent fetched from the tenant
    store (in `cache_in`), and a folder for a new entry the parent then uploads."""

    def __init__(self, entries: dict[str, str], out: Path):
        self.entries, self.out = entries, out

    def get(self, key: str):
        from shared.storage.store import Blob

        if key not in self.entries:
            raise KeyError(key)
        return Blob(Path(self.entries[key]).read_bytes(), "")

    def put(self, key: str, data: bytes, **kw) -> str:
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = self.out / "keys.json"
        keys = json.loads(manifest.read_text()) if manifest.is_file() else []
        (self.out / f"{len(keys)}.bin").write_bytes(data)
        manifest.write_text(json.dumps(keys + [key]))
        return ""

    def list(self, prefix: str):
        return iter(())

    def delete(self, key: str, **kw) -> None:
        pass


def render_evidently_drift(spec: dict, out: Path, settings: Settings) -> dict:
    from functions.reports import engines
    from shared.security.pii import Policy

    table = spec["table"]
    con = _connect(spec, settings)
    try:
        frame, sampling = _frame(con, spec, settings)
        cache = _DirCache(spec.get("cache_in") or {}, out / "cache") if spec.get("drift_cache") else None
        reference, ref_info = engines.reference_frame(
            con, ("udb_snapshots", table), int(spec["sample_rows"]), cache, cache_name=table,
            max_columns=int(spec.get("max_columns") or 0), policy=Policy.of(settings))
    finally:
        con.close()
    _fault(spec, "evidently-drift")
    started = time.perf_counter()
    html, result = engines.evidently_drift(frame, reference)
    verdict = engines.drift_verdict(result)
    verdict["reference"] = {"snapshot": f"udb_snapshots.{table}", "cache": ref_info["cache"],
                            "cache_key": ref_info["key"], "sampling": ref_info["sampling"],
                            "reference_seconds": ref_info["seconds"],
                            "drift_seconds": round(time.perf_counter() - started, 3)}
    _write(out, f"evidently-drift-{table}.html", html)
    _write(out, f"evidently-drift-{table}.json", json.dumps({"verdict": verdict, "result": result}, indent=2,
                                                            default=str))
    return {"artifacts": [
        {"name": f"evidently-drift-{table}.html", "media_type": "text/html",
         "description": f"Evidently drift of {table} against its previous snapshot ({_sampling_note(sampling)})"},
        {"name": f"evidently-drift-{table}.json", "media_type": "application/json",
         "description": f"Evidently drift verdict per column and for {table} (reference cache {ref_info['cache']})"}],
        "note": engines.columns_text(sampling) or None,
        "info": {"sampling": sampling, "cache": ref_info["cache"], "drifted_columns": verdict["drifted_columns"]}}


def render_png_charts(spec: dict, out: Path, settings: Settings) -> dict:
    from functions.reports.pngs import chart_figure, render_pngs
    from shared.analysis import charts

    _fault(spec, "png-charts")
    chromium, why = charts.find_chromium(spec.get("chromium_path") or settings.chromium_path, settings.browser_path)
    figures = [(c["base"], chart_figure(c["item"], c["item"]["result"])) for c in spec["charts"]]
    rendered: dict[str, bytes] = {}
    if chromium:
        rendered, why = render_pngs(figures, chromium, timeout_s=float(spec.get("deadline") or 60))
    artifacts = []
    for chart in spec["charts"]:
        png = rendered.get(chart["base"])
        if png:
            _write(out, f"{chart['base']}.png", png)
            artifacts.append({"name": f"{chart['base']}.png", "media_type": "image/png", "table": chart["table"],
                              "description": f"Chart (PNG): {chart['item']['title']}"})
    if not artifacts:
        raise RuntimeError(why or "no chart was rendered")
    note = f"{len(artifacts)} of {len(figures)} charts rendered; {why}" if why else None
    return {"artifacts": artifacts, "note": note, "info": {"rendered": len(artifacts), "charts": len(figures)}}


RENDERERS = {"ydata": render_ydata, "evidently-summary": render_evidently_summary,
             "evidently-drift": render_evidently_drift, "png-charts": render_png_charts}
# The third-party modules each kind of report imports (what a warm child imports ahead). No UDB
# module: those are imported after the caller's environment is taken (a few milliseconds).
ENGINE_OF = {"ydata": "ydata", "evidently-summary": "evidently", "evidently-drift": "evidently",
             "png-charts": "png"}
ENGINE_MODULES = {
    "ydata": ("pandas", "matplotlib.pyplot", "ydata_profiling", "ydata_profiling.model.pandas.summary_pandas"),
    "evidently": ("pandas", "evidently", "evidently.presets"),
    "png": ("plotly.graph_objects", "kaleido"),
}


def warm(engine: str, nice: int = 0) -> int:
    """Import `engine`'s modules, then render the one spec that arrives on stdin (if any)."""
    import importlib
    import warnings

    if nice:
        os.nice(nice)
    os.environ["YDATA_PROFILING_NO_ANALYTICS"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ENGINE_MODULES[engine]:
            try:
                importlib.import_module(name)
            except Exception:  # warming is best effort: the report that needs it fails with the reason
                pass
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    os.environ.clear()
    os.environ.update(order["env"])
    return main([order["spec"]])


def main(argv: list[str]) -> int:
    from shared.core.settings import Settings

    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    # Before any engine import: no usage pings, headless matplotlib.
    os.environ["YDATA_PROFILING_NO_ANALYTICS"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        settings = Settings.from_env()  # once: the parent's, handed down in this process's environment
        result = {"ok": True, **RENDERERS[spec["kind"]](spec, out, settings)}
        code = 0
    except Exception as exc:  # the reason goes to the index; the parent logs the traceback
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        code = 1
    (out / RESULT).write_text(json.dumps(result, default=str))
    return code


if __name__ == "__main__":
    if sys.argv[1:2] == ["--warm"]:
        code = warm(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    else:
        code = main(sys.argv[1:])
    # The report and result.json are written and closed: leave without the interpreter's
    # teardown of the thousands of modules an engine imported. It took 0.5-0.8 s after the
    # result was on disk (Evidently's child the longest), and the parent waits for the exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""Helpers of the observability tests: a stack whose functions write spans to files, scraping
`/metrics`, reading spans and logs, and the metrics contract as docs/metrics.md states it."""
from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack import services, stack
from shared.observability import telemetry

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = ("discover", "sync", "writer", "analyze", "artifacts", "reports")
TRACES = services.CACHE / "traces"
LINEAGE = services.CACHE / "lineage"
LOGS = services.LOG_DIR


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def ensure_traced_functions() -> list[str]:
    """Restart the function processes that do not write spans to .cache/traces/<function>.jsonl
    and lineage to .cache/lineage/<function>.jsonl (started before stack.function_env set
    them); returns the restarted ones."""
    restarted = []
    for name in FUNCTIONS:
        pid = stack._running(name)
        env = _environ(pid) if pid else {}
        if (env.get("UDB_OTEL_EXPORTER") != "file" or env.get("UDB_OTEL_FILE") != str(TRACES / f"{name}.jsonl")
                or env.get("UDB_LINEAGE") != "file"):
            stack.stop(name)
            # Files even when the caller's environment says otherwise (UDB_OTEL_EXPORTER=otlp).
            stack.start_function(name, extra_env={"UDB_OTEL_EXPORTER": "file", "UDB_LINEAGE": "file"})
            restarted.append(name)
    return restarted


def scrape(function: str) -> dict:
    """The function's /metrics as {family name: Metric} (prometheus_client's parser)."""
    response = httpx.get(stack.function_url(function) + "/metrics", timeout=30,
                         headers={"Authorization": f"Bearer {stack.broker_token()}"})  # metrics need a token
    assert response.status_code == 200, response.text
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample(families: dict, name: str, labels: dict | None = None) -> float | None:
    """The value of the sample called `name` (e.g. `udb_rows_synced_total`,
    `udb_kpi_duration_seconds_count`) whose labels include `labels`; None when there is none."""
    labels = labels or {}
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def family_of(families: dict, name: str):
    """The family of a contract metric name (the parser drops a counter's `_total`)."""
    return families.get(name) or families.get(re.sub(r"_total$", "", name))


def label_sets(families: dict, name: str) -> set[frozenset]:
    """The label names of every sample of a family (without histogram `le`)."""
    family = family_of(families, name)
    if family is None:
        return set()
    return {frozenset(k for k in s.labels if k != "le") for s in family.samples}


def contract() -> list[dict]:
    """The metrics contract: every row of the table in docs/metrics.md."""
    text = (REPO / "docs" / "metrics.md").read_text()
    table = text.split("## The contract", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[0].startswith("`udb_"):
            continue
        rows.append({"name": cells[0].strip("`"), "type": cells[1],
                     "labels": set(re.findall(r"`([a-z_]+)`", cells[2])),
                     "functions": [f.strip("` ") for f in cells[3].split(",")], "meaning": cells[4]})
    return rows


def wait_for_spans(trace_id: str, until, timeout: float = 30) -> dict[str, list[dict]]:
    """{function: spans of `trace_id`} from every function's span file, once `until(spans)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        spans = {name: [s for s in telemetry.read_spans(TRACES / f"{name}.jsonl") if s["trace_id"] == trace_id]
                 for name in FUNCTIONS}
        if until(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def log_offsets() -> dict[Path, int]:
    """The size of every function and broker log now: what a test wrote is what follows."""
    return {path: path.stat().st_size for path in LOGS.glob("fn-*.log")}


def logs_since(offsets: dict[Path, int]) -> dict[str, str]:
    """{log file name: text written since `offsets`} for every fn-*.log."""
    out = {}
    for path in LOGS.glob("fn-*.log"):
        with open(path, "rb") as fh:
            fh.seek(offsets.get(path, 0))
            out[path.name] = fh.read().decode("utf-8", "replace")
    return out

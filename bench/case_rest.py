"""REST API -> warehouse: `udb run --no-analyze` on the first page's URL vs dlt's rest_api
source, both paging through the same local server (bench/rest_server.py, its own process)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import common

CASE = "rest"
TITLE = "REST API -> warehouse (UDB vs dlt rest_api)"
TOOLS = ["udb", "dlt"]
PER_PAGE = 100
_servers: dict[int, subprocess.Popen] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(data: Path, quick: bool) -> dict:
    rows = common.QUICK_ROWS if quick else 200_000
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.rest_server", "--port", str(port), "--total", str(rows),
                               "--per-page", str(PER_PAGE)], cwd=common.REPO, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith("listening"):
        server.kill()
        raise SystemExit(f"the REST server did not start: {line!r}")
    _servers[port] = server
    return {"rows": rows, "port": port, "url": f"http://127.0.0.1:{port}",
            # The server is on loopback, which UDB's SSRF guard refuses unless allowed.
            "env": {"UDB_NET_ALLOWLIST": "127.0.0.0/8"},
            "described": f"{rows:,} records over {-(-rows // PER_PAGE):,} pages of {PER_PAGE} at 127.0.0.1:{port}"}


def finish(params: dict) -> None:
    server = _servers.pop(params["port"], None)
    if server is not None:
        server.terminate()
        server.wait(timeout=10)


def run(tool: str, params: dict, run_dir: Path) -> dict:
    if tool == "udb":
        return common.udb_load(f"{params['url']}/page/items?per_page={PER_PAGE}", run_dir)
    started = time.perf_counter()
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source({
        "client": {"base_url": params["url"] + "/"},
        "resources": [{"name": "items", "write_disposition": "replace", "endpoint": {
            "path": "page/items", "params": {"per_page": PER_PAGE}, "data_selector": "records",
            "paginator": {"type": "page_number", "base_page": 1, "page_param": "page", "total_path": None,
                          "stop_after_empty_page": True}}}],
    })
    common.dlt_pipeline(run_dir).run(source)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": common.dlt_rows(run_dir, "items")}

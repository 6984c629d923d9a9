"""Stored script injection in reports (outside probe, finding 4): a CSV whose column names and
cells are script and markup goes through the whole pipeline (embedded), then every HTML
artifact of the job is opened in headless Chromium through the REAL artifacts function
(functions-framework in its own process on 127.0.0.1). A listener on another loopback port
counts every request the payloads would make: none may arrive, no title may change, and each
page must still show what it is for.

Chromium is driven over the DevTools protocol (a WebSocket on loopback) rather than
`--dump-dom`, because the artifacts API needs the tenant header on every request, page and
sub-resource alike (Network.setExtraHTTPHeaders)."""
from __future__ import annotations

import csv
import html
import html.parser
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from functions.artifacts.handler import CHART_CSP, SANDBOX_CSP
from shared.core import events
from shared.serving.embedded import Dispatcher
from shared.core.settings import Settings
from shared.core.tenancy import new_job_id
from tests.conftest import REPO
from tests.security.artifacts_process import artifacts_process

pytestmark = pytest.mark.security
TENANT = "acme"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Listener:
    """A loopback HTTP server that records every request: where the payloads phone home."""

    def __init__(self):
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def _hit(self):
                hits.append(f"{self.command} {self.path}")
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            do_GET = do_POST = do_OPTIONS = _hit

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def hostile_csv(path: Path, port: int) -> dict[str, str]:
    """A CSV whose header and cells are payloads; returns them by name."""
    home = f"http://127.0.0.1:{port}"
    payloads = {
        "script_name": "<script>document.title='pwned'</script>",
        "img_name": f"<img src=x onerror=\"fetch('{home}/hit-name')\">",
        # Categories stay short (mean under 40 characters): the column is then categorical and
        # its values become KPI groups, chart labels and summary sentences.
        "close_script": f"</script><script>fetch('//127.0.0.1:{port}/c')</script>",
        "img_title": "<img src=x onerror=document.title=1>",
        "italic": "<i>x</i>",
        "img_onerror": f"<img src=x onerror=\"fetch('{home}/hit-img');document.title='pwned'\">",
        "svg_onload": f"\"><svg onload=\"fetch('{home}/hit-svg')\">",
        "plain_img": f"<img src=\"{home}/hit-plain\">",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", payloads["script_name"], payloads["img_name"], "note", "amount", "day"])
        categories = [payloads["close_script"], payloads["img_title"], payloads["italic"]]
        notes = [payloads["plain_img"], payloads["close_script"], payloads["img_onerror"], "an ordinary note"]
        for i in range(60):
            out.writerow([i, categories[i % 3], f"{payloads['svg_onload']} {i % 4}", notes[i % 4],
                          (i % 7) * 2.5 + i % 3, f"2024-01-{1 + i % 28:02d}"])
    return payloads


def run_job(settings: Settings, hint: str) -> dict:
    dispatcher = Dispatcher(settings)
    job_id = new_job_id()
    dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=TENANT, job_id=job_id,
                                         function="test"))
    return dispatcher.context("cli").jobs(TENANT).get(job_id)


class Chromium:
    """Headless Chromium over the DevTools protocol: one tab, extra request headers, the DOM."""

    def __init__(self, profile: Path):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            url = found.group(1) if found else url
        assert url, "Chromium did not start its DevTools endpoint"
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # drain
        self.ws = connect(url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Network.enable", "DOM.enable"):
            self.call(method, session=True)

    def call(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 60) -> dict:
        message = {"id": next(self.ids), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == message["id"]:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def open(self, url: str, headers: dict, settle: float = 2.0) -> str:
        """Load `url` with `headers` on every request, wait for its load event and `settle`
        seconds more (for any timer or fetch a payload would start), and return the DOM."""
        self.call("Network.setExtraHTTPHeaders", {"headers": headers}, session=True)
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, f"{url} did not load"
            try:
                self.events.append(json.loads(self.ws.recv(timeout=1)))
            except TimeoutError:
                pass
        end = time.monotonic() + settle
        while time.monotonic() < end:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=max(0.05, end - time.monotonic()))))
            except TimeoutError:
                pass
        root = self.call("DOM.getDocument", {"depth": -1}, session=True)["root"]
        return self.call("DOM.getOuterHTML", {"nodeId": root["nodeId"]}, session=True)["outerHTML"]

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class _Title(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.inside, self.title = False, None

    def handle_starttag(self, tag, attrs):
        if tag == "title" and self.title is None:
            self.inside, self.title = True, ""

    def handle_endtag(self, tag):
        if tag == "title":
            self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.title += data


def title_of(page: str) -> str:
    parser = _Title()
    parser.feed(page)
    return (parser.title or "").strip()


# What shows that each kind of page still did its job, read from the DOM Chromium built.
def expected_text(name: str, job_id: str) -> str:
    if name == "index.html":
        return f"Analysis {job_id}"
    if name.startswith("profile-"):
        return "Full-table statistics computed in DuckDB"
    if name.startswith("ydata-"):
        return "Overview"
    if name.startswith(("quality-", "drift-")):
        return "drawDashboard"  # Evidently's page is a script app: its data and loader are there, not run
    if name.startswith("chart-"):
        return "main-svg"  # Plotly drew the chart: scripts from this server do run in charts
    return ""


@pytest.fixture(scope="module")
def hostile_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inject")
    listener = Listener()
    settings = Settings.from_env(env={}, home=tmp / "udb", eventing_dir=REPO / "eventing", chart_png=False,
                                 log_level="WARNING")
    payloads = hostile_csv(tmp / "hostile" / "reviews.csv", listener.port)
    first = run_job(settings, str(tmp / "hostile" / "reviews.csv"))
    second = run_job(settings, str(tmp / "hostile" / "reviews.csv"))  # a drift reference: Evidently drift too
    assert first["state"] == "completed" and second["state"] == "completed", (first.get("error"), second.get("error"))
    assert listener.hits == []  # nothing called home while the reports were made
    yield settings, second["job_id"], payloads, listener
    listener.close()


@pytest.fixture(scope="module")
def artifacts_server(hostile_job, tmp_path_factory):
    """The artifacts function as deployed: functions-framework in its own process."""
    with artifacts_process(hostile_job[0].home, tmp_path_factory.mktemp("ff") / "artifacts.log") as base:
        yield base


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (scripts/ensure-chromium.sh installs Debian's)")
def test_no_injected_script_runs_in_any_report_opened_in_chromium(hostile_job, artifacts_server):
    settings, job_id, payloads, listener = hostile_job
    headers = {"X-UDB-Tenant": TENANT}
    index = httpx.get(f"{artifacts_server}/artifact/{job_id}/", headers=headers, timeout=30).json()
    pages = [a["name"] for a in index["artifacts"] if a["media_type"] == "text/html"]
    kinds = {re.sub(r"-.*", "", p) for p in pages}
    # evidently-drift-*: the reports function's drift page
    assert {"index.html", "profile", "ydata", "quality", "evidently", "chart"} <= kinds, pages

    # The payloads reached the engines' pages as data (the test attacks what it means to).
    ydata = httpx.get(f"{artifacts_server}/artifact/{job_id}/{next(p for p in pages if p.startswith('ydata-'))}",
                      headers=headers, timeout=30)
    assert "document.title" in ydata.text

    with tempfile.TemporaryDirectory(prefix="udb-chromium-") as profile:
        browser = Chromium(Path(profile))
        try:
            for name in pages:
                url = f"{artifacts_server}/artifact/{job_id}/{name}"
                served = httpx.get(url, headers=headers, timeout=30)
                # Every artifact: nosniff; HTML in a sandbox (charts may run this server's scripts).
                assert served.headers["X-Content-Type-Options"] == "nosniff"
                assert served.headers["Content-Security-Policy"] == (CHART_CSP if name.startswith("chart-")
                                                                     else SANDBOX_CSP), name
                dom = browser.open(url, headers)
                assert listener.hits == [], f"{name}: an injected payload called home: {listener.hits}"
                assert title_of(dom) == title_of(served.text) and title_of(dom) not in ("pwned", "1"), name
                assert expected_text(name, job_id) in dom, f"{name} did not render: {dom[:400]}"
        finally:
            browser.close()
    # Non-HTML artifacts carry the same headers: a JSON or Markdown file is never read as a page.
    summary = httpx.get(f"{artifacts_server}/artifact/{job_id}/summary.md", headers=headers, timeout=30)
    assert summary.headers["X-Content-Type-Options"] == "nosniff"
    assert summary.headers["Content-Security-Policy"] == SANDBOX_CSP


def test_summary_markdown_shows_payloads_as_text_in_a_markdown_renderer(hostile_job):
    """summary.md rendered by a CommonMark renderer that passes raw HTML through (markdown-it's
    default "commonmark" preset has html on): the payloads come out as text, never as tags."""
    from markdown_it import MarkdownIt

    from shared.storage.backends import open_store

    from shared.storage.store import TenantStore

    settings, job_id, payloads, _ = hostile_job
    store = TenantStore(open_store(settings), TENANT)
    text = store.get(store.artifact_key(job_id, "summary.md")).data.decode()
    rendered = MarkdownIt("commonmark").render(text)
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", rendered))
    assert tags <= {"h1", "h2", "ul", "li", "code", "p"}, tags
    # ... and the hostile names and values are there, as the text a reader sees.
    shown = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    for payload in ("script_name", "italic"):  # the grouping column, and the top group
        assert payloads[payload] in shown, payload

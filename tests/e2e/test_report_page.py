"""The report page of a job, opened in a real headless Chromium.

Two loads of a small slice of the demo's sales (so the second job has drift too). The second
job's index.html is opened over the Chrome DevTools Protocol (choreographer, the client kaleido
uses) twice: as soon as analyze completes the job, when it lists the heavy reports as pending
and reloads itself, and once the reports function has rendered them, when it links them. Then
the page loads, every link and image on it resolves to an artifact of the job, no console error
or uncaught exception is logged, and one page of every kind of artifact it links opens cleanly
as well. A screenshot of the page is kept under .udb/screenshots/ (and the test's tmp dir).
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from samples.make_demo import make
from frontends import cli
from shared.core import events
from shared.analysis.charts import find_chromium
from shared.serving.embedded import Dispatcher
from shared.core.settings import Settings
from shared.core.tenancy import new_job_id

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
KEPT_SCREENSHOT = REPO / ".udb" / "screenshots" / "report-page.png"
PROBE = """JSON.stringify({
  title: document.title,
  links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
  text: document.body ? document.body.innerText.length : 0,
  refresh: !!document.querySelector('meta[http-equiv="refresh"]'),
  reports: [...document.querySelectorAll('#reports tr[id]')].map(r => ({
    id: r.id, state: r.querySelector('.state').innerText,
    links: [...r.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))}))
})"""


async def open_pages(chromium: str, urls: list[str], screenshot: Path) -> dict[str, dict]:
    """Load each URL in one tab; per URL: the probe's findings and every console error,
    uncaught exception and error log entry (failed loads included) seen meanwhile."""
    import choreographer

    results: dict[str, dict] = {}
    async with choreographer.Browser(path=chromium, headless=True) as browser:
        tab = await browser.create_tab("", width=1280, height=1000, window=True)
        problems: list[str] = []

        async def on_console(message):
            params = message["params"]
            if params.get("type") in ("error", "assert"):
                problems.append(f"console.{params['type']}: {[a.get('value', a.get('description')) for a in params.get('args', [])]}")

        async def on_exception(message):
            details = message["params"]["exceptionDetails"]
            problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")

        async def on_log(message):
            entry = message["params"]["entry"]
            if entry.get("level") == "error":
                problems.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")

        tab.subscribe("Runtime.consoleAPICalled", on_console)
        tab.subscribe("Runtime.exceptionThrown", on_exception)
        tab.subscribe("Log.entryAdded", on_log)
        for command in ("Page.enable", "Runtime.enable", "Log.enable"):
            await tab.send_command(command)
        for i, url in enumerate(urls):
            problems.clear()
            loaded = tab.subscribe_once("Page.loadEventFired")
            await tab.send_command("Page.navigate", params={"url": url})
            await asyncio.wait_for(loaded, 60)
            await asyncio.sleep(0.3)  # let scripts that run on load (charts) finish and report
            probe = await tab.send_command("Runtime.evaluate", params={"expression": PROBE, "returnByValue": True})
            results[url] = {**json.loads(probe["result"]["result"]["value"]), "problems": list(problems)}
            if i == 0:
                shot = await tab.send_command("Page.captureScreenshot", params={"format": "png"})
                screenshot.write_bytes(base64.b64decode(shot["result"]["data"]))
    return results


def test_report_page_opens_cleanly_in_chromium(tmp_path, monkeypatch, capsys):
    chromium, why = find_chromium()
    assert chromium, f"the report page test needs Chromium: {why}"
    monkeypatch.setenv("UDB_HOME", str(tmp_path / "udb"))
    monkeypatch.setenv("UDB_REPORT_SAMPLE_ROWS", "1000")
    demo = make(tmp_path / "demo", rows=2_000, customers=100) / "sales.csv"
    assert cli.main(["run", str(demo), "--tenant", "report"]) == 0
    capsys.readouterr()
    # The second load (it has a snapshot to compare with: drift pages too) through the dispatcher
    # `udb run` uses, looking at the page in the moment between analyze and the reports function.
    job_id = new_job_id()
    base = tmp_path / "udb" / "store" / "udb" / "tenants" / "report" / "artifacts" / job_id
    pending: dict = {}

    def on_event(event):
        if event["type"] == events.ANALYSIS_COMPLETED:
            pending.update(asyncio.run(open_pages(chromium, [(base / "index.html").as_uri()],
                                                  tmp_path / "pending.png"))[(base / "index.html").as_uri()])

    dispatcher = Dispatcher(Settings.from_env(), on_event=on_event)
    dispatcher.context("cli").jobs("report").create(job_id, hint=str(demo))
    dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, {"hint": str(demo)}, tenant="report",
                                         job_id=job_id, function="test"))
    index = json.loads((base / "index.json").read_text())
    table = index["tables"][0]
    planned = [f"report-ydata:{table}", f"report-evidently-summary:{table}", f"report-evidently-drift:{table}",
               "report-png-charts"]
    assert pending["problems"] == [] and pending["refresh"] is True  # it reloads itself while pending
    assert [(r["id"], r["state"], r["links"]) for r in pending["reports"]] == [(i, "pending", []) for i in planned]
    assert not [src for src in pending["images"]]  # no PNG yet

    names = {a["name"] for a in index["artifacts"]}
    assert "index.html" in names and any(n.startswith("evidently-drift-") for n in names)

    # One page of each kind the index links, besides the index itself.
    kinds = ("profile-", "ydata-", "quality-", "evidently-drift-", "chart-")
    samples = [next(n for n in sorted(names) if n.startswith(k) and n.endswith(".html")) for k in kinds]
    screenshot = tmp_path / "report-page.png"
    urls = [(base / "index.html").as_uri()] + [(base / n).as_uri() for n in samples]
    results = asyncio.run(open_pages(chromium, urls, screenshot))

    page = results[urls[0]]
    assert page["title"] == f"UDB analysis {job_id}"
    assert page["problems"] == []
    assert page["refresh"] is False and [(r["id"], r["state"]) for r in page["reports"]] == [
        (i, "ready") for i in planned]
    rendered = {r["id"]: r["links"] for r in page["reports"]}
    assert rendered[f"report-ydata:{table}"] == [f"ydata-{table}.html"]
    assert rendered[f"report-evidently-drift:{table}"] == [f"evidently-drift-{table}.html",
                                                           f"evidently-drift-{table}.json"]
    assert len(rendered["report-png-charts"]) == len([n for n in names if n.endswith(".png")]) > 0
    targets = {unquote(urlparse(href).path) for href in page["links"]}
    assert targets >= (names - {"index.html"}) | {"index.json"}  # every artifact has its line
    for href in page["links"] + [i["src"] for i in page["images"]]:
        assert (base / unquote(urlparse(href).path)).is_file(), f"broken link {href}"
    assert page["images"] and all(i["ok"] for i in page["images"]), page["images"]  # the PNG charts
    for url in urls[1:]:
        assert results[url]["problems"] == [], (url, results[url]["problems"])
        assert results[url]["text"] > 0, url  # something rendered

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    KEPT_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, KEPT_SCREENSHOT)

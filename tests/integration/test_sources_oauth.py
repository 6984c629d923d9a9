"""OneDrive, SharePoint and Google Drive links with OAuth, end to end, against three real HTTP
test peers on free ports: a local OAuth 2.0 authorization server built with authlib
(tests/peers/oauth_server.py: authorization code + PKCE S256, refresh_token, device code), a
Microsoft Graph peer (tests/peers/msgraph_api.py: /shares/{id}/driveItem, children, content)
and a Drive v3 peer (tests/peers/gdrive_api.py: files get/list/export, alt=media). The API
peers accept only bearer tokens the authorization server issued and that have not expired.

The pipeline runs in embedded mode (shared/serving/embedded.py, as `udb run` does); the artifacts
function (its FunctionApp and routes) is served over real HTTP by werkzeug in a thread, so a
"browser" (httpx following redirects) goes from the oauthUrl discover answered to the
authorization server and back to `GET /oauth/callback`. The callback stores the tokens and
re-emits the waiting job's discover request (in-process here; to the broker at K_SINK when
there is one, checked too), so the same job goes on to a loaded warehouse.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import duckdb
import flask
import httpx
import pytest
from werkzeug.serving import make_server

from functions.artifacts.routes import ROUTES as ARTIFACT_ROUTES
from functions.discover.handler import ROUTES as DISCOVER_ROUTES
from functions.discover.handler import discover
from shared.core import events
from shared.observability import logs
from shared.sources import oauth
from shared.serving import runtime
from shared.serving.embedded import Dispatcher
from shared.serving.httpfn import FunctionApp
from shared.security.secrets import LocalSecretStore
from shared.core.settings import Settings
from tests.conftest import LOOPBACK
from shared.core.tenancy import new_job_id
from tests.conftest import REPO, write_sales
from tests.peers.gdrive_api import DrivePeer
from tests.peers.msgraph_api import GraphPeer
from tests.peers.oauth_server import GOOGLE_CLIENT, GOOGLE_SECRET, MS_CLIENT, OAuthPeer, QuietHandler
from shared.storage import lake

pytestmark = pytest.mark.integration

TENANT = "acme"
ONEDRIVE_CSV = "https://1drv.ms/u/s!AkTestSales0001?e=Qx7Yz"
SHAREPOINT_FOLDER = "https://contoso.sharepoint.com/:f:/s/team/EaBcDeFgHiJ?e=r4nd0m"
SALES_COLUMNS = {"order_id": "BIGINT", "region": "VARCHAR", "ordered_at": "TIMESTAMP", "amount": "DOUBLE",
                 "discount": "DOUBLE"}


def _parquet(path: Path, sql: str) -> bytes:
    duckdb.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    return path.read_bytes()


def _csv(path: Path, sql: str) -> bytes:
    duckdb.execute(f"COPY ({sql}) TO '{path}' (HEADER)")
    return path.read_bytes()


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Quarterly plan", level=1)
    document.add_paragraph("Grow the northern region.")
    document.add_heading("Risks", level=1)
    document.add_paragraph("Suppliers may be late.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    """The three peers, running, with known content:
    OneDrive: sales.csv (1,500 rows) shared as ONEDRIVE_CSV.
    SharePoint: folder "Team Reports" shared as SHAREPOINT_FOLDER, holding orders.csv (800 rows),
    items.parquet (500 rows), notes.bin (skipped) and a sub-folder (not walked); children come
    one a page, so paging through @odata.nextLink is exercised.
    Drive: customers.csv (1,200 rows), the Google Sheet "Budget 2025" (12 rows as CSV), the
    Google Doc "Plan" (DOCX export), and a folder holding a CSV and a Sheet."""
    data = tmp_path_factory.mktemp("oauth-data")
    with OAuthPeer() as auth, GraphPeer(auth) as graph, DrivePeer(auth) as drive:
        graph.share(ONEDRIVE_CSV, graph.add_file("sales.csv", write_sales(data / "sales.csv", 1500).read_bytes(),
                                                 "text/csv"))
        folder = graph.add_folder("Team Reports")
        graph.add_file("orders.csv", _csv(data / "orders.csv", "SELECT i AS order_id, 'c' || (i % 9) AS customer, "
                                          "DATE '2025-01-01' + CAST(i % 90 AS INTEGER) AS placed_on, i * 1.5 AS total "
                                          "FROM range(800) t(i)"), "text/csv", folder)
        graph.add_file("items.parquet", _parquet(data / "items.parquet", "SELECT i AS item_id, 'item ' || i AS label, "
                                                 "(i % 2 = 0) AS in_stock FROM range(500) t(i)"),
                       "application/octet-stream", folder)
        graph.add_file("notes.bin", b"\x00\x01\x02", "application/octet-stream", folder)
        graph.add_folder("archive", folder)
        graph.share(SHAREPOINT_FOLDER, folder)
        customers = drive.add_file("customers.csv", _csv(data / "customers.csv", "SELECT i AS customer_id, "
                                   "'name ' || i AS name, i % 3 = 0 AS vip, TIMESTAMP '2024-06-01' + to_days(i % 200) "
                                   "AS since FROM range(1200) t(i)"), "text/csv")
        budget = drive.add_sheet("Budget 2025", b"month,planned,actual\n" + b"".join(
            f"2025-{m:02d},{m * 1000},{m * 990.5}\n".encode() for m in range(1, 13)))
        plan = drive.add_doc("Plan", _docx(), b"Quarterly plan\nGrow the northern region.\n")
        shelf = drive.add_folder("Shelf")
        drive.add_file("stock.csv", _csv(data / "stock.csv", "SELECT i AS sku, i * 2 AS qty FROM range(40) t(i)"),
                       "text/csv", shelf)
        drive.add_sheet("Prices", b"sku,price\n" + b"".join(f"{i},{i}.25\n".encode() for i in range(30)), shelf)
        drive.add_file("photo.jpg", b"\xff\xd8\xff", "image/jpeg", shelf)
        yield SimpleNamespace(auth=auth, graph=graph, drive=drive, customers=customers, budget=budget, plan=plan,
                              shelf=shelf)


class Udb:
    """One embedded UDB home: the settings pointing at the peers, the dispatcher (as `udb run`),
    the artifacts function served over HTTP (werkzeug, a thread), and a browser."""

    def __init__(self, peers, home: Path, **overrides):
        self.peers = peers
        web = flask.Flask("artifacts-under-test")
        self.holder: dict = {}

        @web.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE"])
        @web.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
        def serve(path):
            return self.holder["app"](flask.request)

        self.server = make_server("127.0.0.1", 0, web, threaded=True, request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        redirect = f"{self.url}/oauth/callback"
        peers.auth.allow_redirect(redirect)
        auth = peers.auth.url
        values = dict(home=home, eventing_dir=REPO / "eventing", log_level="WARNING", oauth_redirect_url=redirect,
                      ms_authority=f"{auth}/ms", ms_client_id=MS_CLIENT, graph_url=peers.graph.api,
                      google_auth_url=f"{auth}/google/auth", google_token_url=f"{auth}/google/token",
                      google_device_url=f"{auth}/google/device/code", google_client_id=GOOGLE_CLIENT,
                      google_client_secret=GOOGLE_SECRET, gdrive_url=peers.drive.api,
                      net_allowlist=LOOPBACK)  # the identity and API peers are on loopback
        values.update(overrides)
        self.settings = Settings.from_env(env={}, **values)
        self.seen: list = []
        self.dispatcher = Dispatcher(self.settings, on_event=self.seen.append)
        self.ctx = runtime.start("artifacts", self.settings)
        self.ctx.dispatcher = self.dispatcher  # resumed jobs run here, their events seen
        self.holder["app"] = FunctionApp("artifacts", routes=ARTIFACT_ROUTES).use(self.ctx)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.browser = httpx.Client(follow_redirects=True, timeout=60)
        self.client = httpx.Client(base_url=self.url, timeout=60, headers={"X-UDB-Tenant": TENANT})

    def close(self):
        self.browser.close()
        self.client.close()
        self.server.shutdown()
        self.server.server_close()

    @property
    def secrets(self) -> LocalSecretStore:
        return LocalSecretStore(Path(self.settings.home) / "secrets", self.settings.secret_key)

    def run(self, hint: str, **data) -> str:
        job = new_job_id()
        request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autoanalyze": False, **data},
                                    tenant=TENANT, job_id=job, function="test")
        self.dispatcher.publish(request)
        return job

    def job(self, job_id: str) -> dict:
        return self.ctx.jobs(TENANT).get(job_id)

    def authorize(self, job_id: str) -> httpx.Response:
        """Follow the job's oauthUrl as a browser would: the authorization server, then its
        redirect to the artifacts function's /oauth/callback."""
        doc = self.job(job_id)
        assert doc["state"] == "discovering" and doc["error"]["waiting"] == "authorization", doc
        return self.browser.get(doc["error"]["oauthUrl"])

    def warehouse(self, tmp: Path) -> duckdb.DuckDBPyConnection:
        return lake.open_reader(self.ctx.tenant_store(TENANT), tmp)


@pytest.fixture
def udb(peers, tmp_path):
    peers.auth.access_ttl, peers.auth.consent = 3600, "approve"
    instance = Udb(peers, tmp_path / "udb")
    yield instance
    instance.close()


def types_of(con, table: str) -> dict:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}


# ================================================================ authorization code + PKCE, then the pipeline

def test_onedrive_csv_waits_for_oauth_then_the_callback_resumes_the_job(udb, peers, tmp_path):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    # UDB's logs and every library's it uses; not the authorization server's own (authlib, the
    # peer, logs the tokens it issues at DEBUG).
    handler.addFilter(lambda record: not record.name.startswith(("authlib", "werkzeug")))
    loggers = [logging.getLogger("udb"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        code_grants = peers.auth.grants["authorization_code"]
        job = udb.run(ONEDRIVE_CSV)
        # No token yet: nothing follows discover, and the job document says why and where to go.
        assert [e["type"] for e in udb.seen] == [events.DISCOVER_REQUESTED]
        doc = udb.job(job)
        assert doc["state"] == "discovering"
        wait = doc["error"]
        assert wait["waiting"] == "authorization" and wait["provider"] == "onedrive"
        assert wait["reason"].startswith("waiting for authorization: onedrive links need Microsoft")
        url = httpx.URL(wait["oauthUrl"])
        assert str(url).startswith(f"{peers.auth.url}/ms/authorize?")
        query = dict(url.params)
        assert query["client_id"] == MS_CLIENT and query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["redirect_uri"] == f"{udb.url}/oauth/callback" and query["scope"] == "Files.Read.All offline_access"
        assert query["state"].split(".")[:2] == [TENANT, job]
        # The verifier is server-side, in the tenant's secret store, and not in the URL.
        pending = json.loads(udb.secrets.get(TENANT, oauth.pending_name(query["state"])))
        assert oauth.code_challenge(pending["verifier"]) == query["code_challenge"]
        assert pending["verifier"] not in str(url)

        answer = udb.authorize(job)
        assert answer.status_code == 200, answer.text
        assert str(answer.url).startswith(f"{udb.url}/oauth/callback?code=")
        assert answer.json() == {"jobId": job, "provider": "onedrive", "authorized": True, "resumed": True,
                                 "via": "in-process", "state": "loaded"}
        assert peers.auth.grants["authorization_code"] == code_grants + 1
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)

    doc = udb.job(job)
    assert doc["state"] == "loaded" and doc["error"] is None
    assert doc["tables"] == {"onedrive__sales": {"rows": 1500}}
    assert [h["state"] for h in doc["history"]] == ["requested", "discovering", "discovered", "syncing", "staged",
                                                    "loading", "loaded"]
    with udb.warehouse(tmp_path) as w:
        assert types_of(w, "onedrive__sales") == SALES_COLUMNS
        assert w.execute("SELECT count(*), sum(order_id), count(*) FILTER (discount IS NULL) "
                         "FROM onedrive__sales").fetchone() == (1500, 1500 * 1501 // 2, 150)
    # Downloads followed Graph's 302 to the pre-authenticated URL, without the bearer token.
    assert peers.graph.download_auth and set(peers.graph.download_auth) == {None}

    # The tokens: in the tenant's secret store, and nowhere else.
    stored = json.loads(udb.secrets.get(TENANT, "oauth.microsoft"))
    assert stored["access_token"] in peers.auth.issued_tokens() and stored["refresh_token"]
    assert oauth.pending_name(query["state"]) not in udb.secrets.names(TENANT)  # one use
    secrets = [t.encode() for t in peers.auth.issued_tokens()] + [pending["verifier"].encode()]
    texts = [stream.getvalue().encode(), (Path(udb.settings.home) / "job-events.jsonl").read_bytes()]
    texts += [json.dumps(dict(e.get_attributes())).encode() + json.dumps(e.get_data()).encode() for e in udb.seen]
    for info in udb.ctx.store.list(""):
        texts.append(udb.ctx.store.get(info.key).data)  # job and source documents, staging, warehouse
    assert stream.getvalue().count("\n") > 10
    for text in texts:
        leaked = [s for s in secrets if s in text]
        assert not leaked, (leaked, text[max(0, text.find(leaked[0]) - 300):text.find(leaked[0]) + 100])


def test_sharepoint_folder_through_discover_connect(udb, peers, tmp_path):
    discover_app = FunctionApp("discover", routes=DISCOVER_ROUTES).use(runtime.start("discover", udb.settings))
    web = flask.Flask("discover-under-test")
    web.add_url_rule("/sources/discover_connect", "dc", lambda: discover_app(flask.request), methods=["POST"])
    answer = web.test_client().post("/sources/discover_connect", json={"hint": SHAREPOINT_FOLDER, "autoanalyze": False},
                                    headers={"X-UDB-Tenant": TENANT})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["state"] == "waiting" and body["provider"] == "sharepoint" and body["sent"] is False
    assert body["candidates"][0] == {"provider": "sharepoint", "confidence": 0.97,
                                     "reasons": ["SharePoint link (*.sharepoint.com)"]}
    assert body["oauthUrl"] == udb.job(body["jobId"])["error"]["oauthUrl"]
    children_before = peers.graph.hits["shares"]

    callback = udb.browser.get(body["oauthUrl"]).json()
    assert callback["state"] == "loaded", callback
    doc = udb.job(body["jobId"])
    assert doc["tables"] == {"team_reports__items": {"rows": 500}, "team_reports__orders": {"rows": 800}}
    assert peers.graph.hits["shares"] - children_before >= 4  # driveItem + 3 pages of children (1 a page)
    with udb.warehouse(tmp_path) as w:
        assert types_of(w, "team_reports__orders") == {"order_id": "BIGINT", "customer": "VARCHAR",
                                                       "placed_on": "DATE", "total": "DOUBLE"}
        assert types_of(w, "team_reports__items") == {"item_id": "BIGINT", "label": "VARCHAR", "in_stock": "BOOLEAN"}
        assert w.execute("SELECT count(*), sum(total) FROM team_reports__orders").fetchone() == (800, 1.5 * 799 * 800 / 2)
        assert w.execute("SELECT count(*) FILTER (in_stock) FROM team_reports__items").fetchone() == (250,)
    source = json.loads(udb.ctx.tenant_store(TENANT).get(f"sources/{doc['source_id']}.json").data)
    assert source["provider"] == "sharepoint"
    assert [s["location"].split("/")[1] for s in source["streams"]] == ["drives", "drives"]


def test_google_drive_csv_then_a_sheet_a_doc_and_a_folder_with_the_token(udb, peers, tmp_path):
    link = f"https://drive.google.com/file/d/{peers.customers}/view?usp=sharing"
    job = udb.run(link)
    query = dict(httpx.URL(udb.job(job)["error"]["oauthUrl"]).params)
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert query["scope"] == "https://www.googleapis.com/auth/drive.readonly"
    assert udb.authorize(job).json()["state"] == "loaded"
    assert udb.job(job)["tables"] == {"gdrive__customers": {"rows": 1200}}

    # Authorized now: discover lists the catalogue at once, like any other provider.
    sheet = udb.run(f"https://docs.google.com/spreadsheets/d/{peers.budget}/edit#gid=0")
    assert udb.job(sheet)["state"] == "loaded"
    assert udb.job(sheet)["tables"] == {"gdrive__budget_2025": {"rows": 12}}
    assert (f"/drive/v3/files/{peers.budget}/export", "mimeType=text%2Fcsv") in peers.drive.seen
    doc = udb.run(f"https://docs.google.com/document/d/{peers.plan}/edit")
    assert udb.job(doc)["state"] == "loaded", udb.job(doc)["error"]
    folder = udb.run(f"https://drive.google.com/drive/folders/{peers.shelf}?usp=sharing")
    assert udb.job(folder)["tables"] == {"shelf__prices": {"rows": 30}, "shelf__stock": {"rows": 40}}
    with udb.warehouse(tmp_path) as w:
        assert types_of(w, "gdrive__customers") == {"customer_id": "BIGINT", "name": "VARCHAR", "vip": "BOOLEAN",
                                                    "since": "TIMESTAMP"}
        assert w.execute("SELECT count(*), count(*) FILTER (vip), max(since) FROM gdrive__customers").fetchone()[:2] \
            == (1200, 400)
        assert types_of(w, "gdrive__budget_2025") == {"month": "VARCHAR", "planned": "BIGINT", "actual": "DOUBLE"}
        assert w.execute("SELECT sum(planned), sum(actual) FROM gdrive__budget_2025").fetchone() == (78000, 77259.0)
        fragments = w.execute("SELECT element_type, text, section FROM gdrive__plan ORDER BY element_id").fetchall()
        assert ("NarrativeText", "Suppliers may be late.", "Risks") in fragments
        assert types_of(w, "shelf__prices") == {"sku": "BIGINT", "price": "DOUBLE"}
    assert peers.auth.grants["authorization_code"] >= 1


# ================================================================ refresh, device code

def test_an_expired_access_token_is_refreshed_and_the_sync_succeeds(udb, peers, tmp_path):
    peers.auth.access_ttl = 2
    job = udb.run(ONEDRIVE_CSV)
    assert udb.authorize(job).json()["state"] == "loaded"
    first = json.loads(udb.secrets.get(TENANT, "oauth.microsoft"))
    assert first["lifetime"] == 2
    refreshes = peers.auth.grants["refresh_token"]
    time.sleep(2.2)  # the access token has expired
    again = udb.run(ONEDRIVE_CSV)
    assert udb.job(again)["state"] == "loaded", udb.job(again)["error"]
    assert udb.job(again)["tables"] == {"onedrive__sales": {"rows": 1500}}
    assert peers.auth.grants["refresh_token"] > refreshes
    second = json.loads(udb.secrets.get(TENANT, "oauth.microsoft"))
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    # An access token the API refuses before its expiry (revoked at the provider): UDB refreshes
    # once on the 401 and goes on.
    peers.auth.access_ttl = 3600
    time.sleep(2.2)
    assert udb.job(udb.run(ONEDRIVE_CSV))["state"] == "loaded"  # refreshed: now a token for an hour
    peers.auth.expire_access_tokens()
    refreshes = peers.auth.grants["refresh_token"]
    third = udb.run(ONEDRIVE_CSV)
    assert udb.job(third)["state"] == "loaded", udb.job(third)["error"]
    assert peers.auth.grants["refresh_token"] == refreshes + 1


def test_device_code_flow_resumes_the_job(udb, peers, tmp_path):
    interval = peers.auth.device_interval
    job = udb.run(ONEDRIVE_CSV, options={"oauth": "device"})
    wait = udb.job(job)["error"]
    assert wait["waiting"] == "authorization" and "oauthUrl" not in wait
    started = wait["device"]
    assert started["verification_uri"] == f"{peers.auth.url}/device" and started["interval"] == interval
    assert started["jobId"] == job and started["user_code"] in wait["reason"]
    device_id = started["deviceId"]

    def poll():
        response = udb.client.post(f"/oauth/device/{device_id}")
        assert response.status_code == 200, response.text
        return response.json()

    calls = peers.auth.token_calls[oauth.DEVICE_GRANT]
    early = poll()  # before the interval: UDB does not ask the provider
    assert early["status"] == "pending" and early["retryAfter"] >= 1
    assert peers.auth.token_calls[oauth.DEVICE_GRANT] == calls
    time.sleep(interval + 0.1)
    assert poll()["status"] == "pending"  # the provider: authorization_pending
    assert peers.auth.token_calls[oauth.DEVICE_GRANT] == calls + 1
    assert poll()["status"] == "pending"  # again too soon: not sent
    assert peers.auth.token_calls[oauth.DEVICE_GRANT] == calls + 1

    assert udb.browser.get(started["verification_uri_complete"]).status_code == 200  # the user approves
    time.sleep(interval + 0.1)
    done = poll()
    assert done["status"] == "authorized" and done["job"]["state"] == "loaded", done
    assert udb.job(job)["tables"] == {"onedrive__sales": {"rows": 1500}}
    assert "oauth.microsoft" in udb.secrets.names(TENANT)
    assert f"oauth.device.{device_id}" not in udb.secrets.names(TENANT)


def test_device_code_start_without_a_job_and_slow_down(udb, peers):
    response = udb.client.post("/oauth/device", json={"provider": "gdrive"})
    assert response.status_code == 201, response.text
    started = response.json()
    assert set(started) == {"deviceId", "provider", "verification_uri", "verification_uri_complete", "user_code",
                            "expires_in", "interval"}
    secrets, device_id = udb.secrets, started["deviceId"]
    ahead = time.time() + 100  # a clock past the interval: UDB polls, the provider finds it too soon
    assert oauth.device_poll(udb.settings, secrets, TENANT, device_id, now=ahead)["status"] == "pending"
    slow = oauth.device_poll(udb.settings, secrets, TENANT, device_id, now=ahead + started["interval"])
    assert slow["status"] == "slow_down" and slow["interval"] == started["interval"] + oauth.SLOW_DOWN_STEP
    peers.auth.approve(started["user_code"])
    time.sleep(started["interval"] + 0.1)
    done = oauth.device_poll(udb.settings, secrets, TENANT, device_id, now=ahead + 2 * slow["interval"])
    assert done == {"deviceId": device_id, "provider": "gdrive", "interval": slow["interval"], "status": "authorized"}
    assert "oauth.google" in secrets.names(TENANT)
    assert udb.client.post(f"/oauth/device/{device_id}").status_code == 404  # finished
    assert udb.client.post("/oauth/device", json={"provider": "dropbox"}).status_code == 400


# ================================================================ bad cases

def test_a_tampered_state_is_refused_with_401(udb, peers):
    job = udb.run(ONEDRIVE_CSV)
    url = httpx.URL(udb.job(job)["error"]["oauthUrl"])
    state = url.params["state"]
    tenant, job_id, exp, sig = state.split(".")
    for forged in (f"{tenant}.{new_job_id()}.{exp}.{sig}", f"{tenant}.{job_id}.{int(exp) + 3600}.{sig}",
                   f"beta.{job_id}.{exp}.{sig}", "garbage", ""):
        response = udb.browser.get(f"{udb.url}/oauth/callback", params={"code": "x", "state": forged})
        assert response.status_code == 401, (forged, response.text)
    # The real flow still works afterwards; a replayed callback (the same state twice) is refused.
    first = udb.browser.get(str(url))
    assert first.json()["state"] == "loaded"
    replay = udb.browser.get(str(first.url))
    assert replay.status_code == 400 and "completed already" in replay.json()["error"]


def test_access_denied_fails_the_job_with_the_reason(udb, peers):
    peers.auth.consent = "deny"
    job = udb.run(ONEDRIVE_CSV)
    answer = udb.authorize(job)
    assert answer.status_code == 400
    body = answer.json()
    assert body["jobId"] == job and body["state"] == "failed"
    assert body["error"].startswith("authorization refused at Microsoft (OneDrive/SharePoint): access_denied")
    doc = udb.job(job)
    assert doc["state"] == "failed" and doc["error"]["reason"] == body["error"] and doc["error"]["stage"] == "discover"
    assert "oauth.microsoft" not in udb.secrets.names(TENANT)


def test_a_code_the_token_endpoint_refuses_or_cannot_take_fails_the_job(udb, peers, tmp_path):
    job = udb.run(ONEDRIVE_CSV)
    state = httpx.URL(udb.job(job)["error"]["oauthUrl"]).params["state"]
    answer = udb.browser.get(f"{udb.url}/oauth/callback", params={"code": "not-a-code", "state": state})
    assert answer.status_code == 400
    assert answer.json()["error"] == ("Microsoft (OneDrive/SharePoint) refused the authorization code: invalid_grant "
                                      "(Invalid 'code' in request.)")
    assert udb.job(job)["state"] == "failed"
    # A token endpoint nobody answers at: the exchange fails fast, with the reason.
    down = Udb(peers, tmp_path / "down", ms_authority="http://127.0.0.1:9/ms")
    try:
        job = down.run(ONEDRIVE_CSV)
        state = httpx.URL(down.job(job)["error"]["oauthUrl"]).params["state"]
        answer = down.browser.get(f"{down.url}/oauth/callback", params={"code": "c", "state": state})
        assert answer.status_code == 400 and "cannot exchange the authorization code" in answer.json()["error"]
        assert "connection refused" in down.job(job)["error"]["reason"]
    finally:
        down.close()


def test_a_revoked_refresh_token_fails_the_job_clearly(udb, peers):
    peers.auth.access_ttl = 1
    job = udb.run(ONEDRIVE_CSV, autosync=False)
    assert udb.authorize(job).json()["state"] == "discovered"
    source_id = udb.job(job)["source_id"]
    peers.auth.revoke_refresh_tokens()
    time.sleep(1.2)
    # Sync of the discovered source: the expired token cannot be refreshed.
    sync = events.make_event(events.SYNC_REQUESTED, {"source_id": source_id, "autoanalyze": False}, tenant=TENANT,
                             job_id=job, function="test")
    udb.dispatcher.publish(sync)
    doc = udb.job(job)
    assert doc["state"] == "failed" and doc["error"]["stage"] == "sync"
    assert "Microsoft (OneDrive/SharePoint): the authorization of tenant acme was revoked or has expired " \
           "(refresh refused: invalid_grant" in doc["error"]["reason"]
    assert doc["error"]["reason"].endswith("discover the link again to authorize anew")
    assert "oauth.microsoft" not in udb.secrets.names(TENANT)
    # And discovering again asks for authorization anew.
    again = udb.run(ONEDRIVE_CSV)
    assert udb.job(again)["error"]["waiting"] == "authorization"


def test_unconfigured_provider_fails_discover_with_the_setting_to_set(peers, tmp_path):
    udb = Udb(peers, tmp_path / "udb", ms_client_id="")
    try:
        job = udb.run(ONEDRIVE_CSV)
        doc = udb.job(job)
        assert doc["state"] == "failed"
        assert "OAuth is not configured: set UDB_OAUTH_MS_CLIENT_ID" in doc["error"]["reason"]
    finally:
        udb.close()


# ================================================================ resuming through the broker

class _Broker(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((dict(self.headers), body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_with_a_broker_the_callback_re_emits_the_discover_request_there(peers, tmp_path):
    broker = ThreadingHTTPServer(("127.0.0.1", 0), _Broker)
    threading.Thread(target=broker.serve_forever, daemon=True).start()
    _Broker.received = []
    udb = Udb(peers, tmp_path / "udb")
    try:
        job = udb.run(ONEDRIVE_CSV, options={"provider": "onedrive"})
        # From now on this UDB is deployed with a broker (K_SINK) and a broker token.
        udb.ctx.settings = dataclasses.replace(udb.settings, broker_url=f"http://127.0.0.1:{broker.server_address[1]}",
                                               broker_token="t" * 40)
        answer = udb.authorize(job).json()
        assert answer == {"jobId": job, "provider": "onedrive", "authorized": True, "resumed": True, "via": "broker",
                          "state": "discovering"}
        (headers, body), = _Broker.received
        headers = {k.lower(): v for k, v in headers.items()}
        assert headers["ce-type"] == events.DISCOVER_REQUESTED and headers["ce-jobid"] == job
        assert headers["ce-tenant"] == TENANT and headers["authorization"] == "Bearer " + "t" * 40
        assert json.loads(body) == {"hint": ONEDRIVE_CSV, "autosync": True, "autoanalyze": False,
                                    "options": {"provider": "onedrive"}}
        assert headers["ce-traceparent"].split("-")[1] == udb.job(job)["traceparent"].split("-")[1]
    finally:
        udb.close()
        broker.shutdown()
        broker.server_close()


# ================================================================ discover latency with a token

def test_discover_latency_with_a_token(peers, tmp_path, capsys):
    udb = Udb(peers, tmp_path / "udb", max_concurrent_jobs=0)  # 20 discovered jobs stay live
    drive_link = f"https://drive.google.com/file/d/{peers.customers}/view"
    for link in (ONEDRIVE_CSV, drive_link):
        assert udb.authorize(udb.run(link, autosync=False)).json()["state"] == "discovered"
    ctx = udb.dispatcher.context("discover")
    medians = {}
    for name, link in (("onedrive", ONEDRIVE_CSV), ("gdrive", drive_link)):
        times = []
        for _ in range(10):
            started = time.perf_counter()
            source, _ = discover(ctx, TENANT, new_job_id(), link)
            times.append((time.perf_counter() - started) * 1000)
            assert len(source["streams"]) == 1
        medians[name] = statistics.median(times)
    udb.close()
    with capsys.disabled():
        print("\ndiscover latency with a token, median of 10: "
              + ", ".join(f"{k} {v:.0f} ms" for k, v in medians.items()))
    assert all(v < 2000 for v in medians.values())


def test_udb_run_of_an_unauthorized_share_link_prints_where_to_sign_in(peers, tmp_path, monkeypatch, capsys):
    from frontends import cli
    monkeypatch.setenv("UDB_HOME", str(tmp_path / "udb"))
    monkeypatch.setenv("UDB_OAUTH_MS_CLIENT_ID", MS_CLIENT)
    monkeypatch.setenv("UDB_OAUTH_MS_AUTHORITY", f"{peers.auth.url}/ms")
    assert cli.main(["run", ONEDRIVE_CSV, "--tenant", TENANT]) == 3
    out = capsys.readouterr().out.splitlines()
    job = out[0].split()[1]
    assert out[1].startswith(f"job {job} waiting for authorization: onedrive links need Microsoft (OneDrive/SharePoint) OAuth")
    assert out[2].startswith(f"oauthUrl {peers.auth.url}/ms/authorize?") and "code_challenge_method=S256" in out[2]
    assert cli.main(["status", job, "--tenant", TENANT]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "discovering" and status["error"]["oauthUrl"] == out[2].split(" ", 1)[1]

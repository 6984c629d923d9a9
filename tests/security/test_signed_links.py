"""Signed report links (shared/security/links.py) against the real artifacts function process.

A real job is analysed embedded into a local store; the artifacts function runs on that store as
its own functions-framework process on 127.0.0.1 with authentication on. GET /status/{jobId}
gives the link; headless Chromium opens it with no header, and the report page's relative links
open too. Plain HTTP requests without a header are then refused: for another job, another
tenant, after expiry, when tampered with, and after the tenant's key is revoked.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from shared.analysis.charts import find_chromium
from shared.security import auth, links
from frontends import cli
from shared.serving import runtime
from shared.core.settings import Settings
from shared.core.tenancy import new_job_id
from tests.conftest import REPO, write_sales
from tests.e2e.test_report_page import open_pages

pytestmark = pytest.mark.security
SECRET = "link-test-secret-" + "s" * 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, env, store context, acme's job, acme's viewer key, other's job, other's key):
    one analysed job of tenant acme, a second job of acme and one of tenant other, served by a
    real artifacts process."""
    home = tmp_path_factory.mktemp("links-home")
    env = {**os.environ, "UDB_HOME": str(home / "udb"), "UDB_AUTH": "on", "UDB_JWT_SECRET": SECRET,
           "UDB_AUTH_CACHE_SECONDS": "0", "UDB_LOG_LEVEL": "WARNING", "UDB_CHART_PNG": "0",
           "UDB_REPORT_SAMPLE_ROWS": "1000", "PYTHONPATH": str(REPO)}
    port = _free_port()
    env["UDB_ARTIFACTS_URL"] = f"http://127.0.0.1:{port}"
    csv = write_sales(home / "data" / "shop" / "sales.csv", 500)
    mp = pytest.MonkeyPatch()
    for name in ("UDB_HOME", "UDB_JWT_SECRET", "UDB_CHART_PNG", "UDB_REPORT_SAMPLE_ROWS", "UDB_ARTIFACTS_URL"):
        mp.setenv(name, env[name])
    mp.setenv("UDB_AUTH", "off")  # the embedded run itself (no HTTP door)
    jobs, printed = [], []
    for tenant in ("acme", "acme", "other"):
        # capsys is function-scoped: read the job id from the store instead of stdout.
        before = set((home / "udb" / "store" / "udb" / "tenants" / tenant / "jobs").glob("*.json")) \
            if (home / "udb" / "store" / "udb" / "tenants" / tenant / "jobs").exists() else set()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main(["run", str(csv), "--tenant", tenant]) == 0
        printed.append(out.getvalue())
        after = set((home / "udb" / "store" / "udb" / "tenants" / tenant / "jobs").glob("*.json"))
        jobs.append((tenant, (after - before).pop().stem))
    mp.undo()
    ctx = runtime.start("links-test", Settings.from_env(env={k: v for k, v in env.items() if k.startswith("UDB_")}))
    keys = auth.KeyStore(ctx.store)
    acme_key = keys.create("acme", "viewer", "links test")[0]
    other_key = keys.create("other", "viewer", "links test")[0]
    process = subprocess.Popen([str(Path(sys.executable).parent / "functions-framework"), "--source",
                                str(REPO / "functions" / "artifacts" / "main.py"), "--target", "http",
                                "--host", "127.0.0.1", "--port", str(port)],
                               env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"artifacts exited {process.returncode}: {process.stderr.read().decode()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the artifacts function did not listen within 60 s"
        time.sleep(0.2)
    yield {"base": base, "ctx": ctx, "acme_job": jobs[0][1], "acme_job2": jobs[1][1], "other_job": jobs[2][1],
           "acme_key": acme_key, "other_key": other_key, "printed": printed, "env": env}
    process.terminate()
    process.wait(timeout=20)


def _link(served, job_key="acme_job", key="acme_key") -> dict:
    response = httpx.get(f"{served['base']}/status/{served[job_key]}",
                         headers={"Authorization": f"Bearer {served[key]}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["report_link"]


def _real(problems: list[str]) -> list[str]:
    # Over HTTP the browser also asks the server for /favicon.ico on its own (404: UDB has none).
    return [p for p in problems if not p.rstrip().endswith("/favicon.ico")]


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)  # no Authorization header, as a browser


def test_status_gives_a_signed_link_that_opens_the_report_page_in_chromium_without_a_header(served):
    chromium, why = find_chromium()
    assert chromium, f"the link test needs Chromium: {why}"
    job = served["acme_job"]
    link = _link(served)
    assert link["url"] == served["base"] + link["path"]
    assert link["path"].startswith("/s/") and link["path"].endswith(f"/artifact/{job}/index.html")
    assert _get(f"{served['base']}/artifact/{job}/index.html").status_code == 401  # the headerless door is shut

    screenshot = Path(served["ctx"].settings.home) / "link-page.png"
    page = asyncio.run(open_pages(chromium, [link["url"]], screenshot))[link["url"]]
    assert page["title"] == f"UDB analysis {job}"
    assert _real(page["problems"]) == [] and page["text"] > 0
    # Every relative link of the page resolves under the same signed prefix and opens.
    targets = [urljoin(link["url"], href) for href in page["links"]]
    assert targets and all(urlparse(t).path.startswith(link["path"].rsplit("/", 1)[0] + "/") for t in targets)
    for target in targets:
        response = _get(target)
        assert response.status_code == 200, (unquote(target), response.text[:200])
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "private, no-store"
    profile = next(t for t in targets if "/profile-" in t and t.endswith(".html"))
    opened = asyncio.run(open_pages(chromium, [profile], screenshot))[profile]
    assert _real(opened["problems"]) == [] and opened["text"] > 0


def test_udb_run_and_the_mcp_status_tool_give_links_that_open(served):
    line = next(x for x in served["printed"][0].splitlines() if x.startswith("report http"))
    url = line.split()[1]
    assert url.startswith(f"{served['base']}/s/") and url.endswith(f"/artifact/{served['acme_job']}/index.html")
    assert "signed link, opens in a browser until" in line
    page = _get(url)
    assert page.status_code == 200 and f"UDB analysis {served['acme_job']}" in page.text

    from frontends import mcp_server

    settings = Settings.from_env(env={k: v for k, v in served["env"].items() if k.startswith("UDB_")})
    udb = mcp_server.UDB(settings)  # the embedded backend, on the same store
    caller = mcp_server.Caller(auth.Principal("acme", "viewer", "api-key"), None)
    link = udb.status(caller, served["acme_job"])["report_link"]
    assert _get(link["url"]).status_code == 200
    assert _get(link["url"].replace(served["acme_job"], served["acme_job2"])).status_code == 403


def test_a_link_is_refused_for_another_job_and_another_tenant(served):
    token = _link(served)["path"].split("/")[2]
    for job in (served["acme_job2"], served["other_job"]):
        response = _get(f"{served['base']}/s/{token}/artifact/{job}/index.html")
        assert response.status_code == 403, response.text
        assert response.json() == {"error": "this link opens another job's artifacts"}
    other_token = _link(served, "other_job", "other_key")["path"].split("/")[2]
    assert _get(f"{served['base']}/s/{other_token}/artifact/{served['other_job']}/index.html").status_code == 200
    assert _get(f"{served['base']}/s/{other_token}/artifact/{served['acme_job']}/index.html").status_code == 403
    # A token re-signed by someone without the secret, naming acme's job as other's tenant.
    forged = URLSafeTimedSerializer("not-the-secret-" + "x" * 40, salt=links.SALT,
                                    signer_kwargs={"digest_method": hashlib.sha256}).dumps(
        {"t": "acme", "j": served["acme_job"], "g": "0"})
    response = _get(f"{served['base']}/s/{forged}/artifact/{served['acme_job']}/index.html")
    assert response.status_code == 401 and response.json() == {"error": "link does not verify"}
    # The link opens artifacts only: no other route behind the prefix.
    assert _get(f"{served['base']}/s/{token}/status/{served['acme_job']}").status_code == 404


def test_a_tampered_link_is_refused(served):
    link = _link(served)
    token = link["path"].split("/")[2]
    payload, stamp, signature = token.rsplit(".", 2)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (f"{payload}.{stamp}.{flipped}", f"{payload[:-1]}x.{stamp}.{signature}", f"{payload}.{stamp}",
                "x" * 40):
        response = _get(f"{served['base']}/s/{bad}/artifact/{served['acme_job']}/index.html")
        assert response.status_code == 401, (bad, response.text)
        assert response.json()["error"] in ("link does not verify", "malformed link")


class _Backdated(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 3601  # signed just over UDB_LINK_TTL_SECONDS (3600) ago


def test_an_expired_link_is_refused(served):
    generation = links.current_generation(served["ctx"].store, "acme")
    claims = {"t": "acme", "j": served["acme_job"], "g": generation}
    fresh = URLSafeTimedSerializer(SECRET, salt=links.SALT, signer_kwargs={"digest_method": hashlib.sha256})
    assert _get(f"{served['base']}/s/{fresh.dumps(claims)}/artifact/{served['acme_job']}/index.html").status_code == 200
    old = URLSafeTimedSerializer(SECRET, salt=links.SALT, signer=_Backdated,
                                 signer_kwargs={"digest_method": hashlib.sha256})
    response = _get(f"{served['base']}/s/{old.dumps(claims)}/artifact/{served['acme_job']}/index.html")
    assert response.status_code == 401
    assert response.json()["error"].startswith("link expired")


def test_revoking_the_tenants_key_ends_its_links(served):
    link = _link(served)
    assert _get(link["url"]).status_code == 200
    other = _link(served, "other_job", "other_key")
    keys = auth.KeyStore(served["ctx"].store)
    key_id = served["acme_key"].split("_")[1]
    keys.revoke(key_id)
    response = _get(link["url"])
    assert response.status_code == 401
    assert response.json()["error"].startswith("link revoked")
    assert _get(other["url"]).status_code == 200  # another tenant's links are untouched
    # A new key of the tenant gets a new link, which opens.
    served["acme_key"] = keys.create("acme", "viewer", "links test, after revocation")[0]
    assert _get(_link(served)["url"]).status_code == 200


def test_the_token_never_reaches_the_log_line():
    path = f"/s/{'a' * 60}.{'b' * 6}.{'c' * 43}/artifact/{new_job_id()}/index.html"
    assert links.redact_path(path).startswith("/s/<token>/artifact/")
    assert "a" * 60 not in links.redact_path(path)

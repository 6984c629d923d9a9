"""The MCP server in embedded mode, driven by the `mcp` SDK's own client over both transports:
stdio (`python -m frontends.cli mcp` as a subprocess) and streamable HTTP (`--transport http` on a
free port). Authentication is on, so every call goes through the credentials and the roles of
the HTTP API: an API key in UDB_MCP_TOKEN over stdio, a JWT or an API key per request over HTTP.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from functions.discover.detect import AMBIGUITY_MARGIN
from shared.security import auth
from shared.core.settings import Settings
from shared.storage.backends import open_store
from tests.conftest import REPO, write_sales
from tests.peers.rest_api import RestPeer

pytestmark = pytest.mark.integration
JWT_SECRET = "mcp-tests-" + "s" * 40
ROWS = 1000
REGIONS = ["north", "south", "east", "west"]
REVENUE_KPI = {"sql": "SELECT region, sum(amount) AS revenue FROM sales__sales GROUP BY region ORDER BY region",
               "chart": {"type": "bar", "x": "region", "y": "revenue"}, "title": "Revenue by region"}


def expected_revenue() -> list[list]:
    """The known answer, from the generator's definition (tests.conftest.write_sales):
    row i (0-based) has region REGIONS[i % 4] and amount i % 100."""
    totals: dict[str, float] = {}
    for i in range(ROWS):
        totals[REGIONS[i % 4]] = totals.get(REGIONS[i % 4], 0) + i % 100
    return [[region, float(totals[region])] for region in sorted(totals)]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mcp-home")


@pytest.fixture(scope="module")
def env(home) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("UDB_")},
            "UDB_HOME": str(home), "UDB_AUTH": "on", "UDB_JWT_SECRET": JWT_SECRET, "UDB_CHART_PNG": "0",
            "UDB_LOG_LEVEL": "WARNING", "UDB_NET_ALLOWLIST": "127.0.0.0/8,::1", "UDB_DRIFT_CACHE": "0",
            "UDB_OAUTH_MS_CLIENT_ID": "mcp-tests"}


@pytest.fixture(scope="module")
def keys(env):
    """API keys made the way `udb keys create` makes them, in the embedded store."""
    return KeyMaker(open_store(Settings.from_env(env=env)))


class KeyMaker:
    def __init__(self, store):
        self.keys = auth.KeyStore(store)
        self.made: dict[tuple[str, str], str] = {}

    def __call__(self, tenant: str, role: str) -> str:
        if (tenant, role) not in self.made:
            self.made[(tenant, role)] = self.keys.create(tenant, role, "mcp tests")[0]
        return self.made[(tenant, role)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_http_server(env: dict, *args: str) -> tuple[str, subprocess.Popen]:
    """`udb mcp --transport http` as its own process on a free port: (endpoint URL, process)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "frontends.cli", "mcp", "--transport", "http", "--port", str(port),
                                *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"udb mcp exited {process.returncode}: {process.stderr.read().decode()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}/mcp", process
        time.sleep(0.2)
    process.kill()
    raise AssertionError("udb mcp --transport http did not listen within 60 s")


@pytest.fixture(scope="module")
def http_server(env):
    """One HTTP server for the module: the caller differs per request."""
    url, process = start_http_server(env)
    yield url
    process.terminate()
    process.wait(timeout=20)


def stdio_client(env: dict, token: str) -> Client:
    params = StdioServerParameters(command=sys.executable, args=["-m", "frontends.cli", "mcp"],
                                   env={**env, "UDB_MCP_TOKEN": token}, cwd=str(REPO))
    return Client(params, read_timeout_seconds=300)


@asynccontextmanager
async def http_client(url: str, credential: str | None):
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=300) as client:
            yield client


async def call(client: Client, tool: str, **arguments) -> dict:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def refused(client: Client, tool: str, **arguments) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return result.content[0].text


async def round_trip(client: Client, csv: Path) -> dict:
    """discover -> sync -> analyze (with one custom KPI) -> artifacts and warehouse reads."""
    names = sorted(t.name for t in (await client.list_tools()).tools)
    assert names == sorted(n for n in auth.MCP_ROLES if not n.startswith("udb://"))
    started = time.perf_counter()
    found = await call(client, "discover_connect", hint=str(csv))
    assert found["state"] == "discovered" and found["ambiguous"] is False
    assert found["candidates"][0] == {"provider": "file", "confidence": 0.99,
                                      "reasons": ["local path", "is a file", "extension .csv is a known format"]}
    job = found["jobId"]
    loaded = await call(client, "sync", job=job)
    assert loaded["state"] == "loaded" and loaded["tables"] == {"sales__sales": {"rows": ROWS}}
    scheduled = await call(client, "set_schedule", source=job, cron="0 6 * * *", timezone="Europe/Paris")
    assert (scheduled["source_id"], scheduled["cron"], scheduled["timezone"], len(scheduled["next"])) == \
        (loaded_source(scheduled), "0 6 * * *", "Europe/Paris", 3)
    assert all(slot.endswith(("T06:00:00+01:00", "T06:00:00+02:00")) for slot in scheduled["next"])
    done = await call(client, "analyze", job=job, kpis={"revenue_by_region": REVENUE_KPI})
    assert done["state"] == "completed" and done["kpis_stored"] == ["revenue_by_region"]
    elapsed = time.perf_counter() - started

    index = json.loads((await call(client, "get_artifact", job=job))["text"])
    assert index["tables"] == ["sales__sales"]
    names = {a["name"]: a for a in index["artifacts"]}
    custom = await call(client, "get_artifact", job=job, name="kpis-custom.json")
    assert custom["bytes"] == names["kpis-custom.json"]["bytes"] and custom["truncated"] is False
    [kpi] = json.loads(custom["text"])
    assert kpi["result"]["columns"] == ["region", "revenue"] and kpi["result"]["rows"] == expected_revenue()
    profile = json.loads((await call(client, "get_artifact", job=job, name="profile-sales__sales.json"))["text"])
    assert profile["rows"] == ROWS
    discount = next(c for c in profile["column_profiles"] if c["name"] == "discount")
    assert discount["nulls"] == ROWS // 10

    again = await refused(client, "analyze", job=job)
    assert again == (f"Error executing tool analyze: invalid input: job {job} is completed: it takes no more "
                     f"steps; start a new job with discover_connect")
    resource = await client.read_resource(f"udb://jobs/{job}/artifacts/kpis-custom.json")
    assert json.loads(resource.contents[0].text) == json.loads(custom["text"])
    job_doc = json.loads((await client.read_resource(f"udb://jobs/{job}")).contents[0].text)
    assert job_doc["status"]["state"] == "completed" and job_doc["index"] == index

    assert (await call(client, "list_tables"))["tables"] == [{"name": "sales__sales", "rows": ROWS, "columns": 5}]
    described = await call(client, "describe_table", name="sales__sales")
    assert [c["name"] for c in described["columns"]] == ["order_id", "region", "ordered_at", "amount", "discount"]
    assert described["rows"] == ROWS and described["sample"][0][:2] == [1, "north"]
    totals = await call(client, "run_kpi", sql="SELECT count(*) AS n, sum(amount) AS total, "
                                               "count(discount) AS discounted FROM sales__sales")
    assert totals["rows"] == [[ROWS, 49_500.0, 900]] and totals["tables"] == ["sales__sales"]
    return {"job": job, "seconds": elapsed}


def loaded_source(schedule: dict) -> str:
    assert schedule["source_id"].startswith("sales-")  # the discovered source of the job
    return schedule["source_id"]


def test_round_trip_over_stdio(env, keys, tmp_path):
    csv = write_sales(tmp_path / "sales" / "sales.csv", ROWS)

    async def scenario():
        async with stdio_client(env, keys("stdio-co", "analyst")) as client:
            return await round_trip(client, csv)

    outcome = asyncio.run(scenario())
    print(f"stdio round trip (discover+sync+analyze) {outcome['seconds']:.1f} s")


def test_round_trip_over_streamable_http(http_server, env, tmp_path):
    csv = write_sales(tmp_path / "sales" / "sales.csv", ROWS)
    token = auth.mint_jwt(JWT_SECRET, "http-co", "analyst")

    async def scenario():
        async with http_client(http_server, token) as client:
            return await round_trip(client, csv)

    outcome = asyncio.run(scenario())
    print(f"streamable HTTP round trip (discover+sync+analyze) {outcome['seconds']:.1f} s")


def test_an_ambiguous_hint_is_resolved_by_choose_source(http_server, keys):
    records = [{"id": i, "name": f"item {i}", "price": i * 0.5} for i in range(1, 38)]
    peer = RestPeer().start()
    peer.files["orders.json"] = (json.dumps(records).encode(), "application/json")
    hint = f"{peer.url}/files/orders.json"
    try:
        async def scenario():
            async with http_client(http_server, keys("pick-co", "analyst")) as client:
                found = await call(client, "discover_connect", hint=hint)
                top, second = found["candidates"][:2]
                # A static .json file of records: a file to download, or a one-page API?
                assert found["ambiguous"] is True and top["confidence"] - second["confidence"] < AMBIGUITY_MARGIN
                assert [(c["provider"], c["confidence"]) for c in found["candidates"][:2]] == [("http", 0.8), ("rest", 0.7)]
                assert found["source"]["provider"] == "http"
                job = found["jobId"]
                wrong = await refused(client, "choose_source", job=job, candidate="postgres")
                assert "'postgres' is not a candidate of job" in wrong and "['http', 'rest'" in wrong
                chosen = await call(client, "choose_source", job=job, candidate="rest")
                assert chosen["chosen"] == "rest" and chosen["source"]["provider"] == "rest"
                assert chosen["ambiguous"] is False
                status = await call(client, "status", job=job)
                assert status["state"] == "discovered" and status["source_id"] == chosen["source"]["id"]
                loaded = await call(client, "sync", job=job)
                [(table, info)] = loaded["tables"].items()
                assert info == {"rows": 37} and loaded["state"] == "loaded"
                described = await call(client, "describe_table", name=table)
                assert [c["name"] for c in described["columns"]] == ["id", "name", "price"]
                total = await call(client, "run_kpi", sql=f"SELECT sum(price) AS total FROM {table}")
                assert total["rows"] == [[sum(r["price"] for r in records)]]

        asyncio.run(scenario())
    finally:
        peer.stop()


def test_a_share_link_waits_for_the_users_sign_in(http_server, keys):
    async def scenario():
        async with http_client(http_server, keys("share-co", "analyst")) as client:
            found = await call(client, "discover_connect", hint="https://1drv.ms/x/s!AbCdEf")
            job = found["jobId"]
            assert found["state"] == "waiting" and found["provider"] == "onedrive"
            assert found["candidates"] == [{"provider": "onedrive", "confidence": 0.97,
                                            "reasons": ["OneDrive short share link (1drv.ms)"]}]
            assert found["oauthUrl"].startswith("https://login.microsoftonline.com/common/oauth2/v2.0/authorize?"
                                                "client_id=mcp-tests&response_type=code&")
            assert f"state=share-co.{job}." in found["oauthUrl"]
            status = await call(client, "status", job=job)
            assert status["state"] == "discovering" and status["error"]["waiting"] == "authorization"
            text = await refused(client, "sync", job=job)
            assert text == (f"Error executing tool sync: invalid input: job {job} waits for the user's "
                            f"authorization at the source (the oauthUrl of discover_connect): sync it once "
                            f"status(job) says discovered")

    asyncio.run(scenario())


@pytest.mark.security
def test_roles_and_tenants_are_enforced(http_server, env, keys, tmp_path):
    csv = write_sales(tmp_path / "sales" / "sales.csv", 200)

    async def scenario():
        async with http_client(http_server, keys("owner-co", "analyst")) as owner:
            job = (await call(owner, "discover_connect", hint=str(csv)))["jobId"]
            assert (await call(owner, "sync", job=job))["tables"] == {"sales__sales": {"rows": 200}}
        # A viewer of the same tenant reads, but may not change anything or run SQL.
        async with http_client(http_server, auth.mint_jwt(JWT_SECRET, "owner-co", "viewer")) as viewer:
            assert (await call(viewer, "status", job=job))["state"] == "loaded"
            assert (await call(viewer, "list_tables"))["tables"][0]["rows"] == 200
            for tool, arguments in (("sync", {"job": job}), ("run_kpi", {"sql": "SELECT 1"}),
                                    ("analyze", {"job": job}), ("discover_connect", {"hint": str(csv)})):
                text = await refused(viewer, tool, **arguments)
                assert text == f"Error executing tool {tool}: forbidden: role viewer may not call {tool} (needs analyst)"
        # Another tenant's admin: the job does not exist for it.
        async with http_client(http_server, keys("other-co", "admin")) as other:
            text = await refused(other, "status", job=job)
            assert text == f"Error executing tool status: not found: no job {job} for tenant other-co"
            text = await refused(other, "get_artifact", job=job, name="index.json")
            assert text == f"Error executing tool get_artifact: not found: no job {job} for tenant other-co"
            with pytest.raises(MCPError) as raised:
                await other.read_resource(f"udb://jobs/{job}")
            assert raised.value.error.message == f"not found: no job {job} for tenant other-co"
            assert "no warehouse yet" in await refused(other, "list_tables")
        # The SQL guard, through run_kpi: one read-only SELECT over the tenant's own tables.
        async with http_client(http_server, keys("owner-co", "analyst")) as owner:
            text = await refused(owner, "run_kpi", sql="SELECT * FROM read_csv('/etc/passwd')")
            assert text.startswith("Error executing tool run_kpi: invalid input: query rejected: ")
            assert "read_csv() is not allowed" in text
        # Over stdio, a viewer's key in UDB_MCP_TOKEN: the same refusal.
        async with stdio_client(env, keys("owner-co", "viewer")) as viewer:
            text = await refused(viewer, "sync", job=job)
            assert text == "Error executing tool sync: forbidden: role viewer may not call sync (needs analyst)"
            with pytest.raises(MCPError) as raised:
                await viewer.read_resource(f"udb://jobs/{job}/artifacts/index.json")
            assert raised.value.error.message == f"not found: no artifact 'index.json' for job {job}"

    asyncio.run(scenario())

    # No credentials, or a wrong one, never reach a tool: 401 at the HTTP door.
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer udb_000000000000_" + "x" * 43}):
        response = httpx.post(http_server, json=body, headers={**accept, **headers}, timeout=10)
        assert response.status_code == 401 and response.headers["www-authenticate"] == 'Bearer realm="udb"'
    assert response.json() == {"error": "invalid credentials"}


@pytest.mark.security
def test_stdio_with_authentication_on_needs_a_valid_token(env):
    for token, reason in (("", "authentication is on: set UDB_MCP_TOKEN"),
                          ("udb_000000000000_" + "x" * 43, "invalid credentials")):
        run = subprocess.run([sys.executable, "-m", "frontends.cli", "mcp"], env={**env, "UDB_MCP_TOKEN": token},
                             cwd=REPO, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert run.returncode == 2 and reason in run.stderr, run.stderr


@pytest.mark.security
def test_with_authentication_off_the_caller_is_a_local_admin_of_one_tenant(tmp_path):
    """As the CLI in embedded mode: no credential, one tenant (--tenant; over HTTP the
    X-UDB-Tenant header)."""
    plain = {**{k: v for k, v in os.environ.items() if not k.startswith("UDB_")},
             "UDB_HOME": str(tmp_path / "home"), "UDB_LOG_LEVEL": "WARNING"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "frontends.cli", "mcp", "--tenant", "solo-co"],
                                   env=plain, cwd=str(REPO))
    url, process = start_http_server(plain, "--tenant", "solo-co")

    async def scenario():
        async with Client(params, read_timeout_seconds=60) as client:
            text = await refused(client, "status", job="job-0123456789abcdef")
            assert text == "Error executing tool status: not found: no job job-0123456789abcdef for tenant solo-co"
        async with create_mcp_http_client(headers={"X-UDB-Tenant": "named-co"}) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                text = await refused(client, "list_tables")
                assert text == ("Error executing tool list_tables: not found: tenant named-co has no warehouse "
                                "yet: discover and sync a source first")
        async with http_client(url, None) as client:
            text = await refused(client, "list_tables")
            assert "tenant solo-co has no warehouse yet" in text

    try:
        asyncio.run(scenario())
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_tool_role_table_is_in_the_docs():
    text = (REPO / "docs" / "security.md").read_text()
    block = text.split("<!-- MCP_ROLES -->")[1].split("<!-- /MCP_ROLES -->")[0]
    rows = [[cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
            for line in block.strip().splitlines()[2:]]
    assert {name: role for name, role in rows} == auth.MCP_ROLES
    mcp_doc = (REPO / "docs" / "mcp.md").read_text()
    for name, role in auth.MCP_ROLES.items():
        assert f"`{name}`" in mcp_doc, name

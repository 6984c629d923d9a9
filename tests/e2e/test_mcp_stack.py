"""The MCP server against the running stack (`udb mcp --stack <broker ingress>`), driven by the
`mcp` SDK's client: client events go through the broker, discovery through discover's HTTP API,
status and artifacts through the artifacts API, each with the caller's own API key (the stack
runs with authentication on and checks it again).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from devstack import stack
from tests.conftest import REPO
from tests.integration.test_mcp import (REVENUE_KPI, ROWS, call, expected_revenue, http_client,
                                        refused, start_http_server)
from tests.peers.rest_api import RestPeer
from tests.stack_fixtures import auth_headers, sales_in_minio

pytestmark = pytest.mark.e2e


def key(tenant: str, role: str) -> str:
    return auth_headers(tenant, role)["Authorization"].split(" ", 1)[1]


@pytest.fixture(scope="module")
def stack_env(running_stack) -> dict:
    """What `udb mcp --stack` needs besides the URL: the stack's store (API keys, warehouses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UDB_")}
    env.update(stack.function_env("mcp"))
    env.update({"UDB_OTEL_EXPORTER": "none", "UDB_LINEAGE": "none", "UDB_LOG_LEVEL": "WARNING",
                "UDB_DISCOVER_URL": stack.function_url("discover"),
                "UDB_ARTIFACTS_URL": stack.function_url("artifacts")})
    return env


def test_round_trip_through_the_stack_over_stdio(stack_env, s3_client, tenant, tmp_path):
    hint = sales_in_minio(s3_client, tenant, tmp_path, ROWS)
    params = StdioServerParameters(command=sys.executable, args=["-m", "frontends.cli", "mcp", "--stack", stack.broker_url()],
                                   env={**stack_env, "UDB_MCP_TOKEN": key(tenant, "analyst")}, cwd=str(REPO))
    kpi = {**REVENUE_KPI}

    async def scenario():
        async with Client(params, read_timeout_seconds=300) as client:
            started = time.perf_counter()
            found = await call(client, "discover_connect", hint=hint)
            assert found["state"] == "discovered" and found["ambiguous"] is False
            assert found["candidates"][0]["provider"] == "s3" and found["source"]["provider"] == "s3"
            job = found["jobId"]
            loaded = await call(client, "sync", job=job)
            [(table, info)] = loaded["tables"].items()
            assert loaded["state"] == "loaded" and info == {"rows": ROWS}
            kpi["sql"] = REVENUE_KPI["sql"].replace("sales__sales", table)
            done = await call(client, "analyze", job=job, kpis={"revenue_by_region": kpi})
            assert done["state"] == "completed", done
            elapsed = time.perf_counter() - started

            index = json.loads((await call(client, "get_artifact", job=job))["text"])
            assert index["tables"] == [table] and index["tenant"] == tenant
            [custom] = json.loads((await call(client, "get_artifact", job=job, name="kpis-custom.json"))["text"])
            assert custom["result"]["rows"] == expected_revenue()
            profile = json.loads((await call(client, "get_artifact", job=job, name=f"profile-{table}.json"))["text"])
            assert profile["rows"] == ROWS
            resource = await client.read_resource(f"udb://jobs/{job}")
            assert json.loads(resource.contents[0].text)["index"] == index

            assert (await call(client, "list_tables"))["tables"] == [{"name": table, "rows": ROWS, "columns": 5}]
            totals = await call(client, "run_kpi", sql=f"SELECT count(*) AS n, sum(amount) AS total FROM {table}")
            assert totals["rows"] == [[ROWS, 49_500.0]]
            status = await call(client, "status", job=job)
            assert set(status["stage_seconds"]) == {"discover", "sync", "load", "analyze"}
            return elapsed

    elapsed = asyncio.run(scenario())
    print(f"stack round trip over stdio (discover+sync+analyze) {elapsed:.1f} s")


@pytest.mark.security
def test_ambiguous_hint_and_roles_through_the_stack_over_http(stack_env, tenant):
    url, process = start_http_server(stack_env, "--stack", stack.broker_url())
    records = [{"id": i, "sku": f"s-{i}", "qty": i % 9} for i in range(1, 61)]
    peer = RestPeer().start()
    peer.files["stock.json"] = (json.dumps(records).encode(), "application/json")
    try:
        async def scenario():
            async with http_client(url, key(tenant, "analyst")) as analyst:
                found = await call(analyst, "discover_connect", hint=f"{peer.url}/files/stock.json")
                assert found["ambiguous"] is True
                assert [c["provider"] for c in found["candidates"][:2]] == ["http", "rest"]
                job = found["jobId"]
                chosen = await call(analyst, "choose_source", job=job, candidate="rest")
                assert chosen["source"]["provider"] == "rest"
                loaded = await call(analyst, "sync", job=job)
                [(table, info)] = loaded["tables"].items()
                assert info == {"rows": 60}
                total = await call(analyst, "run_kpi", sql=f"SELECT sum(qty) AS qty FROM {table}")
                assert total["rows"] == [[sum(r["qty"] for r in records)]]
            async with http_client(url, key(tenant, "viewer")) as viewer:
                assert (await call(viewer, "status", job=job))["state"] == "loaded"
                text = await refused(viewer, "sync", job=job)
                assert text == "Error executing tool sync: forbidden: role viewer may not call sync (needs analyst)"
            other = "o" + tenant[1:]
            async with http_client(url, key(other, "admin")) as stranger:
                text = await refused(stranger, "status", job=job)
                assert text.startswith("Error executing tool status: not found: ") and job in text

        asyncio.run(scenario())
    finally:
        peer.stop()
        process.terminate()
        process.wait(timeout=20)

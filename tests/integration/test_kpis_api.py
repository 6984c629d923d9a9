"""The KPI definition routes on the running artifacts function, over HTTP, with MinIO behind.

A small warehouse is put where the writer would put it (tenants/<t>/catalog.ducklake + lake/ in the
stack's bucket); PUT guards each definition's SQL against that warehouse's tables.
"""
from __future__ import annotations

import json

import duckdb
import httpx
import pytest

from devstack import stack
from shared.storage import lake
from tests.stack_fixtures import auth_headers, stack_tenant_store

pytestmark = [pytest.mark.integration, pytest.mark.security]

GOOD = {"title": "Amount by region", "sql": "SELECT region, sum(amount) AS total FROM sales__orders GROUP BY 1",
        "chart": {"type": "bar", "x": "region", "y": "total"}}


@pytest.fixture
def warehouse_tenant(running_stack, s3_client, tenant, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE sales__orders AS SELECT i AS order_id, ['a', 'b'][i % 2 + 1] AS region, "
                "(i % 10)::DOUBLE AS amount FROM range(100) t(i)")
    con.close()
    lake.create_from_warehouse(stack_tenant_store(tenant), path)  # the tenant's lake, as the writer leaves it
    return tenant


def kpis_url(name: str = "") -> str:
    return f"{stack.function_url('artifacts')}/kpis/{name}"


def test_put_get_list_delete(warehouse_tenant, s3_client):
    tenant = warehouse_tenant
    headers = auth_headers(tenant, "analyst")
    created = httpx.put(kpis_url("amount_by_region"), json=GOOD, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    stored = created.json()
    assert stored["tables"] == ["sales__orders"] and stored["chart"] == GOOD["chart"]
    # Stored in the tenant's own prefix, as the API returned it.
    obj = s3_client.get_object(Bucket=stack.BUCKET, Key=f"tenants/{tenant}/kpis/amount_by_region.json")
    assert json.loads(obj["Body"].read()) == stored

    replaced = httpx.put(kpis_url("amount_by_region"), json={**GOOD, "title": "By region"}, headers=headers, timeout=30)
    assert replaced.status_code == 200 and replaced.json()["title"] == "By region"
    assert replaced.json()["created_at"] == stored["created_at"]

    viewer = auth_headers(tenant, "viewer")
    one = httpx.get(kpis_url("amount_by_region"), headers=viewer, timeout=10)
    assert one.status_code == 200 and one.json()["title"] == "By region"
    listed = httpx.get(kpis_url(), headers=viewer, timeout=10)
    assert [k["name"] for k in listed.json()["kpis"]] == ["amount_by_region"]

    assert httpx.delete(kpis_url("amount_by_region"), headers=headers, timeout=10).status_code == 204
    assert httpx.get(kpis_url("amount_by_region"), headers=viewer, timeout=10).status_code == 404
    assert httpx.delete(kpis_url("amount_by_region"), headers=headers, timeout=10).status_code == 404


def test_put_refuses_bad_sql_and_bad_charts_naming_every_problem(warehouse_tenant):
    headers = auth_headers(warehouse_tenant, "analyst")
    cases = {
        "SELECT * FROM read_csv('/etc/passwd')": "table function read_csv() is not allowed",
        "ATTACH 's3://other/warehouse.duckdb' AS x": "only a SELECT is allowed, found ATTACH",
        "SELECT 1; DROP TABLE sales__orders": "exactly one statement is allowed, found 2",
        "SELECT * FROM udb_meta.batches": "schema 'udb_meta' is not allowed",
        "SELECT * FROM someone_elses": "unknown table 'someone_elses'; the tenant's tables are: sales__orders",
    }
    for sql, reason in cases.items():
        response = httpx.put(kpis_url("bad"), json={**GOOD, "sql": sql}, headers=headers, timeout=30)
        assert response.status_code == 400, (sql, response.text)
        assert reason in response.json()["problems"]["sql"]
    response = httpx.put(kpis_url("bad"), json={"sql": "SELECT 1 AS n", "chart": {"type": "radar", "y": "n"},
                                                "colour": "red"}, headers=headers, timeout=30)
    problems = response.json()["problems"]
    assert response.status_code == 400 and set(problems) == {"body", "chart"}
    assert "type must be one of bar, line, scatter, pie, indicator" in problems["chart"]
    assert httpx.put(kpis_url("Bad-Name"), json=GOOD, headers=headers, timeout=10).status_code == 400
    assert httpx.get(kpis_url("bad"), headers=headers, timeout=10).status_code == 404  # nothing stored


def test_roles_and_tenants_are_kept_apart(warehouse_tenant, tenant):
    owner = warehouse_tenant
    assert httpx.put(kpis_url("k"), json=GOOD, headers=auth_headers(owner, "viewer"), timeout=10).status_code == 403
    assert httpx.put(kpis_url("k"), json=GOOD, headers=auth_headers(owner, "analyst"), timeout=30).status_code == 201
    other = tenant + "x"
    assert httpx.get(kpis_url("k"), headers=auth_headers(other, "admin"), timeout=10).status_code == 404
    # Another tenant has no warehouse: its KPIs cannot be checked, so none can be stored.
    response = httpx.put(kpis_url("k"), json=GOOD, headers=auth_headers(other, "analyst"), timeout=30)
    assert response.status_code == 400 and "has no warehouse yet" in response.json()["error"]

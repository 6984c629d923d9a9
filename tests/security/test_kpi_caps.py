"""KPIs bounded in bytes and in number (outside probe, finding 6). One KPI returning five
10 MB cells once made a 50 MB JSON, a 50 MB chart and a 10 MB index.html; a tenant could store
any number of definitions. Now text cells are cut at UDB_KPI_MAX_CELL_CHARS and a result's rows
kept within UDB_KPI_MAX_BYTES before anything is written, and the definitions API refuses the
definition past UDB_KPI_MAX_DEFINITIONS with a 409 naming the cap."""
from __future__ import annotations

import csv
import json
import tracemalloc

import duckdb
import httpx
import pytest

from functions.analyze import kpis
from shared.analysis.kpi_defs import KpiDefinitions, warehouse_tables
from shared.core import events
from shared.serving.embedded import Dispatcher
from shared.core.settings import Settings
from shared.storage.backends import open_store
from shared.storage.store import TenantStore
from shared.core.tenancy import new_job_id
from tests.conftest import REPO
from tests.security.artifacts_process import artifacts_process

pytestmark = pytest.mark.security
TENANT = "acme"
TEN_MB = 10_000_000


def publish(settings: Settings, kind: str, data: dict) -> dict:
    dispatcher = Dispatcher(settings)
    job_id = new_job_id()
    dispatcher.publish(events.make_event(kind, data, tenant=TENANT, job_id=job_id, function="test"))
    return dispatcher.context("cli").jobs(TENANT).get(job_id)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A tenant with a small table in its warehouse: (settings, store, table)."""
    tmp = tmp_path_factory.mktemp("caps")
    settings = Settings.from_env(env={}, home=tmp / "udb", eventing_dir=REPO / "eventing", chart_png=False,
                                 log_level="WARNING")
    path = tmp / "shop" / "orders.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "region", "amount"])
        out.writerows([i, ["north", "south"][i % 2], i * 1.5] for i in range(20))
    job = publish(settings, events.DISCOVER_REQUESTED, {"hint": str(path)})
    assert job["state"] == "completed", job.get("error")
    store = TenantStore(open_store(settings), TENANT)
    return settings, store, warehouse_tables(store)[0]


def test_a_kpi_of_five_10_mb_cells_is_cut_before_its_json_chart_and_index_are_written(loaded):
    settings, store, table = loaded
    cells = ", ".join(f"repeat('{ch}', {TEN_MB}) AS {ch}" for ch in "abcde")
    KpiDefinitions(store).put("huge", {"sql": f"SELECT {cells}, count(*) AS n FROM {table}",
                                       "chart": {"type": "bar", "x": "a", "y": "n"}}, [table])
    try:
        tracemalloc.start()
        job = publish(settings, events.ANALYZE_REQUESTED, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        KpiDefinitions(store).delete("huge")
    assert job["state"] == "completed", job.get("error")
    files = {info.key.rsplit("/", 1)[-1]: store.get(info.key).data for info in store.list(f"artifacts/{job['job_id']}/")}

    (huge,) = json.loads(files["kpis-custom.json"])
    result = huge["result"]
    cut = settings.kpi_max_cell_chars  # 10,000 by default
    assert result["rows"] == [[ch * cut + kpis.CUT_MARK for ch in "abcde"] + [20]]
    assert result["cells_cut"] == 5 and result["truncated"] is False and result["capped_by"] is None
    # The rows as compact JSON: five cut cells (10,000 characters, "…[cut]" = 8 bytes, 2 quotes),
    # the count (2), 5 commas and two pairs of brackets: exactly 50,061 bytes, far inside the 1 MiB cap.
    assert kpis._json_bytes(result["rows"]) == 5 * (cut + 8 + 2) + 2 + 5 + 4 == 50_061
    # What is written is bounded by the cut cells, not by the 50 MB the query returned.
    assert len(files["kpis-custom.json"]) < 52_000
    assert len(files["chart-kpi-huge.html"]) < 25_000  # the x label only: one cut cell
    # The page and the summary show the result's one row (its five cut cells) in a sentence.
    assert len(files["index.html"]) < 60_000 and len(files["summary.md"]) < 60_000
    notes = json.loads(files["index.json"])["notes"]
    assert {"kind": "kpi_capped", "message": "1 KPI result(s) cut to the byte cap (1,048,576 bytes per result, "
            "10,000 characters per cell): huge"} in notes
    # Python never held more than the one row of 10 MB cells (5 x 10 MB) and the reports of a
    # 20-row table at once.
    assert peak < 120 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


def test_rows_are_kept_whole_within_the_byte_cap(tmp_path):
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    con = kpis.open_kpi_connection(path)
    try:
        result = kpis.run_kpi(con, {"name": "wide", "sql": "SELECT repeat('z', 300) AS s FROM range(5000)"},
                              max_bytes=1024 * 1024)
    finally:
        con.close()
    # Each row is ["zzz…"] (304 bytes) plus a comma: 2 + 304 k + (k - 1) <= 1,048,576 gives
    # k = 3,437 rows, 1,048,286 bytes; one more row would make 1,048,591.
    assert result["row_count"] == 3437 and result["truncated"] is True and result["capped_by"] == "bytes"
    assert kpis._json_bytes(result["rows"]) == 1_048_286
    assert result["cells_cut"] == 0


def test_the_definition_past_the_tenants_cap_gets_409_from_the_real_server(loaded, tmp_path):
    settings, store, table = loaded
    for name in KpiDefinitions(store).names():
        KpiDefinitions(store).delete(name)
    headers = {"X-UDB-Tenant": TENANT}
    body = {"sql": f"SELECT region, count(*) AS n FROM {table} GROUP BY region", "chart": {"type": "bar", "x": "region", "y": "n"}}
    with artifacts_process(settings.home, tmp_path / "artifacts.log", UDB_KPI_MAX_DEFINITIONS="3") as base:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            assert [client.put(f"/kpis/k{i}", json=body).status_code for i in range(3)] == [201, 201, 201]
            refused = client.put("/kpis/k3", json=body)
            assert refused.status_code == 409
            assert refused.json() == {
                "error": "tenant acme already has 3 KPI definitions, the most allowed (UDB_KPI_MAX_DEFINITIONS=3): "
                         "delete one before adding another", "count": 3, "limit": 3}
            assert client.put("/kpis/k1", json=body).status_code == 200  # replacing one is allowed
            assert client.delete("/kpis/k0").status_code == 204
            assert client.put("/kpis/k3", json=body).status_code == 201
            assert [k["name"] for k in client.get("/kpis/").json()["kpis"]] == ["k1", "k2", "k3"]
    assert KpiDefinitions(store).names() == ["k1", "k2", "k3"]  # nothing else was stored
    for name in ("k1", "k2", "k3"):
        KpiDefinitions(store).delete(name)

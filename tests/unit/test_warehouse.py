"""frontends/mcp_server/warehouse.py: the tenant's warehouse read-only for list_tables,
describe_table and run_kpi, on a real lake in a LocalStore (loaded by the writer, as in
test_lake.py)."""
from __future__ import annotations

import pytest

from frontends.mcp_server.warehouse import DESCRIBE_SAMPLE_ROWS, Warehouse
from shared.core.errors import InputError, NotFound
from shared.core.settings import Settings
from shared.serving import runtime
from tests.conftest import LOOPBACK, REPO
from shared.security.sqlguard import SQLRejected
from tests.unit.test_lake import TENANT, load

pytestmark = pytest.mark.unit

ROWS_SQL = ("SELECT i AS id, 'user' || i || '@example.com' AS email, (i % 3)::INTEGER AS grp, i * 1.5 AS amount "
            "FROM range(12) r(i)")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """One lake for the module (loading it takes the writer most of a second), read-only after."""
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("warehouse") / "udb",
                                 eventing_dir=REPO / "eventing", log_level="WARNING", net_allowlist=LOOPBACK)
    contexts: dict = {}

    def ctx_for(function):
        return contexts.setdefault(function, runtime.start(function, settings))

    load(ctx_for, "job-00000000000000f1", ROWS_SQL, table="src__people")
    load(ctx_for, "job-00000000000000f2", "SELECT 1 AS id", table="src__one")
    ctx = ctx_for("writer")
    return Warehouse(ctx.settings, ctx.store)


def test_tables(warehouse):
    assert warehouse.tables(TENANT) == [{"name": "src__one", "rows": 1, "columns": 1},
                                        {"name": "src__people", "rows": 12, "columns": 4}]


def test_a_tenant_without_a_warehouse(warehouse):
    with pytest.raises(NotFound, match="tenant other has no warehouse yet: discover and sync a source first"):
        warehouse.tables("other")


def test_describe_masks_the_sample(warehouse):
    described = warehouse.describe(TENANT, "SRC__People")          # names compare case-insensitively
    assert (described["name"], described["rows"]) == ("src__people", 12)
    assert described["columns"] == [
        {"name": "id", "type": "BIGINT", "nullable": True}, {"name": "email", "type": "VARCHAR", "nullable": True},
        {"name": "grp", "type": "INTEGER", "nullable": True}, {"name": "amount", "type": "DECIMAL(21,1)", "nullable": True}]
    assert len(described["sample"]) == DESCRIBE_SAMPLE_ROWS == 5
    assert described["pii_masked"] is True
    assert described["sample"] == [[i, "u***@example.com", i % 3, i * 1.5] for i in range(5)]
    with pytest.raises(NotFound, match=r"no table 'nope' in the warehouse of tenant acme; it has: src__one, src__people"):
        warehouse.describe(TENANT, "nope")


def test_run_kpi(warehouse):
    result = warehouse.run_kpi(TENANT, "SELECT grp, count(*) AS n, sum(amount) AS total FROM src__people "
                                       "GROUP BY grp ORDER BY grp", max_rows=100)
    assert result["columns"] == ["grp", "n", "total"]
    assert [r[:2] for r in result["rows"]] == [[0, 4], [1, 4], [2, 4]]
    assert [float(r[2]) for r in result["rows"]] == [sum(i * 1.5 for i in range(12) if i % 3 == g) for g in range(3)]
    assert (result["row_count"], result["truncated"], result["tables"]) == (3, False, ["src__people"])


def test_run_kpi_caps_rows(warehouse):
    capped = warehouse.run_kpi(TENANT, "SELECT id FROM src__people ORDER BY id", max_rows=5)
    assert (capped["rows"], capped["truncated"]) == ([[0], [1], [2], [3], [4]], True)


def test_run_kpi_masks_personal_data(warehouse):
    mails = warehouse.run_kpi(TENANT, "SELECT lower(email) AS e FROM src__people ORDER BY id LIMIT 1", max_rows=1)
    assert (mails["pii_masked"], mails["rows"]) == (True, [["u***@example.com"]])


@pytest.mark.parametrize("sql", ["DELETE FROM src__people", "SELECT * FROM read_csv('/etc/passwd')",
                                 "SELECT * FROM other_tenant_table"])
def test_run_kpi_refuses_what_the_guard_refuses(warehouse, sql):
    with pytest.raises(SQLRejected):
        warehouse.run_kpi(TENANT, sql, max_rows=10)


@pytest.mark.parametrize("max_rows", [0, -1, "10", None])
def test_run_kpi_needs_a_positive_row_cap(warehouse, max_rows):
    with pytest.raises(InputError, match=f"max_rows must be a positive integer, found {max_rows!r}"):
        warehouse.run_kpi(TENANT, "SELECT 1", max_rows=max_rows)

"""shared/analysis/kpi_defs.py: the KPI definitions a tenant stores, checked when stored."""
from __future__ import annotations

import json

import pytest

from shared.analysis import kpi_defs
from shared.core.errors import InputError, NotFound, ValidationError
from shared.storage.store import LocalStore, TenantStore

pytestmark = pytest.mark.unit

TABLES = ["files__sales"]
BODY = {"title": " Revenue by region ", "sql": "SELECT region, sum(revenue) AS revenue FROM files__sales GROUP BY 1",
        "chart": {"type": "bar", "x": "region", "y": "revenue"}}


@pytest.fixture
def store(tmp_path):
    return TenantStore(LocalStore(tmp_path / "store"), "acme")


@pytest.mark.parametrize("name", ["a", "revenue_by_region", "k" + "1" * 47])
def test_valid_names(name):
    assert kpi_defs.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Revenue", "1st", "_x", "a-b", "k" * 49, "a/b", None])
def test_invalid_names(name):
    with pytest.raises(InputError, match="invalid KPI name"):
        kpi_defs.validate_name(name)


def test_a_definition_is_normalised():
    definition = kpi_defs.validate_definition("revenue", {**BODY, "name": "revenue",
                                                          "chart": {**BODY["chart"], "x": "region"}}, TABLES)
    assert definition == {"name": "revenue", "title": "Revenue by region", "description": "", "sql": BODY["sql"],
                          "chart": {"type": "bar", "x": "region", "y": "revenue"}, "tables": ["files__sales"]}
    indicator = kpi_defs.validate_definition("total", {"sql": "SELECT count(*) AS n FROM files__sales",
                                                       "chart": {"type": "indicator", "y": "n"}}, TABLES)
    assert indicator["title"] == "total" and indicator["chart"] == {"type": "indicator", "y": "n"}


def test_every_problem_is_named_at_once():
    body = {"name": "other", "title": "", "description": 5, "sql": "DELETE FROM files__sales",
            "chart": {"type": "donut", "y": "n"}, "colour": "red"}
    with pytest.raises(ValidationError) as error:
        kpi_defs.validate_definition("revenue", body, TABLES)
    problems = error.value.problems
    assert set(problems) == {"body", "name", "title", "description", "sql", "chart"}
    assert problems["body"] == "unknown fields ['colour']; allowed: ['chart', 'description', 'name', 'sql', 'title']"
    assert problems["name"] == "the body names 'other' but the path names 'revenue'"
    assert problems["chart"] == "type must be one of bar, line, scatter, pie, indicator; found 'donut'"
    with pytest.raises(ValidationError, match="invalid KPI definition") as error:
        kpi_defs.validate_definition("revenue", ["not", "an", "object"], TABLES)
    assert error.value.problems == {"body": "expected a JSON object, found list"}


def test_sql_on_tables_the_tenant_does_not_have_is_refused():
    with pytest.raises(ValidationError) as error:
        kpi_defs.validate_definition("x", {**BODY, "sql": "SELECT * FROM other_tenant_table"}, TABLES)
    assert "other_tenant_table" in error.value.problems["sql"]


@pytest.mark.parametrize("chart,problem", [
    ("bar", "expected an object {type, x, y}"),
    ({"type": "bar", "x": "a", "y": "b", "z": 1}, "unknown chart fields ['z']; allowed: ['type', 'x', 'y']"),
    ({"type": "bar", "x": "a"}, "y must name a result column, or a list of 1 to 10 of them"),
    ({"type": "bar", "x": "a", "y": []}, "y must name a result column, or a list of 1 to 10 of them"),
    ({"type": "bar", "x": "a", "y": [f"c{i}" for i in range(11)]}, "y must name a result column, or a list of 1 to 10 of them"),
    ({"type": "bar", "x": "a", "y": ["ok", ""]}, "y must name a result column, or a list of 1 to 10 of them"),
    ({"type": "line", "y": "b"}, "x must name a result column for a line chart"),
    ({"type": "indicator", "x": 3, "y": "b"}, "x must be a column name"),
    ({"type": "pie", "x": "a", "y": ["b"] * 10}, None),
])
def test_chart_problems(chart, problem):
    assert kpi_defs._chart_problem(chart) == problem


def test_check_result_columns():
    definition = {"chart": {"type": "bar", "x": "region", "y": ["revenue", "orders"]}}
    assert kpi_defs.check_result_columns(definition, ["region", "revenue", "orders"]) is None
    assert kpi_defs.check_result_columns(definition, ["region", "revenue"]) == \
        "the chart names columns the query does not return: ['orders']; it returns ['region', 'revenue']"
    assert kpi_defs.check_result_columns({"chart": {"type": "indicator", "y": "n"}}, ["n"]) is None


def test_store_get_list_and_delete(store):
    kpis = kpi_defs.KpiDefinitions(store)
    stored, created = kpis.put("revenue", BODY, TABLES)
    assert created is True and stored["created_at"] == stored["updated_at"]
    assert json.loads(store.get("kpis/revenue.json").data) == stored
    again, created = kpis.put("revenue", {**BODY, "title": "Revenue"}, TABLES)
    assert created is False and again["created_at"] == stored["created_at"] and again["title"] == "Revenue"
    kpis.put("count_all", {"sql": "SELECT count(*) AS n FROM files__sales", "chart": {"type": "indicator", "y": "n"}},
             TABLES)
    store.put("kpis/nested/ignored.json", b"{}")
    store.put("kpis/readme.txt", b"not a definition")
    assert kpis.names() == ["count_all", "revenue"]
    assert [d["name"] for d in kpis.list()] == ["count_all", "revenue"]
    assert kpis.get("revenue")["title"] == "Revenue"
    kpis.delete("revenue")
    assert kpis.names() == ["count_all"]
    with pytest.raises(NotFound, match="no KPI named 'revenue'"):
        kpis.get("revenue")
    with pytest.raises(NotFound, match="no KPI named 'revenue'"):
        kpis.delete("revenue")


def test_the_cap_counts_new_definitions_only(store):
    kpis = kpi_defs.KpiDefinitions(store, max_definitions=2)
    kpis.put("a", BODY, TABLES)
    kpis.put("b", BODY, TABLES)
    with pytest.raises(kpi_defs.TooManyKpis) as error:
        kpis.put("c", BODY, TABLES)
    assert (error.value.count, error.value.limit) == (2, 2)
    assert str(error.value) == ("tenant acme already has 2 KPI definitions, the most allowed "
                                "(UDB_KPI_MAX_DEFINITIONS=2): delete one before adding another")
    assert kpis.put("b", {**BODY, "title": "replaced"}, TABLES)[1] is False   # replacing is always allowed
    assert kpis.names() == ["a", "b"]


def test_a_tenant_without_a_warehouse(store):
    with pytest.raises(InputError, match="tenant acme has no warehouse yet: load a source before defining KPIs"):
        kpi_defs.warehouse_tables(store)

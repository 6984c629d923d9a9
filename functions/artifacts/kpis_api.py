"""HTTP routes for the KPI definitions a tenant stores (served by the artifacts function).

    PUT    /kpis/{name}   store or replace a definition {sql, chart: {type, x, y}, title?, description?}
    GET    /kpis/         every definition of the tenant
    GET    /kpis/{name}   one definition
    DELETE /kpis/{name}   remove it

The tenant comes from the `X-UDB-Tenant` header, as for the artifact routes. A PUT runs the
SQL guard against the tenant's warehouse tables and answers 400 with every problem found
(the guard's reasons under `problems.sql`), and 409 to a new definition past the tenant's cap
(UDB_KPI_MAX_DEFINITIONS); the analysis checks each definition again
before it runs it.
"""
from __future__ import annotations

from shared.analysis.kpi_defs import KpiDefinitions, TooManyKpis, validate_name, warehouse_tables
from functions.artifacts.handler import _tenant
from shared.core.errors import InputError, NotFound
from shared.serving.httpfn import json_response
from shared.serving.runtime import Context

PREFIX = "/kpis"


def _name(request) -> str | None:
    """The {name} of /kpis/{name}; None for /kpis and /kpis/."""
    rest = request.path[len(PREFIX):].strip("/")
    if not rest:
        return None
    if "/" in rest:
        raise NotFound(f"no route {request.path}")
    return validate_name(rest)


def put_kpi(request, ctx: Context):
    """PUT /kpis/{name}: 201 when created, 200 when replaced; 400 naming every problem; 409 when
    the tenant already has UDB_KPI_MAX_DEFINITIONS definitions and this one is new."""
    name = _name(request)
    if name is None:
        raise InputError("PUT needs a KPI name: PUT /kpis/{name}")
    store = ctx.tenant_store(_tenant(request))
    body = request.get_json(silent=True)
    if body is None:
        raise InputError("expected a JSON body {sql, chart: {type, x, y}, title?, description?}")
    definitions = KpiDefinitions(store, max_definitions=ctx.settings.kpi_max_definitions)
    try:
        definition, created = definitions.put(name, body, warehouse_tables(store))
    except TooManyKpis as exc:
        return json_response({"error": str(exc), "count": exc.count, "limit": exc.limit}, 409)
    return json_response(definition, 201 if created else 200)


def get_kpi(request, ctx: Context):
    """GET /kpis/ (every definition, as {kpis: [...]}) and GET /kpis/{name}."""
    name = _name(request)
    definitions = KpiDefinitions(ctx.tenant_store(_tenant(request)))
    if name is None:
        return json_response({"kpis": definitions.list()})
    return json_response(definitions.get(name))


def delete_kpi(request, ctx: Context):
    """DELETE /kpis/{name}: 204, or 404 when there is no such KPI."""
    name = _name(request)
    if name is None:
        raise InputError("DELETE needs a KPI name: DELETE /kpis/{name}")
    KpiDefinitions(ctx.tenant_store(_tenant(request))).delete(name)
    return "", 204, {}


ROUTES = [("PUT", PREFIX, put_kpi), ("GET", PREFIX, get_kpi), ("DELETE", PREFIX, delete_kpi)]

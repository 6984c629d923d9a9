"""functions/artifacts/routes.py: every HTTP route the artifacts function serves, against its
OpenAPI document (docs the API promises) and the system routes the PingSources call."""
from __future__ import annotations

import re

import pytest

from functions.artifacts.routes import ROUTES
from shared.security.auth import SYSTEM_ROUTES
from shared.serving import openapi

pytestmark = pytest.mark.unit

# Served by every function's FunctionApp itself, not by a route of the table.
BUILT_IN = {"/", "/openapi.json", "/openapi.yaml", "/healthz", "/readyz", "/startupz", "/metrics"}


def _reached(method: str, path: str):
    """The handler FunctionApp picks for a request: the first route of the same method whose
    prefix is the path or a parent of it (shared/serving/httpfn.py)."""
    for route_method, prefix, fn in ROUTES:
        if method == route_method and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
            return fn
    return None


def _name(fn) -> str:
    return f"{fn.__module__}.{fn.__name__}"


def test_the_route_table():
    assert [(m, p, _name(f)) for m, p, f in ROUTES] == [
        ("GET", "/status/", "functions.artifacts.handler.status"),
        ("GET", "/artifact/", "functions.artifacts.handler.artifact"),
        ("GET", "/s/", "functions.artifacts.signed_links.open_link"),
        ("PUT", "/kpis", "functions.artifacts.kpis_api.put_kpi"),
        ("GET", "/kpis", "functions.artifacts.kpis_api.get_kpi"),
        ("DELETE", "/kpis", "functions.artifacts.kpis_api.delete_kpi"),
        ("POST", "/admin/prune", "functions.artifacts.admin.prune_route"),
        ("POST", "/admin/redrive", "functions.artifacts.redrive.redrive_route"),
        ("POST", "/uploads", "functions.artifacts.uploads.upload"),
        ("PUT", "/sources/", "functions.artifacts.schedules_api.put_schedule"),
        ("GET", "/sources/", "functions.artifacts.schedules_api.get_schedule"),
        ("DELETE", "/sources/", "functions.artifacts.schedules_api.delete_schedule"),
        ("POST", "/admin/schedules/tick", "functions.artifacts.schedules_api.tick_route"),
        ("GET", "/oauth/callback", "shared.sources.oauth.routes.callback"),
        ("POST", "/oauth/device", "shared.sources.oauth.routes.device"),
    ]


def test_no_route_hides_another():
    for i, (method, prefix, _) in enumerate(ROUTES):
        for later_method, later_prefix, later in ROUTES[i + 1:]:
            if later_method == method:
                assert _reached(method, later_prefix) is later, f"{method} {later_prefix} is shadowed by {prefix}"


def _documented() -> list[tuple[str, str]]:
    doc = openapi.document("artifacts")
    return [(verb.upper(), path) for path, item in doc["paths"].items() if path not in BUILT_IN
            for verb in item if verb in ("get", "put", "post", "delete", "patch")]


def test_every_documented_operation_reaches_its_handler():
    expected = {
        ("GET", "/status/{jobId}"): "handler.status",
        ("GET", "/artifact/{jobId}/"): "handler.artifact",
        ("GET", "/artifact/{jobId}/{name}"): "handler.artifact",
        ("GET", "/s/{token}/artifact/{jobId}/"): "signed_links.open_link",
        ("GET", "/s/{token}/artifact/{jobId}/{name}"): "signed_links.open_link",
        ("GET", "/kpis/"): "kpis_api.get_kpi",
        ("GET", "/kpis/{name}"): "kpis_api.get_kpi",
        ("PUT", "/kpis/{name}"): "kpis_api.put_kpi",
        ("DELETE", "/kpis/{name}"): "kpis_api.delete_kpi",
        ("POST", "/uploads"): "uploads.upload",
        ("GET", "/oauth/callback"): "oauth.routes.callback",
        ("POST", "/oauth/device"): "oauth.routes.device",
        ("POST", "/oauth/device/{deviceId}"): "oauth.routes.device",
        ("POST", "/admin/prune"): "admin.prune_route",
        ("POST", "/admin/redrive"): "redrive.redrive_route",
        ("GET", "/sources/{sourceId}/schedule"): "schedules_api.get_schedule",
        ("PUT", "/sources/{sourceId}/schedule"): "schedules_api.put_schedule",
        ("DELETE", "/sources/{sourceId}/schedule"): "schedules_api.delete_schedule",
        ("POST", "/admin/schedules/tick"): "schedules_api.tick_route",
    }
    documented = _documented()
    assert sorted(documented) == sorted(expected)
    for method, template in documented:
        path = re.sub(r"\{[^}]+\}", "x1", template)
        fn = _reached(method, path)
        assert fn is not None and _name(fn).endswith(expected[(method, template)]), (method, template)


def test_every_route_is_documented():
    documented = _documented()
    for method, prefix, _ in ROUTES:
        assert any(m == method and (p.startswith(prefix.rstrip("/") + "/") or p == prefix.rstrip("/"))
                   for m, p in documented), f"{method} {prefix} is not in the OpenAPI document"


def test_the_system_routes_are_served_here():
    assert SYSTEM_ROUTES <= {(m, p) for m, p, _ in ROUTES}

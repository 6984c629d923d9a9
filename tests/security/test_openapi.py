"""The OpenAPI documents: served, in step with the routes and the role table, and the artifacts
API fuzzed by schemathesis from its own document (the real functions-framework app, with
authentication on and a tenant holding a job, its artifacts and an API key)."""
from __future__ import annotations

import importlib
import json
import re
from collections import Counter

import pytest
import schemathesis
import yaml
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance
from hypothesis import HealthCheck, settings

from shared.security import auth
from tests.conftest import REPO

pytestmark = pytest.mark.security
JOB = "job-00000000000000c1"
RUNS: Counter = Counter()


def _document(function: str) -> dict:
    return yaml.safe_load((REPO / "functions" / function / "openapi.yaml").read_text())


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


@pytest.mark.parametrize("function", ["artifacts", "discover"])
def test_every_route_is_documented_with_the_role_the_table_gives_it(function):
    doc = _document(function)
    app = importlib.import_module(f"functions.{function}.main").app
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops
                  if method in ("get", "put", "post", "delete", "patch")}
    missing = []
    for method, prefix, _ in app.routes:
        if not any(m == method and (_concrete(p) == prefix or _concrete(p).startswith(prefix.rstrip("/") + "/")
                                    or _concrete(p).rstrip("/") == prefix.rstrip("/"))
                   for m, p in documented):
            missing.append(f"{method} {prefix}")
    if app.handle is not None:
        assert ("POST", "/") in documented
    assert missing == [], f"routes missing from functions/{function}/openapi.yaml"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method not in ("get", "put", "post", "delete"):
                continue
            assert op["x-udb-role"] == auth.required_role(method.upper(), _concrete(path)), (method, path)
            public = op.get("security") == []
            # A signed link's credential is its path, which OpenAPI security cannot describe.
            assert public == (op["x-udb-role"] in (auth.PUBLIC, auth.SIGNED_LINK)), (method, path)


def test_the_documents_are_served_as_json_and_yaml(app_for):
    for function in ("artifacts", "discover"):
        client, _ = app_for(function)
        as_json = client.get("/openapi.json")
        assert as_json.status_code == 200 and as_json.get_json() == _document(function)
        as_yaml = client.get("/openapi.yaml")
        assert as_yaml.status_code == 200 and yaml.safe_load(as_yaml.data) == _document(function)
    client, _ = app_for("sync")
    assert client.get("/openapi.json").status_code == 404


# Loaded from the file at import (for the parametrisation); each case is sent to the app of
# `artifacts_app`. (schemathesis.pytest.from_fixture would load it from the app, but 4.32.5
# breaks on pytest 9: it sets `request.node._nodeid`.)
schema = schemathesis.openapi.from_dict(_document("artifacts"))


@pytest.fixture(scope="module")
def artifacts_app(tmp_path_factory):
    """(the real artifacts app, authentication on, tenant acme holding a job and its artifacts;
    an analyst key of acme)."""
    from functions_framework import create_app
    from shared.serving import runtime
    from shared.core.settings import Settings
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("schemathesis-home")
    for name, value in {"UDB_HOME": str(home), "UDB_LOG_LEVEL": "CRITICAL", "UDB_AUTH": "on",
                        "UDB_RATE_LIMIT": "0", "UDB_BROKER_TOKEN": "broker-" + "b" * 32}.items():
        mp.setenv(name, value)
    app = create_app(target="http", source=str(REPO / "functions" / "artifacts" / "main.py"))
    ctx = runtime.start("schemathesis", Settings.from_env())
    ctx.jobs("acme").create(JOB, hint="x")
    store = ctx.tenant_store("acme")
    store.put(store.artifact_key(JOB, "summary.md"), b"# summary")
    store.put(store.artifact_key(JOB, "index.json"), json.dumps({"job_id": JOB, "tenant": "acme", "tables": [],
                                                                 "artifacts": [{"name": "summary.md", "media_type":
                                                                                "text/markdown", "bytes": 9}]}).encode())
    yield app, auth.KeyStore(ctx.store).create("acme", "analyst")[0]
    mp.undo()


@pytest.fixture(scope="module", autouse=True)
def report_runs():
    yield
    if RUNS:
        path = REPO / ".pytest_cache" / "udb-fuzz-counts.json"
        path.parent.mkdir(exist_ok=True)
        previous = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**previous, **{f"schemathesis {k}": v for k, v in RUNS.items()}},
                                   indent=2, sort_keys=True))
        print("\nschemathesis cases: " + ", ".join(f"{k}={v}" for k, v in sorted(RUNS.items())))


@schema.parametrize()
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
def test_the_artifacts_api_conforms_to_its_document_under_fuzzing(case, artifacts_app):
    app, api_key = artifacts_app
    case.operation.schema.app = app  # WSGI transport: the functions-framework app itself
    RUNS[f"{case.method} {case.path}"] += 1
    # acme's credentials; a generated X-UDB-Tenant other than acme gets its documented 403.
    headers = {"Authorization": f"Bearer {api_key}"}
    # Two checks do not fit: Allow lists what a route *prefix* takes (PUT/DELETE /kpis/{name}
    # share /kpis/ with GET), and a schema-valid KPI still gets 400 when its SQL fails the guard
    # or the tenant has no warehouse (validation beyond the schema). Every other check applies:
    # no 5xx, documented status codes, content types, headers and bodies, invalid data refused,
    # and `ignored_auth` (the same request without credentials must be refused).
    case.call_and_validate(headers=headers, app=app,
                           excluded_checks=[allow_header_conformance, positive_data_acceptance])

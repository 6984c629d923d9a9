"""Isolation between tenants through the embedded dispatcher and the artifacts app: no read, list
or event crossing, guessed job ids included; and an audit of every raw store access."""
from __future__ import annotations

import ast
import json
import secrets
from pathlib import Path

import pytest

from shared.core import events
from shared.serving.embedded import Dispatcher
from shared.core.errors import NotFound
from shared.core.tenancy import new_job_id
from tests.conftest import REPO, write_sales
from tests.security.conftest import bearer, new_key

pytestmark = pytest.mark.security
A, B = "acme", "beta"


def run(dispatcher: Dispatcher, tenant: str, event_type: str, data: dict, job_id: str | None = None):
    """Publish one client event; returns (job document, every event the run produced)."""
    job_id = job_id or new_job_id()
    seen = dispatcher.publish(events.make_event(event_type, data, tenant=tenant, job_id=job_id, function="test"))
    return dispatcher.context("cli").jobs(tenant).get(job_id), seen


@pytest.fixture
def two_tenants(settings, tmp_path):
    """acme: 300 sales rows, analysed; beta: 200 rows, loaded only."""
    dispatcher = Dispatcher(settings)
    a_doc, a_events = run(dispatcher, A, events.DISCOVER_REQUESTED,
                          {"hint": str(write_sales(tmp_path / "a" / "sales.csv", 300))})
    b_doc, b_events = run(dispatcher, B, events.DISCOVER_REQUESTED,
                          {"hint": str(write_sales(tmp_path / "b" / "orders.csv", 200)), "autoanalyze": False})
    assert a_doc["state"] == "completed" and b_doc["state"] == "loaded"
    return dispatcher, a_doc, a_events, b_doc, b_events


def test_every_event_of_a_job_carries_only_its_tenant(two_tenants):
    _, a_doc, a_events, b_doc, b_events = two_tenants
    for tenant, doc, seen in ((A, a_doc, a_events), (B, b_doc, b_events)):
        assert len(seen) >= 4
        for event in seen:
            attrs = event.get_attributes()
            assert (attrs["tenant"], attrs["partitionkey"], attrs["jobid"]) == (tenant, tenant, doc["job_id"])
            other = B if tenant == A else A
            assert f"tenants/{other}/" not in json.dumps(events.event_data(event))


def test_no_read_or_list_crosses_tenants_in_the_store(two_tenants, ctx_for):
    dispatcher, a_doc, _, b_doc, _ = two_tenants
    ctx = dispatcher.context("cli")
    a_keys = [i.key for i in ctx.tenant_store(A).list()]
    b_keys = [i.key for i in ctx.tenant_store(B).list()]
    assert a_keys and b_keys
    assert not any(a_doc["job_id"] in k for k in b_keys) and not any(b_doc["job_id"] in k for k in a_keys)
    assert "catalog.ducklake" in a_keys and "catalog.ducklake" in b_keys  # one warehouse (lake) each
    assert any(k.startswith("lake/main/") for k in a_keys) and any(k.startswith("lake/main/") for k in b_keys)
    raw = [i.key for i in ctx.store.list("tenants/")]
    assert sorted(raw) == sorted([f"tenants/{A}/{k}" for k in a_keys] + [f"tenants/{B}/{k}" for k in b_keys])
    with pytest.raises(NotFound):
        ctx.jobs(B).get(a_doc["job_id"])
    for name in ("../acme/warehouse.duckdb", "/tenants/acme/warehouse.duckdb", "x/../../acme/jobs"):
        with pytest.raises(Exception) as info:
            ctx.tenant_store(B).get(name)
        assert type(info.value).__name__ == "InputError"


def test_artifacts_over_http_never_cross_tenants_even_for_guessed_job_ids(two_tenants, app_for):
    dispatcher, a_doc, _, b_doc, _ = two_tenants
    client, ctx = app_for("artifacts", UDB_RATE_LIMIT=0)  # guessing 250 ids would hit the limit first
    a_key, b_key = new_key(ctx, A, "viewer"), new_key(ctx, B, "admin")
    a_job, b_job = a_doc["job_id"], b_doc["job_id"]
    index = client.get(f"/artifact/{a_job}/", headers=bearer(a_key)).get_json()
    names = [entry["name"] for entry in index["artifacts"]]
    assert len(names) >= 5
    for name in names:
        assert client.get(f"/artifact/{a_job}/{name}", headers=bearer(a_key)).status_code == 200
        assert client.get(f"/artifact/{a_job}/{name}", headers=bearer(b_key)).status_code == 404
    for path in (f"/status/{a_job}", f"/artifact/{a_job}/", f"/artifact/{a_job}/index.json"):
        response = client.get(path, headers=bearer(b_key))
        assert response.status_code == 404 and a_job in response.get_json()["error"]
        assert client.get(path, headers=bearer(b_key, **{"X-UDB-Tenant": A})).status_code == 403
    assert client.get(f"/status/{b_job}", headers=bearer(a_key)).status_code == 404
    guessed = [new_job_id() for _ in range(200)]
    assert {client.get(f"/status/{job}", headers=bearer(b_key)).status_code for job in guessed} == {404}
    assert {client.get(f"/artifact/{job}/", headers=bearer(b_key)).status_code for job in guessed[:50]} == {404}
    traversals = [f"/artifact/{a_job}/..%2F..%2F..%2F{A}%2Fjobs%2F{a_job}.json",
                  f"/artifact/..%2F..%2F{A}%2Fartifacts%2F{a_job}/index.json",
                  f"/artifact/{a_job}/%2E%2E", f"/artifact/{a_job}/.index.json",
                  f"/status/..%2F..%2F{A}%2Fjobs%2F{a_job}", f"/artifact/{a_job}/a%00b",
                  f"/artifact/{b_job}/..%252F..%252F{A}", "/artifact/job-" + "0" * 16 + "/../../acme"]
    for path in traversals:
        response = client.get(path, headers=bearer(b_key))
        assert response.status_code in (400, 404), path
        assert a_job.encode() not in response.data or b"error" in response.data
    assert client.get("/kpis/", headers=bearer(b_key)).get_json() == {"kpis": []}


def test_events_naming_another_tenants_source_job_or_tables_fail_in_their_own_tenant(two_tenants):
    dispatcher, a_doc, _, b_doc, _ = two_tenants
    ctx = dispatcher.context("cli")
    a_store = ctx.tenant_store(A)
    before = {i.key: i.etag for i in a_store.list()}
    doc, _ = run(dispatcher, B, events.SYNC_REQUESTED, {"source_id": a_doc["source_id"]})
    assert doc["state"] == "failed"
    assert doc["error"]["reason"] == (f"no source {a_doc['source_id']!r} for tenant {B}: discover it first")
    a_table = next(iter(a_doc["tables"]))
    b_table = next(iter(b_doc["tables"]))
    doc, _ = run(dispatcher, B, events.ANALYZE_REQUESTED, {"tables": [a_table]})
    assert doc["state"] == "failed"
    assert doc["error"]["reason"] == f"no such tables in the warehouse: [{a_table!r}]; it has [{b_table!r}]"
    # beta reusing acme's job id only ever touches beta's own job of that name.
    doc, _ = run(dispatcher, B, events.ANALYZE_REQUESTED, {"tables": [a_table]}, job_id=a_doc["job_id"])
    assert doc["tenant"] == B and doc["state"] == "failed"
    assert {i.key: i.etag for i in a_store.list()} == before
    assert ctx.jobs(A).get(a_doc["job_id"]) == a_doc


# ---------------------------------------------------------------- the audit

# Every place that touches the object store outside a tenant's view (TenantStore), and why.
RAW_STORE_ACCESS = {
    "shared/serving/runtime.py": "builds the context and TenantStore views over the store",
    "shared/serving/embedded.py": "shares the store between the embedded contexts",
    "shared/serving/lifecycle.py": "/readyz and /startupz ping the store",
    "shared/security/auth.py": "API key records at auth/keys/<key_id>.json: looked up before the tenant is known",
    "shared/security/links.py": "the link generation at auth/links/<tenant>.json (tenant validated): checked beside "
                       "the key records, outside tenants/ so no tenant write can change it",
    "functions/writer/handler.py": "the writer lease at locks/<t>/warehouse.lease (lease_key validates t)",
    "functions/artifacts/admin.py": "retention prune over tenants/*/{staging,artifacts}/ (or one tenant's)",
    "functions/artifacts/redrive.py": "the redrive marker index at redrive/<t>/<job>/<key> (tenant validated); "
                                      "letters are read and claimed through the tenant's TenantStore",
    "functions/artifacts/schedules_api.py": "the schedule tick over tenants/*/schedules/ (or one tenant's): "
                                            "slot markers beside each schedule, the sync sent for that tenant",
    "frontends/cli.py": "`udb schedule run`: the same tick, embedded",
    "frontends/mcp_server/backends.py": "the MCP server (`udb mcp`): verifies the caller's credential against auth/keys/, "
                            "then reads only through TenantStore views of the caller's tenant",
}


def _raw_store_users() -> dict[str, list[int]]:
    """Files that use `<x>.store` of a Context (`ctx.store`, `self.ctx.store`, `b.store` of a
    base context) or open a store themselves."""
    found: dict[str, list[int]] = {}
    for path in sorted((REPO / "shared").rglob("*.py")) + sorted((REPO / "functions").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in ("shared/storage/store.py", "shared/storage/s3store.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            hit = False
            if isinstance(node, ast.Attribute) and node.attr == "store" and isinstance(node.value, (ast.Name, ast.Attribute)):
                owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                hit = owner in ("ctx", "context", "b", "base", "_base")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "open_store":
                hit = True
            if hit:
                found.setdefault(rel, []).append(node.lineno)
    return found


def test_every_raw_store_access_is_a_documented_exception():
    users = _raw_store_users()
    undocumented = {f: lines for f, lines in users.items() if f not in RAW_STORE_ACCESS}
    assert undocumented == {}, "store access outside TenantStore: add a reason to RAW_STORE_ACCESS and docs/security.md"
    doc = (REPO / "docs" / "security.md").read_text()
    for path in RAW_STORE_ACCESS:
        if path in users:
            assert path in doc, f"docs/security.md should name {path} among the store exceptions"


def test_the_lease_key_is_per_tenant_and_validated():
    from shared.core.errors import InputError
    from shared.storage.lease import lease_key
    assert lease_key(A) == "locks/acme/warehouse.lease"
    for bad in ("../acme", "acme/../x", "", "A"):
        with pytest.raises(InputError):
            lease_key(bad)


# ---------------------------------------------------------------- server-side paths

def test_a_tenant_cannot_point_discover_at_the_functions_own_files(settings, sales_csv, tmp_path):
    from dataclasses import replace

    from functions.discover.handler import handle as discover_handle
    from shared.serving import runtime
    from shared.serving.runtime import invoke
    ctx = runtime.start("discover", replace(settings, mode="stack"))
    secret_file = Path(settings.home) / "secrets" / "pgpass"
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text("127.0.0.1:5432:db:user:hunter2\n")
    for hint in (str(sales_csv), f"file://{sales_csv}", str(secret_file), "/var/run/secrets/kubernetes.io/serviceaccount/token",
                 "../../etc/passwd", "~/.pgpass", str(sales_csv.parent)):
        reply = invoke(discover_handle, events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant=A,
                                                          job_id=new_job_id(), function="test"), ctx)
        assert reply["type"] == events.JOB_FAILED, hint
        assert events.event_data(reply)["reason"] == ("local paths cannot be read in stack mode: upload the file "
                                                      "(POST /uploads) or name its folder in UDB_FILE_ROOTS")
    assert not any("hunter2".encode() in ctx.store.get(i.key).data for i in ctx.store.list(""))


def test_file_roots_admit_one_folder_and_nothing_outside_it(settings, sales_csv, tmp_path):
    from dataclasses import replace

    from shared.security import limits
    from shared.core.errors import SourceError
    rooted = replace(settings, mode="stack", file_roots=str(sales_csv.parent))
    limits.check_local_hint(str(sales_csv), rooted)
    limits.check_local_hint(f"file://{sales_csv}", rooted)
    escape = sales_csv.parent / "escape.csv"
    escape.symlink_to("/etc/passwd")
    for hint in (str(escape), str(sales_csv.parent / ".." / "x.csv"), "/etc/passwd"):
        with pytest.raises(SourceError, match="outside the folders local hints may read"):
            limits.check_local_hint(hint, rooted)
    # Not paths: URLs and libpq DSNs pass through to their own checks (the SSRF guard).
    for hint in ("s3://bucket/x.csv", "https://example.com/x.csv", "host=db.example dbname=sales user=u"):
        limits.check_local_hint(hint, replace(settings, mode="cluster"))
    limits.check_local_hint("/any/path.csv", settings)  # embedded: the user's own files

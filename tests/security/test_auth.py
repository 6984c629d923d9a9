"""Authentication and authorization: API keys, JWTs, roles, the tenant header, the broker token,
OAuth state and the admin CLI — through the real functions-framework apps."""
from __future__ import annotations

import base64
import hashlib
import importlib
import json
import time

import pytest
from cloudevents.http import CloudEvent, to_binary

from shared.security import auth
from frontends import cli
from shared.core import events
from shared.core.settings import Settings
from tests.security.conftest import JWT_SECRET, bearer, new_key

pytestmark = pytest.mark.security
JOB = "job-00000000000000c1"
FUNCTIONS = ("discover", "sync", "writer", "analyze", "artifacts", "reports")


def _seed_job(ctx, tenant: str, job: str = JOB) -> None:
    ctx.jobs(tenant).create(job, hint="x")
    store = ctx.tenant_store(tenant)
    store.put(store.artifact_key(job, "summary.md"), b"# hello " + tenant.encode())
    store.put(store.artifact_key(job, "index.json"), json.dumps({"artifacts": [
        {"name": "summary.md", "media_type": "text/markdown", "bytes": 7, "sha256": "x"}]}).encode())


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# ---------------------------------------------------------------- the settings switch

@pytest.mark.parametrize("mode,value,expected", [
    ("embedded", "auto", False), ("stack", "auto", True), ("cluster", "auto", True),
    ("embedded", "on", True), ("stack", "off", False)])
def test_udb_auth_defaults_to_off_only_in_embedded_mode(mode, value, expected):
    settings = Settings.from_env(env={"UDB_MODE": mode, "UDB_AUTH": value})
    assert auth.enabled(settings) is expected


def test_bad_auth_settings_are_named():
    from shared.core.errors import ValidationError
    with pytest.raises(ValidationError) as info:
        Settings.from_env(env={"UDB_AUTH": "maybe", "UDB_JWT_SECRET": "short"})
    assert set(info.value.problems) == {"UDB_AUTH", "UDB_JWT_SECRET"}


# ---------------------------------------------------------------- API keys

def test_an_api_key_is_stored_only_as_a_hash_outside_every_tenant(ctx_for):
    ctx = ctx_for("artifacts")
    keys = auth.KeyStore(ctx.store)
    key, record = keys.create("acme", "analyst", "ci")
    match = auth.KEY_RE.fullmatch(key)
    assert match and match.group(1) == record["key_id"]
    stored = ctx.store.get(f"auth/keys/{record['key_id']}.json").data
    secret = match.group(2)
    assert secret.encode() not in stored and key.encode() not in stored
    assert json.loads(stored) == record
    assert set(record) == {"key_id", "tenant", "role", "hash", "name", "created", "revoked"}
    assert record["hash"] == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    # Nothing under the tenant's own prefix: no tenant-scoped write can forge a credential.
    assert list(ctx.tenant_store("acme").list()) == []
    assert [r["key_id"] for r in keys.list("acme")] == [record["key_id"]]
    assert keys.list("other") == []
    assert keys.revoke(record["key_id"])["revoked"]


def test_roles_viewer_analyst_admin_follow_the_table(app_for):
    client, ctx = app_for("artifacts")
    _seed_job(ctx, "acme")
    viewer, analyst, admin = (new_key(ctx, "acme", r) for r in auth.ROLES)
    kpi = {"sql": "SELECT 1 AS x", "chart": {"type": "indicator", "y": "x"}}
    for key in (viewer, analyst, admin):
        assert client.get(f"/status/{JOB}", headers=bearer(key)).status_code == 200
        assert client.get(f"/artifact/{JOB}/summary.md", headers=bearer(key)).data == b"# hello acme"
        assert client.get("/kpis/", headers=bearer(key)).status_code == 200
    denied = client.put("/kpis/revenue", headers=bearer(viewer), json=kpi)
    assert denied.status_code == 403
    assert denied.get_json() == {"error": "role viewer may not PUT /kpis/revenue (needs analyst)"}
    assert client.delete("/kpis/revenue", headers=bearer(viewer)).status_code == 403
    for key in (analyst, admin):  # past authorization; the KPI itself needs a warehouse first
        response = client.put("/kpis/revenue", headers=bearer(key), json=kpi)
        assert response.status_code == 400 and "no warehouse yet" in response.get_json()["error"]


def test_the_role_table_is_one_table_that_names_every_route():
    assert auth.required_role("GET", "/status/job-1") == "viewer"
    assert auth.required_role("PUT", "/kpis/x") == "analyst"
    assert auth.required_role("POST", "/sources/discover_connect") == "analyst"
    assert auth.required_role("POST", "/admin/prune") == "admin"
    assert auth.required_role("POST", "/") == auth.BROKER
    assert auth.required_role("POST", "/x") == "admin"  # not listed: fail closed
    assert auth.required_role("GET", "/statusx") == "admin"  # a prefix is a path segment
    assert auth.required_role("GET", "/oauth/callback") == auth.OAUTH_STATE
    assert auth.required_role("GET", "/healthz") == auth.PUBLIC
    unlisted = []
    for function in FUNCTIONS:
        app = importlib.import_module(f"functions.{function}.main").app
        for method, prefix, _ in app.routes:
            if not auth.listed(method, prefix):
                unlisted.append(f"{function}: {method} {prefix}")
    assert unlisted == [], "routes missing from shared/security/auth.py ROUTE_ROLES (they would need admin)"


def test_missing_bad_unknown_and_revoked_credentials_get_401(app_for):
    client, ctx = app_for("artifacts", UDB_AUTH_CACHE_SECONDS=0)
    _seed_job(ctx, "acme")
    key = new_key(ctx, "acme", "viewer")
    key_id = auth.KEY_RE.fullmatch(key).group(1)
    response = client.get(f"/status/{JOB}")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="udb"'
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown_id = "udb_000000000000_" + key.split("_", 2)[2]
    answers = {client.get(f"/status/{JOB}", headers=bearer(k)).get_json()["error"]
               for k in (wrong_secret, unknown_id, "udb_nope", "not-a-key", "a.b.c")
               if k != "a.b.c"}
    assert answers == {"invalid credentials"}  # no oracle telling a known key id from an unknown one
    assert client.get(f"/status/{JOB}", headers={"Authorization": "Basic " + key}).status_code == 401
    assert client.get(f"/status/{JOB}", headers={"X-API-Key": key}).status_code == 200
    auth.KeyStore(ctx.store).revoke(key_id)
    revoked = client.get(f"/status/{JOB}", headers=bearer(key))
    assert revoked.status_code == 401 and revoked.get_json()["error"] == f"API key {key_id} was revoked"


def test_signed_jwts_are_checked_claim_by_claim(app_for):
    client, ctx = app_for("artifacts")
    _seed_job(ctx, "acme")
    now = time.time()
    good = auth.mint_jwt(JWT_SECRET, "acme", "viewer", 60)
    assert client.get(f"/status/{JOB}", headers=bearer(good)).status_code == 200
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    cases = {
        "expired": auth.mint_jwt(JWT_SECRET, "acme", "viewer", 60, now=now - 3600),
        "other secret": auth.mint_jwt("another-secret-" + "y" * 40, "acme", "viewer", 60),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{body}.",
        "alg RS256": f"{_b64({'alg': 'RS256'})}.{body}.{sig}",
        "role raised": f"{head}.{_b64({**claims, 'role': 'admin'})}.{sig}",
        "tenant changed": f"{head}.{_b64({**claims, 'tenant': 'other'})}.{sig}",
        "garbage": "x.y.z",
    }
    for name, token in cases.items():
        response = client.get(f"/status/{JOB}", headers=bearer(token))
        assert response.status_code == 401, name
    with pytest.raises(auth.Unauthorized, match="without a numeric exp"):
        _verify_unsigned_claims({"tenant": "acme", "role": "viewer"})
    with pytest.raises(auth.Unauthorized, match="not valid yet"):
        _verify_unsigned_claims({"tenant": "acme", "role": "viewer", "exp": now + 600, "nbf": now + 300})
    with pytest.raises(auth.Unauthorized, match="tenant claim"):
        _verify_unsigned_claims({"tenant": "../x", "role": "viewer", "exp": now + 600})
    with pytest.raises(auth.Unauthorized, match="role claim"):
        _verify_unsigned_claims({"tenant": "acme", "role": "root", "exp": now + 600})
    with pytest.raises(auth.Unauthorized, match="not accepted here"):
        auth.verify_jwt(good, "")
    assert auth.verify_jwt(good, JWT_SECRET) == auth.Principal("acme", "viewer", "jwt", "")


def _verify_unsigned_claims(claims: dict):
    import hmac
    head = _b64({"alg": "HS256", "typ": "JWT"})
    body = _b64(claims)
    sig = base64.urlsafe_b64encode(hmac.new(JWT_SECRET.encode(), f"{head}.{body}".encode(),
                                            hashlib.sha256).digest()).rstrip(b"=").decode()
    return auth.verify_jwt(f"{head}.{body}.{sig}", JWT_SECRET)


def test_the_tenant_header_must_name_the_principals_tenant(app_for):
    client, ctx = app_for("artifacts")
    _seed_job(ctx, "acme")
    _seed_job(ctx, "other")
    key = new_key(ctx, "acme", "admin")
    assert client.get(f"/status/{JOB}", headers=bearer(key, **{"X-UDB-Tenant": "acme"})).status_code == 200
    crossed = client.get(f"/status/{JOB}", headers=bearer(key, **{"X-UDB-Tenant": "other"}))
    assert crossed.status_code == 403
    assert crossed.get_json()["error"] == "X-UDB-Tenant 'other' is not the tenant of these credentials"
    # Without the header the tenant is the key's: acme's document, never other's.
    assert client.get(f"/status/{JOB}", headers=bearer(key)).get_json()["tenant"] == "acme"


def test_with_auth_off_the_header_names_the_tenant_as_before(app_for):
    client, ctx = app_for("artifacts", UDB_AUTH="off")
    _seed_job(ctx, "acme")
    assert client.get(f"/status/{JOB}", headers={"X-UDB-Tenant": "acme"}).status_code == 200
    assert client.get(f"/status/{JOB}", headers={"X-UDB-Tenant": "other"}).status_code == 404
    assert client.get(f"/status/{JOB}").status_code == 400


def _discover_event(tenant: str, hint: str, job: str = JOB, event_type: str = events.DISCOVER_REQUESTED):
    data = {"hint": hint}
    if event_type == events.SYNC_REQUESTED:
        data = {"source_id": "x"}
    return to_binary(events.make_event(event_type, data, tenant=tenant, job_id=job, function="test"))


def test_the_cloudevent_entry_takes_the_broker_token_or_a_tenants_own_requests(app_for, sales_csv):
    client, ctx = app_for("discover", UDB_BROKER_TOKEN="broker-" + "t" * 30)
    headers, body = _discover_event("acme", str(sales_csv))
    assert client.post("/", headers=headers, data=body).status_code == 401
    assert client.post("/", headers={**headers, "Authorization": "Bearer wrong"}, data=body).status_code == 401
    ok = client.post("/", headers={**headers, **bearer("broker-" + "t" * 30)}, data=body)
    assert ok.status_code == 200 and ok.headers["ce-type"] == events.SOURCE_DISCOVERED
    analyst, viewer = new_key(ctx, "acme", "analyst"), new_key(ctx, "acme", "viewer")
    own = client.post("/", headers={**headers, **bearer(analyst)}, data=body)
    assert own.status_code == 200
    assert client.post("/", headers={**headers, **bearer(viewer)}, data=body).status_code == 403
    other_headers, other_body = _discover_event("other", str(sales_csv), "job-00000000000000d1")
    crossed = client.post("/", headers={**other_headers, **bearer(analyst)}, data=other_body)
    assert crossed.status_code == 403 and "cannot send events of tenant 'other'" in crossed.get_json()["error"]
    internal = to_binary(CloudEvent({"type": events.SOURCE_DISCOVERED, "source": "/test", "tenant": "acme",
                                     "jobid": JOB}, {"source": {}}))
    refused = client.post("/", headers={**internal[0], **bearer(analyst)}, data=internal[1])
    assert refused.status_code == 403 and "come from UDB itself" in refused.get_json()["error"]
    # The broker token opens the CloudEvent entry (and system actions), nothing a tenant does.
    assert client.post("/sources/discover_connect", json={"hint": str(sales_csv)},
                       headers=bearer("broker-" + "t" * 30)).status_code == 403


def test_without_a_broker_token_the_event_entry_relies_on_the_network(app_for, sales_csv):
    client, _ = app_for("discover")
    headers, body = _discover_event("acme", str(sales_csv))
    assert client.post("/", headers=headers, data=body).status_code == 200


def test_a_public_door_never_takes_the_network_as_a_credential(app_for, sales_csv):
    # udb-discover-api / udb-artifacts-api (knative/base/services.yaml) are reachable from the
    # internet: an anonymous CloudEvent there must not pass as the broker's.
    client, ctx = app_for("discover", UDB_TRUST_NETWORK="0")
    headers, body = _discover_event("acme", str(sales_csv))
    refused = client.post("/", headers=headers, data=body)
    assert refused.status_code == 401 and "broker token or a tenant credential" in refused.get_json()["error"]
    assert list(ctx.tenant_store("acme").list()) == []
    own = client.post("/", headers={**headers, **bearer(new_key(ctx, "acme", "analyst"))}, data=body)
    assert own.status_code == 200  # a tenant's own request still works, vetted by EVENT_ROLES


def test_the_prune_schedule_needs_no_header_only_on_a_cluster_local_door(app_for):
    # The PingSource sends no credential. On the cluster-local udb-artifacts (trust the network,
    # no broker token) it prunes every tenant; on the public door it is refused, while a tenant
    # admin there prunes only that tenant.
    internal, ctx = app_for("artifacts")
    _seed_job(ctx, "acme")
    _seed_job(ctx, "beta", "job-00000000000000c2")
    scheduled = internal.post("/admin/prune", json={"dry_run": True})
    assert scheduled.status_code == 200
    assert scheduled.get_json()["kept"]["artifacts"]["objects"] == 4  # both tenants' two artifacts
    public, ctx = app_for("artifacts", UDB_TRUST_NETWORK="0")
    assert public.post("/admin/prune", json={"dry_run": True}).status_code == 401
    admin = new_key(ctx, "acme", "admin")
    own = public.post("/admin/prune", json={"dry_run": True}, headers=bearer(admin))
    assert own.status_code == 200 and own.get_json()["kept"]["artifacts"]["objects"] == 2
    # Tenant routes never take the network as a credential, wherever they are served.
    assert internal.get(f"/status/{JOB}", headers={"X-UDB-Tenant": "acme"}).status_code == 401


def test_discover_connect_acts_for_the_credentials_tenant(app_for, sales_csv):
    client, ctx = app_for("discover")
    viewer, analyst = new_key(ctx, "acme", "viewer"), new_key(ctx, "acme", "analyst")
    assert client.post("/sources/discover_connect", json={"hint": str(sales_csv)}).status_code == 401
    assert client.post("/sources/discover_connect", json={"hint": str(sales_csv)},
                       headers=bearer(viewer)).status_code == 403
    response = client.post("/sources/discover_connect", json={"hint": str(sales_csv)}, headers=bearer(analyst))
    assert response.status_code == 200
    assert ctx.jobs("acme").get(response.get_json()["jobId"])["state"] == "discovered"
    assert list(ctx.tenant_store("other").list()) == []


def test_oauth_state_is_a_signed_short_lived_credential():
    state = auth.sign_state(JWT_SECRET, "acme", JOB, ttl_seconds=60)
    assert auth.verify_state(state, JWT_SECRET) == auth.Principal("acme", "analyst", "oauth-state", JOB)
    tenant, job, exp, sig = state.split(".")
    for forged in (f"other.{job}.{exp}.{sig}", f"{tenant}.{job}.{int(exp) + 999}.{sig}", state + "x", "", "a.b"):
        with pytest.raises(auth.Unauthorized):
            auth.verify_state(forged, JWT_SECRET)
    with pytest.raises(auth.Unauthorized, match="expired"):
        auth.verify_state(auth.sign_state(JWT_SECRET, "acme", JOB, ttl_seconds=1, now=time.time() - 60), JWT_SECRET)
    with pytest.raises(auth.Unauthorized):
        auth.verify_state(state, "another-secret-" + "z" * 40)


def test_the_admin_cli_creates_lists_and_revokes_keys(app_for, monkeypatch, capsys):
    client, ctx = app_for("artifacts", UDB_AUTH_CACHE_SECONDS=0)
    _seed_job(ctx, "acme")
    assert cli.main(["keys", "create", "--tenant", "acme", "--role", "viewer", "--name", "dashboard"]) == 0
    out = capsys.readouterr().out.splitlines()
    key, key_id = out[0], auth.KEY_RE.fullmatch(out[0]).group(1)
    assert out[1] == f"key id {key_id}: tenant acme, role viewer (shown once; UDB keeps only its hash)"
    assert client.get(f"/status/{JOB}", headers=bearer(key)).status_code == 200
    assert cli.main(["keys", "list", "--tenant", "acme"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "active" in listing and "dashboard" in listing and auth.KEY_RE.fullmatch(key).group(2) not in listing
    assert cli.main(["keys", "revoke", key_id]) == 0
    assert capsys.readouterr().out.startswith(f"key id {key_id} (tenant acme) revoked at ")
    assert client.get(f"/status/{JOB}", headers=bearer(key)).status_code == 401
    assert cli.main(["keys", "create", "--tenant", "Bad!", "--role", "viewer"]) == 2
    assert cli.main(["token", "--tenant", "acme", "--role", "viewer", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert client.get(f"/status/{JOB}", headers=bearer(token)).status_code == 200


def test_the_gate_admits_the_oauth_callback_by_its_signed_state_alone(ctx_for, monkeypatch):
    # No callback route exists yet (issue 4); the gate already knows how to admit one.
    from dataclasses import replace

    from flask import Request
    ctx = ctx_for("artifacts")
    gate = auth.Gatekeeper(replace(ctx.settings, auth="on", jwt_secret=JWT_SECRET), ctx.store)

    def callback(state: str) -> Request:
        return Request({"REQUEST_METHOD": "GET", "PATH_INFO": "/oauth/callback", "QUERY_STRING": f"state={state}&code=x",
                        "SERVER_NAME": "x", "SERVER_PORT": "80", "wsgi.url_scheme": "http"})

    state = auth.sign_state(JWT_SECRET, "acme", JOB)
    request = callback(state)
    assert gate.admit(request) == auth.Principal("acme", "analyst", "oauth-state", JOB)
    assert auth.tenant_of(request) == "acme"
    with pytest.raises(auth.Unauthorized):
        gate.admit(callback(state.replace("acme", "evil")))
    with pytest.raises(auth.Unauthorized):
        gate.admit(callback(""))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_entry_point_of_every_function_refuses_an_anonymous_caller(app_for, function):
    """Point 1 over the whole surface: each route a function registers, and its CloudEvent entry,
    answer 401 to a request without credentials (the OAuth callback, whose credential is its
    signed state, 400 or 401); only the public probes and OpenAPI documents answer."""
    client, ctx = app_for(function, UDB_BROKER_TOKEN="broker-" + "t" * 40, UDB_TRUST_NETWORK="0")
    app = importlib.import_module(f"functions.{function}.main").app
    calls = [(method, prefix + ("job-00000000000000c1" if prefix.endswith("/") else "")) for method, prefix, _ in
             app.routes] + [("POST", "/")]
    assert calls
    for method, path in calls:
        response = client.open(path, method=method, json={"hint": "x"})
        if auth.required_role(method, path) == auth.OAUTH_STATE:
            assert response.status_code in (400, 401), (method, path, response.status_code)
        else:
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers.get("WWW-Authenticate") == 'Bearer realm="udb"'
    for path in ("/healthz", "/openapi.json"):
        assert client.get(path).status_code in (200, 404), path
    assert client.get("/metrics").status_code == 401  # its labels name tenants: the metrics token

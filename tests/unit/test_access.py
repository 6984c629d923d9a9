"""frontends/mcp_server/access.py: who calls an MCP tool or resource, and may they (API keys in
a LocalStore, the role of each action, refusals an agent can act on)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from frontends.mcp_server.access import Access, Caller, guarded, headers_of, refusal
from shared.core.errors import InputError, NotFound, TransientError
from shared.core.settings import Settings
from shared.security import auth, ratelimit
from shared.storage.store import LocalStore

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


@pytest.fixture
def keys(store):
    made = auth.KeyStore(store)
    return {role: made.create("acme", role)[0] for role in ("viewer", "analyst")}


def _on(**kw) -> Settings:
    return Settings(auth="on", broker_token="broker-token-" + "b" * 20, **kw)


def _ctx(headers: dict | None, host: str = "10.1.2.3"):
    """An MCP request context: over HTTP its request has headers and a client; over stdio none."""
    request = None if headers is None else SimpleNamespace(headers=headers, client=SimpleNamespace(host=host))
    return SimpleNamespace(request_context=SimpleNamespace(request=request))


def test_refusal_lines():
    assert refusal(auth.Unauthorized("no key")) == "unauthorized: no key"
    assert refusal(auth.Forbidden("wrong role")) == "forbidden: wrong role"
    assert refusal(NotFound("no job")) == "not found: no job"
    assert refusal(ratelimit.RateLimited("slow down", 2.2)) == "rate limited, retry in 3 s: slow down"
    assert refusal(TransientError("store away")) == "unavailable, try again: store away"
    assert refusal(InputError("bad sql")) == "invalid input: bad sql"
    assert refusal(RuntimeError("other")) == "other"


def test_headers_of():
    assert headers_of(None) == (None, "stdio")
    assert headers_of(_ctx(None)) == (None, "stdio")
    assert headers_of(_ctx({"Authorization": "Bearer x", "X-UDB-Tenant": "acme"})) == (
        {"authorization": "Bearer x", "x-udb-tenant": "acme"}, "10.1.2.3")


def test_with_authentication_off_the_caller_is_a_local_admin(store):
    access = Access(Settings(auth="off"), store, tenant="acme")
    caller = access.caller(None)
    assert caller == Caller(auth.Principal("acme", "admin", "auth-off"), None)
    assert caller.headers() == {"X-UDB-Tenant": "acme"}
    assert access.caller({"x-udb-tenant": "other"}).tenant == "other"
    assert access.caller({}).tenant == "acme"
    with pytest.raises(InputError, match="invalid tenant id"):
        access.caller({"x-udb-tenant": "../x"})


def test_over_http_the_bearer_names_the_caller(store, keys):
    access = Access(_on(), store)
    caller = access.caller({"authorization": f"Bearer {keys['viewer']}"}, "10.0.0.1")
    assert (caller.tenant, caller.principal.role, caller.principal.via) == ("acme", "viewer", "api-key")
    assert caller.headers() == {"X-UDB-Tenant": "acme", "Authorization": f"Bearer {keys['viewer']}"}
    assert access.caller({"authorization": f"Bearer {keys['viewer']}", "x-udb-tenant": "acme"}).tenant == "acme"
    with pytest.raises(auth.Forbidden, match="X-UDB-Tenant 'other' is not the tenant of these credentials"):
        access.caller({"authorization": f"Bearer {keys['viewer']}", "x-udb-tenant": "other"})
    with pytest.raises(auth.Unauthorized, match="UDB needs credentials"):
        access.caller({})
    with pytest.raises(auth.Unauthorized, match="invalid credentials"):
        access.caller({"authorization": "Bearer udb_000000000000_" + "x" * 43})


def test_the_broker_token_opens_no_tool(store):
    settings = _on()
    with pytest.raises(auth.Forbidden, match="the broker token opens only the CloudEvent entry"):
        Access(settings, store).caller({"authorization": f"Bearer {settings.broker_token}"})


def test_over_stdio_the_servers_own_token_is_checked_every_call(store, keys):
    access = Access(_on(auth_cache_seconds=0), store, token=keys["analyst"])
    assert access.caller(None).principal.role == "analyst"
    with pytest.raises(auth.Unauthorized, match="authentication is on: set UDB_MCP_TOKEN"):
        Access(_on(), store).caller(None)
    key_id = keys["analyst"].split("_")[1]
    auth.KeyStore(store).revoke(key_id)
    with pytest.raises(auth.Unauthorized, match=f"API key {key_id} was revoked"):
        access.caller(None)


def test_roles_per_action(store, keys):
    access = Access(_on(), store)
    viewer = access.caller({"authorization": f"Bearer {keys['viewer']}"})
    analyst = access.caller({"authorization": f"Bearer {keys['analyst']}"})
    access.check(viewer, "status")
    access.check(viewer, "udb://jobs/{job}")
    access.check(analyst, "run_kpi")
    with pytest.raises(auth.Forbidden, match="role viewer may not call run_kpi \\(needs analyst\\)"):
        access.check(viewer, "run_kpi")
    with pytest.raises(auth.Forbidden, match="role analyst may not call some_new_tool \\(needs admin\\)"):
        access.check(analyst, "some_new_tool")     # unlisted: fail closed


def test_failed_authentications_are_rate_limited_per_address(store):
    access = Access(_on(rate_limit=60, rate_burst=2), store)
    for _ in range(2):
        with pytest.raises(auth.Unauthorized):
            access.caller({"authorization": "Bearer nope"}, "10.9.9.9")
    with pytest.raises(ratelimit.RateLimited):
        access.caller({"authorization": "Bearer nope"}, "10.9.9.9")


def test_guarded_turns_udb_errors_into_mcp_errors(store, keys):
    access = Access(_on(), store)
    viewer = _ctx({"authorization": f"Bearer {keys['viewer']}"})
    assert guarded(access, "status", viewer, lambda c: ("ok", c.tenant)) == ("ok", "acme")
    with pytest.raises(ToolError, match="^forbidden: role viewer may not call sync"):
        guarded(access, "sync", viewer, lambda c: None)
    with pytest.raises(ToolError, match="^unauthorized: UDB needs credentials"):
        guarded(access, "status", _ctx({}), lambda c: None)

    def missing(caller):
        raise NotFound("no job job-1")

    with pytest.raises(ResourceNotFoundError, match="^not found: no job job-1$"):
        guarded(access, "udb://jobs/{job}", viewer, missing, ResourceError)
    with pytest.raises(ToolError, match="^not found: "):
        guarded(access, "status", viewer, missing)
    with pytest.raises(ZeroDivisionError):   # not a UDB error: not turned into a refusal
        guarded(access, "status", viewer, lambda c: 1 / 0)


def test_a_caller_without_a_tenant():
    with pytest.raises(auth.Forbidden, match="these credentials name no tenant"):
        _ = Caller(auth.Principal(None, "admin", "jwt"), "x").tenant

"""Who is calling a tool or resource, and may they: the caller of each request (its credential
over streamable HTTP, UDB_MCP_TOKEN over stdio, a local admin with authentication off), the role
check of every action (`auth.MCP_ROLES`), and the refusals an agent can act on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from shared.core.errors import InputError, NotFound, TransientError, UDBError
from shared.core.settings import Settings
from shared.core.tenancy import DEFAULT_TENANT, validate_tenant
from shared.security import auth, ratelimit


@dataclass(frozen=True)
class Caller:
    principal: auth.Principal
    credential: str | None  # what the stack backend forwards (None with authentication off)

    @property
    def tenant(self) -> str:
        # Access makes no caller without a tenant (the broker is refused; auth off names one).
        if self.principal.tenant is None:
            raise auth.Forbidden("these credentials name no tenant")
        return self.principal.tenant

    def headers(self) -> dict:
        out = {auth.TENANT_HEADER: self.tenant}
        if self.credential:
            out["Authorization"] = f"Bearer {self.credential}"
        return out


def refusal(exc: Exception) -> str:
    """One line an agent can act on: what kind of refusal, and the reason."""
    if isinstance(exc, auth.Unauthorized):
        return f"unauthorized: {exc}"
    if isinstance(exc, auth.Forbidden):
        return f"forbidden: {exc}"
    if isinstance(exc, NotFound):
        return f"not found: {exc}"
    if isinstance(exc, ratelimit.RateLimited):
        return f"rate limited, retry in {exc.retry_after} s: {exc}"
    if isinstance(exc, TransientError):
        return f"unavailable, try again: {exc}"
    if isinstance(exc, InputError):
        return f"invalid input: {exc}"
    return str(exc)


class Access:
    """Authentication and the role check of every tool, as shared.security.auth does for HTTP routes."""

    def __init__(self, settings: Settings, store, *, token: str = "", tenant: str = DEFAULT_TENANT):
        self.gate = auth.Gatekeeper(settings, store)
        self.token = token
        self.tenant = validate_tenant(tenant)

    def verify(self, credential: str | None, client: str = "stdio") -> auth.Principal:
        if not credential:
            raise auth.Unauthorized("UDB needs credentials: an API key or JWT as `Authorization: Bearer <credential>` "
                                    "(over stdio, in UDB_MCP_TOKEN)")
        try:
            principal = self.gate.credential(credential)
        except auth.Unauthorized:
            # Failed attempts from one address share a bucket, as at the HTTP door.
            self.gate.limiter.take(f"ip:{client}", "failed authentications")
            raise
        if principal.role == auth.BROKER:
            raise auth.Forbidden("the broker token opens only the CloudEvent entry, not the MCP tools")
        return principal

    def caller(self, headers: dict | None, client: str = "?") -> Caller:
        """The caller of one request: `headers` are the HTTP request's (None over stdio)."""
        if headers is None:  # stdio: the server's own credential, checked on every call (revocation)
            if self.token:
                return Caller(self.verify(self.token), self.token)
            if self.gate.enabled:
                raise auth.Unauthorized("authentication is on: set UDB_MCP_TOKEN to an API key or JWT "
                                        "(`udb keys create` / `udb token`)")
            return Caller(auth.Principal(self.tenant, "admin", "auth-off"), None)
        claim = headers.get(auth.TENANT_HEADER.lower())
        if not self.gate.enabled:
            return Caller(auth.Principal(validate_tenant(claim) if claim else self.tenant, "admin", "auth-off"), None)
        credential = auth._bearer(headers)
        principal = self.verify(credential, client)
        if claim is not None and claim != principal.tenant:
            raise auth.Forbidden(f"{auth.TENANT_HEADER} {claim!r} is not the tenant of these credentials")
        return Caller(principal, credential)

    def check(self, caller: Caller, action: str) -> None:
        need = auth.MCP_ROLES.get(action, auth.DEFAULT_ROLE)
        if not auth.role_at_least(caller.principal.role, need):
            raise auth.Forbidden(f"role {caller.principal.role} may not call {action} (needs {need})")
        self.gate.limiter.take(caller.tenant)


def headers_of(ctx: Any) -> tuple[dict | None, str]:
    """(lower-cased HTTP headers, client address) of the request behind `ctx`; (None, "stdio")
    over stdio."""
    request = getattr(ctx.request_context, "request", None) if ctx is not None else None
    if request is None or not hasattr(request, "headers"):
        return None, "stdio"
    client = request.client.host if getattr(request, "client", None) else "?"
    return {k.lower(): v for k, v in request.headers.items()}, client


def guarded(access: Access, action: str, ctx: Any, work: Callable[[Caller], Any],
            error: type[Exception] = ToolError) -> Any:
    """Run `work(caller)` once the caller of `ctx` may do `action`; a UDB error becomes the MCP
    error `error` (ToolError for tools; ResourceError, or ResourceNotFoundError for what does
    not exist, for resources) carrying the refusal line."""
    try:
        headers, client = headers_of(ctx)
        caller = access.caller(headers, client)
        access.check(caller, action)
        return work(caller)
    except NotFound as exc:
        raise (ResourceNotFoundError if error is ResourceError else error)(refusal(exc)) from None
    except UDBError as exc:
        raise error(refusal(exc)) from None

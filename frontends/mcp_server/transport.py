"""How the server is reached: stdio (the caller is UDB_MCP_TOKEN, checked at start) or
streamable HTTP behind AuthDoor (no valid credential, no MCP session); `serve` runs either."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal, get_args

from mcp.server import MCPServer

from shared.core.errors import InputError
from shared.core.settings import Settings
from shared.core.tenancy import DEFAULT_TENANT
from shared.security import auth

from .access import Access
from .resources import register_resources
from .tools import register_tools
from .udb import UDB

SERVER_NAME = "udb"
INSTRUCTIONS = (
    "UDB turns a hint (a file path, URL, s3:// key, PostgreSQL DSN, share link) into analysed "
    "warehouse tables. Call discover_connect(hint); when the answer says ambiguous, pick one of "
    "its candidates with choose_source(job, provider). Then sync(job) loads the tables and "
    "analyze(job) writes reports, KPIs and a summary; get_artifact(job, name) reads them. "
    "list_tables, describe_table and run_kpi(sql) query the warehouse (one read-only SELECT)."
)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)


def build_server(udb: UDB) -> MCPServer:
    """The MCPServer with every tool and resource of `udb` registered."""
    level: LogLevel = next((known for known in LOG_LEVELS if known == udb.settings.log_level), "WARNING")
    server = MCPServer(SERVER_NAME, title="UDB — universal data bridge", instructions=INSTRUCTIONS, log_level=level)
    register_tools(server, udb)
    register_resources(server, udb)
    return server


class AuthDoor:
    """ASGI: with authentication on, a request without valid credentials gets 401 before the MCP
    session sees it (the tools check the role of each call again)."""

    def __init__(self, app: Any, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.access.gate.enabled:
            import anyio
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            client = (scope.get("client") or ("?",))[0]
            try:
                await anyio.to_thread.run_sync(self.access.caller, headers, client)
            except (auth.Unauthorized, auth.Forbidden) as exc:
                status = 401 if isinstance(exc, auth.Unauthorized) else 403
                body = json.dumps({"error": str(exc)}).encode()
                head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                if status == 401:
                    head.append((b"www-authenticate", b'Bearer realm="udb"'))
                await send({"type": "http.response.start", "status": status, "headers": head})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve(settings: Settings, *, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765,
          stack_url: str = "", tenant: str = DEFAULT_TENANT) -> int:
    """Run the server until its client goes away (stdio) or it is stopped (http)."""
    if transport not in ("stdio", "http"):
        raise InputError(f"--transport must be stdio or http, found {transport!r}")
    if stack_url:
        if not stack_url.startswith(("http://", "https://")):
            raise InputError(f"--stack must be the broker ingress URL (http...), found {stack_url!r}")
        settings = replace(settings, mode="stack" if settings.mode == "embedded" else settings.mode)
    udb = UDB(settings, stack_url=stack_url, tenant=tenant)
    if transport == "stdio":
        udb.access.caller(None)  # a missing or wrong UDB_MCP_TOKEN fails at start, with the reason
    server = build_server(udb)
    if transport == "stdio":
        server.run("stdio")
        return 0
    import anyio
    import uvicorn

    app = AuthDoor(server.streamable_http_app(host=host), udb.access)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve)
    return 0

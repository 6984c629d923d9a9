"""The MCP server: UDB as tools and resources an AI agent can call (docs/mcp.md).

Built on the official `mcp` SDK (2.x: `MCPServer`). One set of tools, two backends:

- **embedded**: the pipeline runs in this process, through the same event path as `udb run`
  (`shared.serving.embedded.Dispatcher`: the Triggers in `eventing/` decide which handler gets each
  event);
- **stack**: client events go to the broker ingress (`--stack URL`), discovery to discover's
  `POST /sources/discover_connect`, status and artifacts come from the artifacts function's HTTP
  API — every request carrying the caller's own credential, so the stack checks it again.

Every tool and resource is checked against the caller's tenant and role first, with the model of
the HTTP API (`shared.security.auth`): the same credentials (API keys, JWTs), the same roles, and
`auth.MCP_ROLES` as the tool -> role table. The caller is, over streamable HTTP, whoever the
request's `Authorization: Bearer` names (per request); over stdio, `UDB_MCP_TOKEN`. With
authentication off (`UDB_AUTH=auto` in embedded mode) the caller is a local admin of one tenant,
like the CLI: `--tenant`, or over HTTP the `X-UDB-Tenant` header.

Warehouse reads (`list_tables`, `describe_table`, `run_kpi`) have no HTTP API: in both modes
they read the tenant's warehouse snapshot from the object store, read-only, and KPI SQL goes
through the SQL guard and the KPI engine of the analysis (`shared.security.sqlguard`,
`functions.analyze.kpis`).

One module per part: access (callers and the role check), backends (Embedded, Stack), warehouse
(read-only tables), udb (what each tool does), tools and resources (their MCP registration),
transport (stdio, streamable HTTP behind AuthDoor, `serve`).
"""
from .access import Access, Caller, guarded, headers_of, refusal
from .backends import DEFAULT_WAIT_SECONDS, STAGE_DONE, Embedded, Stack, waiting_answer
from .transport import INSTRUCTIONS, SERVER_NAME, AuthDoor, build_server, serve
from .udb import MAX_INLINE_BYTES, REMEMBERED_JOBS, TEXT_TYPES, UDB
from .warehouse import DESCRIBE_SAMPLE_ROWS, Warehouse

__all__ = [
    "DEFAULT_WAIT_SECONDS", "DESCRIBE_SAMPLE_ROWS", "INSTRUCTIONS", "MAX_INLINE_BYTES", "REMEMBERED_JOBS",
    "SERVER_NAME", "STAGE_DONE", "TEXT_TYPES", "UDB", "Access", "AuthDoor", "Caller", "Embedded", "Stack",
    "Warehouse", "build_server", "guarded", "headers_of", "refusal", "serve", "waiting_answer",
]

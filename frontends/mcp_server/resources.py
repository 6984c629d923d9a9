"""The MCP resources: a job (its status document and artifact index) and each of its artifacts,
whole. Checked like the tools (access.guarded); a missing one is ResourceNotFoundError."""
from __future__ import annotations

import json

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError

from .access import guarded
from .udb import TEXT_TYPES, UDB


def register_resources(server: MCPServer, udb: UDB) -> None:
    """Every resource of `udb` on `server`."""

    @server.resource("udb://jobs/{job}", name="job", mime_type="application/json",
                     description="A job's status document with its artifact index (null until analysed)")
    def job_resource(job: str, ctx: Context) -> str:
        def work(c):
            doc = udb.status(c, job)
            index = json.loads(udb.artifact(c, job, "index.json")[0]) if doc.get("artifacts_index") else None
            return json.dumps({"status": doc, "index": index}, indent=2)
        return guarded(udb.access, "udb://jobs/{job}", ctx, work, ResourceError)

    @server.resource("udb://jobs/{job}/artifacts/{name}", name="artifact",
                     description="One artifact of a job, whole (text, or bytes as a blob)")
    def artifact_resource(job: str, name: str, ctx: Context) -> str | bytes:
        def work(c):
            data, media_type = udb.artifact(c, job, name)
            return data.decode("utf-8") if media_type.startswith(TEXT_TYPES) else data
        return guarded(udb.access, "udb://jobs/{job}/artifacts/{name}", ctx, work, ResourceError)

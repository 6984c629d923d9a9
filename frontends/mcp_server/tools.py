"""The MCP tools: each checks its caller (access.guarded) and calls the UDB method of the same
name. Their docstrings are what the agent reads."""
from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from .access import guarded
from .backends import DEFAULT_WAIT_SECONDS
from .udb import MAX_INLINE_BYTES, UDB


def register_tools(server: MCPServer, udb: UDB) -> None:
    """Every tool of `udb` on `server`."""
    _pipeline_tools(server, udb)
    _warehouse_tools(server, udb)
    _artifact_tools(server, udb)


def _pipeline_tools(server: MCPServer, udb: UDB) -> None:
    """A job from hint to analysis: discover_connect, choose_source, sync, analyze, status, set_schedule."""

    @server.tool()
    def discover_connect(hint: str, ctx: Context, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Discover what HINT is (a path, URL, s3:// key, PostgreSQL DSN, share link): the job id,
        ranked candidates {provider, confidence, reasons}, `ambiguous` (top two within 0.15), the
        source catalogue, and `oauthUrl` where the source needs a sign-in. `options` as in
        POST /sources/discover_connect (e.g. {"provider": "rest", "auth": {...}}). Needs analyst."""
        return guarded(udb.access, "discover_connect", ctx, lambda c: udb.discover_connect(c, hint, options))

    @server.tool()
    def choose_source(job: str, candidate: str, ctx: Context) -> dict[str, Any]:
        """When discovery was ambiguous: discover JOB again as the provider CANDIDATE (one of its
        candidates). Needs analyst."""
        return guarded(udb.access, "choose_source", ctx, lambda c: udb.choose_source(c, job, candidate))

    @server.tool()
    def sync(job: str, ctx: Context, streams: list[str] | None = None,
             wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Sync JOB's discovered source into the warehouse (all streams, or STREAMS); answers when
        the tables are loaded, with their row counts. Needs analyst."""
        return guarded(udb.access, "sync", ctx, lambda c: udb.sync(c, job, streams, wait_seconds))

    @server.tool()
    def analyze(job: str, ctx: Context, kpis: dict[str, dict[str, Any]] | None = None,
                tables: list[str] | None = None, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict[str, Any]:
        """Analyse JOB's tables (profiles, KPIs, charts, summary). KPIS, {name: {sql, chart: {type,
        x, y}, title?}}, are stored as the tenant's KPI definitions first (their SQL through the SQL
        guard) and run by the analysis (kpis-custom.json). Needs analyst."""
        return guarded(udb.access, "analyze", ctx, lambda c: udb.analyze(c, job, kpis, tables, wait_seconds))

    @server.tool()
    def status(job: str, ctx: Context) -> dict[str, Any]:
        """JOB's status document: state, history, tables and row counts, stage times, error."""
        return guarded(udb.access, "status", ctx, lambda c: udb.status(c, job))

    @server.tool()
    def set_schedule(source: str, cron: str, ctx: Context, timezone: str = "UTC") -> dict[str, Any]:
        """Sync SOURCE (a source id, or a job whose discovered source it is) on a schedule: CRON, a
        5-field cron expression ("0 6 * * *": 06:00 each day) in TIMEZONE (IANA, e.g.
        "Europe/Paris"). Replaces any schedule it had; answers the schedule with its next three
        slots. Each slot sends one sync. Needs analyst."""
        return guarded(udb.access, "set_schedule", ctx, lambda c: udb.set_schedule(c, source, cron, timezone))


def _warehouse_tools(server: MCPServer, udb: UDB) -> None:
    """The tenant's warehouse, read-only: list_tables, describe_table, run_kpi."""

    @server.tool()
    def list_tables(ctx: Context) -> dict[str, Any]:
        """The tenant's warehouse tables with row and column counts."""
        return guarded(udb.access, "list_tables", ctx, lambda c: udb.list_tables(c))

    @server.tool()
    def describe_table(name: str, ctx: Context) -> dict[str, Any]:
        """One warehouse table: columns (name, type, nullable), row count, a few sample rows (PII masked)."""
        return guarded(udb.access, "describe_table", ctx, lambda c: udb.describe_table(c, name))

    @server.tool()
    def run_kpi(sql: str, ctx: Context, max_rows: int = 1000) -> dict[str, Any]:
        """Run one read-only SELECT over the tenant's warehouse tables, through the SQL guard, under
        the KPI time limit and row cap; results PII masked. Needs analyst."""
        return guarded(udb.access, "run_kpi", ctx, lambda c: udb.run_kpi(c, sql, max_rows))


def _artifact_tools(server: MCPServer, udb: UDB) -> None:
    """A job's artifacts, inline: get_artifact."""

    @server.tool()
    def get_artifact(job: str, ctx: Context, name: str = "index.json",
                     max_bytes: int = MAX_INLINE_BYTES) -> dict[str, Any]:
        """One artifact of JOB (default its index.json, which lists the others): text for text and
        JSON, base64 otherwise, cut at MAX_BYTES."""
        return guarded(udb.access, "get_artifact", ctx, lambda c: udb.get_artifact(c, job, name, max_bytes))

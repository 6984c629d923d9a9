"""Tenant ids, job ids and the names derived from them."""
from __future__ import annotations

import re
import secrets

from shared.core.errors import InputError

TENANT_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
JOB_RE = re.compile(r"^job-[0-9a-f]{16}$")
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_TENANT = "demo"


def validate_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise InputError(
            f"invalid tenant id {tenant!r}: expected a lowercase letter then 1-30 of a-z, 0-9, '-'")
    return tenant


def validate_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_RE.fullmatch(job_id):
        raise InputError(f"invalid job id {job_id!r}: expected 'job-' and 16 hex digits")
    return job_id


def validate_artifact_name(name: str) -> str:
    # Artifact names are flat file names: no slashes, no leading dot, so no traversal.
    if not isinstance(name, str) or not ARTIFACT_NAME_RE.fullmatch(name) or ".." in name:
        raise InputError(f"invalid artifact name {name!r}")
    return name


def new_job_id() -> str:
    return "job-" + secrets.token_hex(8)


def identifier(text: str, fallback: str = "t") -> str:
    """A lowercase SQL-safe identifier from any text ('Sales 2024.csv' -> 'sales_2024_csv')."""
    ident = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not ident:
        ident = fallback
    if ident[0].isdigit():
        ident = f"{fallback}_{ident}"
    return ident[:48]


def table_name(source_short: str, table: str) -> str:
    """Warehouse table name `<source_short>__<table>` (DESIGN §5)."""
    return f"{identifier(source_short, 's')}__{identifier(table)}"


def tenant_prefix(tenant: str) -> str:
    return f"tenants/{validate_tenant(tenant)}/"

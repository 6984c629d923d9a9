"""POST /admin/prune: delete staged Parquet and artifacts of jobs idle past their retention.

The `udb-prune` PingSource (eventing/prune.yaml) posts here once a day: a CloudEvent of type
`dev.knative.sources.ping`, in binary mode (its data is the body) or structured mode. A plain
POST works the same. The body is optional JSON, `{"dry_run": true}` counts without deleting.

Only these keys are ever deleted:

    tenants/<t>/staging/<job>/...     the job's last update is older than UDB_STAGING_RETENTION_DAYS
    tenants/<t>/artifacts/<job>/...   the job's last update is older than UDB_ARTIFACT_RETENTION_DAYS

A job's age is the `updated_at` of its status document `tenants/<t>/jobs/<job>.json`, not an
object's modification time: object stores disagree on mtimes (the local store has none that
survive a copy), and the job document says when the job last moved. Keys of a job with no
readable status document are kept and counted as `unknown_age`. `jobs/`, `sources/` and
everything else are never touched. A retention of 0 days keeps that area forever.

The warehouse (each tenant's lake) is pruned by DuckLake's own maintenance, under the writer's
lease (shared/storage/lake.py `maintain`): snapshots older than UDB_SNAPSHOT_RETENTION_DAYS expire (the
current one and each table's drift reference never), small adjacent files are compacted, and
files no longer needed (expired, compacted away, or left by a crashed load) are deleted.

Who prunes what: a caller authenticated as one tenant's admin prunes that tenant; the schedule
(and any caller with no tenant, e.g. authentication off) prunes every tenant.
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.core.errors import NotFound, ValidationError
from shared.serving.httpfn import json_response
from shared.serving.runtime import Context
from shared.core.tenancy import JOB_RE, TENANT_RE, tenant_prefix

AREAS = ("staging", "artifacts")
_KEY_RE = re.compile(r"^tenants/(?P<tenant>[^/]+)/(?P<area>staging|artifacts)/(?P<job>[^/]+)/.+$")
_LAKE_RE = re.compile(r"^tenants/(?P<tenant>[^/]+)/catalog\.ducklake$")
_OPTIONS = {"dry_run": bool}


def _job_updated_at(store, tenant: str, job_id: str) -> datetime | None:
    """When the job last changed state, from its status document; None when unknown."""
    try:
        doc = json.loads(store.get(f"{tenant_prefix(tenant)}jobs/{job_id}.json").data)
        updated = datetime.fromisoformat(doc["updated_at"])
    except (NotFound, ValueError, KeyError, TypeError):
        return None
    return updated if updated.tzinfo else updated.replace(tzinfo=timezone.utc)


def prune(store, *, staging_days: int, artifact_days: int, now: datetime | None = None,
          dry_run: bool = False, tenant: str | None = None, snapshot_days: int = 0, lease_seconds: int = 10) -> dict:
    """Delete (or with `dry_run` only count) staging and artifact objects past retention.

    `store` is the raw ObjectStore (prefix `tenants/`); `tenant` limits the run to one tenant.
    Returns the counts: per area the jobs, objects and bytes deleted and the objects kept, and
    the objects of jobs whose age is unknown.
    """
    if staging_days < 0 or artifact_days < 0:
        raise ValueError(f"retention days must be >= 0, found staging={staging_days}, artifacts={artifact_days}")
    now = now or datetime.now(timezone.utc)
    days = {"staging": staging_days, "artifacts": artifact_days}
    cutoff = {area: now - timedelta(days=d) if d > 0 else None for area, d in days.items()}

    by_job: dict[tuple[str, str], list] = defaultdict(list)
    lakes = []
    for info in store.list(tenant_prefix(tenant) if tenant else "tenants/"):
        lake_match = _LAKE_RE.match(info.key)
        if lake_match and TENANT_RE.fullmatch(lake_match["tenant"]):
            lakes.append(lake_match["tenant"])
        match = _KEY_RE.match(info.key)
        # Only well-formed tenant and job ids: nothing else under tenants/ is ever a candidate.
        if match and TENANT_RE.fullmatch(match["tenant"]) and JOB_RE.fullmatch(match["job"]):
            by_job[(match["tenant"], match["job"])].append((match["area"], info))

    result: dict[str, Any] = {
        "dry_run": dry_run,
        "retention_days": days,
        "deleted": {area: {"jobs": 0, "objects": 0, "bytes": 0} for area in AREAS},
        "kept": {area: {"objects": 0} for area in AREAS},
        "unknown_age": {"objects": 0},
    }
    for (tenant_id, job_id), items in sorted(by_job.items()):
        updated = _job_updated_at(store, tenant_id, job_id)
        jobs_counted = set()
        for area, info in items:
            if updated is None:
                result["unknown_age"]["objects"] += 1
                continue
            limit = cutoff[area]
            if limit is None or updated >= limit:
                result["kept"][area]["objects"] += 1
                continue
            if not dry_run:
                store.delete(info.key)
            deleted = result["deleted"][area]
            deleted["objects"] += 1
            deleted["bytes"] += info.size
            if area not in jobs_counted:
                jobs_counted.add(area)
                deleted["jobs"] += 1
    from shared.storage import lake
    from shared.storage.store import TenantStore
    result["lake"] = {t: lake.maintain(TenantStore(store, t), snapshot_days=snapshot_days, now=now, dry_run=dry_run,
                                       lease_seconds=lease_seconds) for t in sorted(lakes)}
    return result


def _options(request) -> dict:
    """The optional JSON options of a plain POST or of a ping CloudEvent (binary or structured)."""
    raw = request.get_data(cache=True)
    content_type = (request.headers.get("Content-Type") or "").lower()
    problems = {}
    payload = None
    if raw.strip():
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise ValidationError("invalid prune request", {"body": f"expected JSON, found {exc}"}) from None
        if content_type.startswith("application/cloudevents+json") and isinstance(payload, dict):
            payload = payload.get("data")  # structured mode: the options are the event's data
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise ValidationError("invalid prune request",
                              {"body": f"expected a JSON object, found {type(payload).__name__}"})
    for key, value in payload.items():
        kind = _OPTIONS.get(key)
        if kind is None:
            problems[key] = f"unknown option; expected one of {', '.join(sorted(_OPTIONS))}"
        elif not isinstance(value, kind):
            problems[key] = f"expected {kind.__name__}, found {value!r}"
    if problems:
        raise ValidationError("invalid prune request", problems)
    return payload


def _caller_tenant(request) -> str | None:
    from shared.security import auth  # only where a request has a principal

    principal = auth.principal_of(request)
    return principal.tenant if principal is not None else None


def prune_route(request, ctx: Context):
    """POST /admin/prune"""
    options = _options(request)
    tenant = _caller_tenant(request)
    result = prune(ctx.store, staging_days=ctx.settings.staging_retention_days,
                   artifact_days=ctx.settings.artifact_retention_days,
                   dry_run=options.get("dry_run", False), tenant=tenant,
                   snapshot_days=ctx.settings.snapshot_retention_days, lease_seconds=ctx.settings.lease_seconds)
    result["tenant"] = tenant or "*"
    ctx.log.info("prune (%s): deleted %d staging and %d artifact objects", "dry run" if result["dry_run"] else "done",
                 result["deleted"]["staging"]["objects"], result["deleted"]["artifacts"]["objects"])
    return json_response(result)


ROUTES = [("POST", "/admin/prune", prune_route)]


def main(argv=None) -> int:
    """`python -m functions.artifacts.admin [--dry-run]`: the same prune from a shell or a CronJob."""
    from shared.core.settings import Settings
    from shared.storage.backends import open_store

    args = sys.argv[1:] if argv is None else argv
    if any(a not in ("--dry-run",) for a in args):
        print("usage: python -m functions.artifacts.admin [--dry-run]", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    result = prune(open_store(settings), staging_days=settings.staging_retention_days,
                   artifact_days=settings.artifact_retention_days, dry_run="--dry-run" in args,
                   snapshot_days=settings.snapshot_retention_days, lease_seconds=settings.lease_seconds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

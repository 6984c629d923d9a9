"""Per-source sync schedules (shared/serving/schedules.py), served by the artifacts function.

    PUT    /sources/{source_id}/schedule   {cron, timezone}: 201 created, 200 replaced (analyst)
    GET    /sources/{source_id}/schedule   the schedule, with its next three slots (viewer)
    DELETE /sources/{source_id}/schedule   204 (analyst)
    POST   /admin/schedules/tick           fire every tenant's due slots once (the `udb-schedules`
                                           PingSource, a minute; a system route like prune)

The tenant comes from the caller's credential (`X-UDB-Tenant` with authentication off).
"""
from __future__ import annotations

from datetime import datetime

from functions.artifacts.handler import _tenant
from shared.core import events
from shared.serving import schedules
from shared.core.errors import InputError, NotFound
from shared.serving.httpfn import json_response
from shared.serving.runtime import Context
from shared.core.tenancy import new_job_id


def _source_id(request) -> str:
    parts = request.path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "sources" or parts[2] != "schedule":
        raise NotFound(f"no route {request.path}")
    return schedules.validate_source_id(parts[1])


def put_schedule(request, ctx: Context):
    source_id = _source_id(request)
    body = request.get_json(silent=True)
    if body is None:
        raise InputError('expected a JSON body {"cron": "*/15 * * * *", "timezone": "Europe/Paris"}')
    doc, created = schedules.Schedules(ctx.tenant_store(_tenant(request))).put(source_id, body)
    return json_response(doc, 201 if created else 200)


def get_schedule(request, ctx: Context):
    source_id = _source_id(request)
    doc = schedules.Schedules(ctx.tenant_store(_tenant(request))).get(source_id)
    doc["next"] = [s.isoformat() for s in schedules.next_slots(doc["cron"], doc["timezone"],
                                                                 schedules._now())]
    return json_response(doc)


def delete_schedule(request, ctx: Context):
    schedules.Schedules(ctx.tenant_store(_tenant(request))).delete(_source_id(request))
    return "", 204, {}


def sync_event(tenant: str, source_id: str, job_id: str, autoanalyze: bool = True):
    return events.make_event(events.SYNC_REQUESTED, {"source_id": source_id, "autoanalyze": autoanalyze},
                             tenant=tenant, job_id=job_id, function="scheduler", flags={"autoanalyze": autoanalyze})


def broker_fire(ctx: Context):
    """fire(tenant, source_id, slot): a job, and its sync.requested sent to the broker (K_SINK)."""
    def fire(tenant: str, source_id: str, slot: datetime, autoanalyze: bool = True) -> str:
        job_id = new_job_id()
        event = sync_event(tenant, source_id, job_id, autoanalyze)
        ctx.jobs(tenant).create(job_id, traceparent=event["traceparent"], source_id=source_id,
                                scheduled_slot=slot.isoformat())
        ctx.send_job(tenant, job_id, event, "sync")  # JobNotAccepted when the broker refuses it
        return job_id
    return fire


def tick_route(request, ctx: Context):
    """POST /admin/schedules/tick (a ping CloudEvent or a plain POST; the body is ignored)."""
    request.get_data(cache=True)
    from shared.security import auth
    principal = auth.principal_of(request)
    tenant = principal.tenant if principal is not None else None  # a tenant admin ticks its own
    result = schedules.tick(ctx.store, broker_fire(ctx), log=ctx.log, tenant=tenant).as_dict()
    return json_response(result)


ROUTES = [("PUT", "/sources/", put_schedule), ("GET", "/sources/", get_schedule),
          ("DELETE", "/sources/", delete_schedule), ("POST", "/admin/schedules/tick", tick_route)]

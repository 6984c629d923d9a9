"""Per-source sync schedules: a cron expression in an IANA time zone, stored per tenant at
`tenants/<t>/schedules/<source_id>.json`, and the tick that fires due syncs.

`tick(store, now, fire)` looks at every tenant's schedules once. A schedule is due when its
latest slot (the last time at or before `now` its cron names, in its time zone) is not older
than the schedule itself. Each slot fires at most once: before firing, the tick writes the
slot's marker `schedules/<source_id>.fired/<slot>` with If-None-Match, and only the tick whose
write succeeded fires (a second tick, a second scheduler replica or a redelivered ping finds the
marker and skips). A tick after missed ones fires only the latest slot: a missed tick is caught
up once, never twice. When firing fails (the broker refused the event) the marker is removed,
so the next tick tries the slot again.

The cluster runs `tick` from one PingSource a minute (eventing/schedules.yaml ->
`POST /admin/schedules/tick` on the cluster-local artifacts Service), the stack from the same
PingSource through devstack/broker.py, embedded mode from `udb schedule run`. Cron parsing is
croniter's.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from shared.core.errors import InputError, NotFound, PreconditionFailed, ValidationError
from shared.core.tenancy import TENANT_RE

SOURCE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,80}$")
FIELDS = {"cron", "timezone", "autoanalyze"}
_KEY_RE = re.compile(r"^tenants/(?P<tenant>[^/]+)/schedules/(?P<source>[^/]+)\.json$")


def validate_source_id(source_id: str) -> str:
    if not isinstance(source_id, str) or not SOURCE_ID_RE.fullmatch(source_id):
        raise InputError(f"invalid source id {source_id!r}: expected {SOURCE_ID_RE.pattern}")
    return source_id


def validate(body) -> dict:
    """{cron, timezone} checked, every problem at once (ValidationError keyed by field)."""
    if not isinstance(body, dict):
        raise InputError('expected a JSON object {"cron": "*/15 * * * *", "timezone": "Europe/Paris"}')
    problems = {k: f"unknown field; expected {', '.join(sorted(FIELDS))}" for k in set(body) - FIELDS}
    cron, tz = body.get("cron"), body.get("timezone", "UTC")
    if not isinstance(cron, str) or len(cron.split()) != 5:
        problems["cron"] = f"expected a cron expression of 5 fields (minute hour day month weekday), found {cron!r}"
    elif not croniter.is_valid(cron):
        problems["cron"] = f"not a valid cron expression: {cron!r}"
    try:
        if not isinstance(tz, str) or not tz:
            raise ZoneInfoNotFoundError
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        problems["timezone"] = f"expected an IANA time zone such as 'Europe/Paris' or 'UTC', found {tz!r}"
    autoanalyze = body.get("autoanalyze", True)
    if not isinstance(autoanalyze, bool):
        problems["autoanalyze"] = f"expected true or false, found {autoanalyze!r}"
    if problems:
        raise ValidationError("invalid schedule", problems)
    return {"cron": cron, "timezone": tz, "autoanalyze": autoanalyze}


def next_slots(cron: str, tz: str, after: datetime, count: int = 3) -> list[datetime]:
    it = croniter(cron, after.astimezone(ZoneInfo(tz)))
    return [it.get_next(datetime) for _ in range(count)]


def latest_slot(cron: str, tz: str, now: datetime) -> datetime:
    """The last time at or before `now` (whole minute) the cron names, in its time zone."""
    local = now.astimezone(ZoneInfo(tz)).replace(second=0, microsecond=0)
    it = croniter(cron, local)
    if croniter.match(cron, local):
        return local
    return it.get_prev(datetime)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Schedules:
    """One tenant's schedules in its store (a shared.storage.store.TenantStore)."""

    def __init__(self, store):
        self.store = store

    @staticmethod
    def key(source_id: str) -> str:
        return f"schedules/{validate_source_id(source_id)}.json"

    def put(self, source_id: str, body, now: datetime | None = None) -> tuple[dict, bool]:
        """Store (or replace) the schedule of a discovered source: (document, created)."""
        spec = validate(body)
        try:
            self.store.head(f"sources/{validate_source_id(source_id)}.json") or self.store.get(
                f"sources/{source_id}.json")
        except NotFound:
            raise NotFound(f"no source {source_id!r} for this tenant: discover it first") from None
        now = now or _now()
        try:
            created_at = self.get(source_id)["created_at"]
            created = False
        except NotFound:
            created_at, created = now.isoformat(), True
        doc = {"source_id": source_id, **spec, "created_at": created_at, "updated_at": now.isoformat(),
               "next": [s.isoformat() for s in next_slots(spec["cron"], spec["timezone"], now)]}
        self.store.put(self.key(source_id), json.dumps(doc, indent=2).encode(), content_type="application/json")
        return doc, created

    def get(self, source_id: str) -> dict:
        try:
            return json.loads(self.store.get(self.key(source_id)).data)
        except NotFound:
            raise NotFound(f"no schedule for source {source_id!r}") from None

    def delete(self, source_id: str) -> None:
        self.get(source_id)
        self.store.delete(self.key(source_id))

    def list(self) -> list[dict]:
        out = []
        for info in self.store.list("schedules/"):
            if info.key.endswith(".json") and info.key.count("/") == 1:
                try:
                    out.append(json.loads(self.store.get(info.key).data))
                except NotFound:
                    continue
        return sorted(out, key=lambda d: d["source_id"])


@dataclass
class TickResult:
    schedules: int = 0
    fired: int = 0
    already_fired: int = 0
    not_due: int = 0
    failed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# fire(tenant, source_id, slot, autoanalyze) -> job id; raises to leave the slot for the next tick.
Fire = Callable[[str, str, datetime, bool], str]


def tick(store, fire: Fire, now: datetime | None = None, log=None, tenant: str | None = None) -> TickResult:
    """Fire every due slot of every tenant's schedules (or of `tenant`'s) once (`store`: the raw
    ObjectStore)."""
    now = now or _now()
    result = TickResult()
    for info in list(store.list(f"tenants/{tenant}/schedules/" if tenant else "tenants/")):
        match = _KEY_RE.match(info.key)
        if not match or not TENANT_RE.fullmatch(match["tenant"]) or not SOURCE_ID_RE.fullmatch(match["source"]):
            continue
        tenant, source_id = match["tenant"], match["source"]
        try:
            doc = json.loads(store.get(info.key).data)
        except NotFound:
            continue  # deleted since the listing
        result.schedules += 1
        slot = latest_slot(doc["cron"], doc["timezone"], now)
        if slot < datetime.fromisoformat(doc["updated_at"]):
            result.not_due += 1  # the slot came before the schedule was set
            continue
        marker = f"tenants/{tenant}/schedules/{source_id}.fired/{slot.astimezone(timezone.utc):%Y%m%dT%H%MZ}"
        try:
            store.put(marker, b"", if_none_match=True, content_type="text/plain")
        except PreconditionFailed:
            result.already_fired += 1
            continue
        try:
            job_id = fire(tenant, source_id, slot, doc.get("autoanalyze", True))
        except Exception as exc:  # the broker refused it: free the slot for the next tick
            store.delete(marker)
            result.failed += 1
            if log is not None:
                log.warning("schedule %s/%s slot %s not fired: %s", tenant, source_id, slot.isoformat(), exc)
            continue
        result.fired += 1
        if log is not None:
            log.info("schedule %s/%s slot %s fired as job %s", tenant, source_id, slot.isoformat(), job_id)
    return result

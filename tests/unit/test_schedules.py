"""Per-source schedules (shared/serving/schedules.py): validation naming every problem, slots in a time
zone, and the tick: each due slot fires exactly once, a missed tick is caught up once (the latest
slot only), a refused fire frees its slot, and a schedule set after a slot does not fire it."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from shared.serving import schedules
from shared.core.errors import NotFound, ValidationError
from shared.storage.store import LocalStore, TenantStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 6, 0, 20, tzinfo=timezone.utc)


def with_source(store, tenant: str, source_id: str) -> schedules.Schedules:
    tenant_store = TenantStore(store, tenant)
    tenant_store.put(f"sources/{source_id}.json", json.dumps({"id": source_id}).encode())
    return schedules.Schedules(tenant_store)


def test_validation_names_every_problem():
    with pytest.raises(ValidationError) as err:
        schedules.validate({"cron": "61 * * * *", "timezone": "Mars/Olympus", "every": 5})
    assert err.value.problems == {
        "cron": "not a valid cron expression: '61 * * * *'",
        "timezone": "expected an IANA time zone such as 'Europe/Paris' or 'UTC', found 'Mars/Olympus'",
        "every": "unknown field; expected autoanalyze, cron, timezone"}
    with pytest.raises(ValidationError, match="expected a cron expression of 5 fields"):
        schedules.validate({"cron": "* * *"})
    assert schedules.validate({"cron": "*/15 * * * *"}) == {"cron": "*/15 * * * *", "timezone": "UTC",
                                                           "autoanalyze": True}


def test_slots_follow_the_time_zone():
    now = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)  # 09:30 in Paris (CET), 17:30 in Tokyo
    assert schedules.latest_slot("0 9 * * *", "Europe/Paris", now).astimezone(timezone.utc) == \
        datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    assert schedules.latest_slot("0 9 * * *", "Asia/Tokyo", now).astimezone(timezone.utc) == \
        datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)
    assert schedules.latest_slot("30 8 * * *", "UTC", now) == now  # a slot at `now` itself is due


def test_put_needs_a_discovered_source_and_get_delete(tmp_path):
    store = LocalStore(tmp_path)
    table = with_source(store, "acme", "sales-1a2b3c4d")
    with pytest.raises(NotFound, match="no source 'other' for this tenant: discover it first"):
        table.put("other", {"cron": "* * * * *"})
    doc, created = table.put("sales-1a2b3c4d", {"cron": "*/15 * * * *", "timezone": "Europe/Paris"}, now=T0)
    assert created and doc["next"] == ["2026-03-02T07:15:00+01:00", "2026-03-02T07:30:00+01:00",
                                       "2026-03-02T07:45:00+01:00"]
    doc2, created2 = table.put("sales-1a2b3c4d", {"cron": "0 * * * *"}, now=T0 + timedelta(minutes=1))
    assert not created2 and doc2["created_at"] == doc["created_at"] and doc2["timezone"] == "UTC"
    assert [d["source_id"] for d in table.list()] == ["sales-1a2b3c4d"]
    # Another tenant sees nothing of it.
    with pytest.raises(NotFound):
        schedules.Schedules(TenantStore(store, "other")).get("sales-1a2b3c4d")
    table.delete("sales-1a2b3c4d")
    with pytest.raises(NotFound, match="no schedule for source 'sales-1a2b3c4d'"):
        table.get("sales-1a2b3c4d")


def test_each_slot_fires_once_and_a_missed_tick_is_caught_up_once(tmp_path):
    store = LocalStore(tmp_path)
    fired = []

    def fire(tenant, source_id, slot, autoanalyze):
        fired.append((tenant, source_id, slot.astimezone(timezone.utc).strftime("%H:%M")))
        return f"job-{len(fired):016x}"

    set_at = T0 - timedelta(minutes=1)
    with_source(store, "acme", "a-1").put("a-1", {"cron": "*/15 * * * *"}, now=set_at)
    with_source(store, "beta", "b-1").put("b-1", {"cron": "0 7 * * *", "timezone": "Europe/Paris"}, now=set_at)

    def tick(at):
        return schedules.tick(store, fire, now=at).as_dict()

    # 06:00:20: acme's 06:00 slot (the schedules were set at 05:59:20) fires; beta's 07:00 Paris
    # (06:00 UTC) slot too.
    assert tick(T0) == {"schedules": 2, "fired": 2, "already_fired": 0, "not_due": 0, "failed": 0}
    # The same minute again (a redelivered ping, a second replica): nothing fires twice.
    assert tick(T0 + timedelta(seconds=30)) == {"schedules": 2, "fired": 0, "already_fired": 2, "not_due": 0,
                                                "failed": 0}
    # The scheduler was away for 06:15 and 06:30: at 06:31 only the latest slot (06:30) fires, once.
    assert tick(T0 + timedelta(minutes=31))["fired"] == 1
    assert tick(T0 + timedelta(minutes=32))["fired"] == 0
    assert fired == [("acme", "a-1", "06:00"), ("beta", "b-1", "06:00"), ("acme", "a-1", "06:30")]

    # A refused fire frees the slot: the next tick fires it.
    def refuse(tenant, source_id, slot, autoanalyze):
        raise RuntimeError("broker away")

    assert schedules.tick(store, refuse, now=T0 + timedelta(minutes=45)).as_dict()["failed"] == 1
    assert tick(T0 + timedelta(minutes=46))["fired"] == 1
    assert fired[-1] == ("acme", "a-1", "06:45")
    # Ticking one tenant leaves the other alone.
    assert schedules.tick(store, fire, now=T0 + timedelta(minutes=60), tenant="beta").as_dict()["schedules"] == 1


def test_a_schedule_set_after_its_slot_does_not_fire_it(tmp_path):
    store = LocalStore(tmp_path)
    set_at = datetime(2026, 3, 2, 6, 7, 0, 500_000, tzinfo=timezone.utc)
    with_source(store, "acme", "a-1").put("a-1", {"cron": "* * * * *"}, now=set_at)
    calls = []
    # The 06:07:00 slot passed half a second before the schedule was set: not fired; 06:08 is.
    result = schedules.tick(store, lambda *a: calls.append(a) or "job", now=set_at + timedelta(seconds=10))
    assert result.as_dict()["not_due"] == 1 and calls == []
    result = schedules.tick(store, lambda *a: calls.append(a) or "job", now=set_at + timedelta(seconds=60))
    assert result.as_dict()["fired"] == 1 and len(calls) == 1

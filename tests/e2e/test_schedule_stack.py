"""Schedules through the real stack: the local broker's udb-schedules PingSource (eventing/
schedules.yaml) ticks the artifacts function each minute, which sends the due slot's
dev.udb.sync.requested to the broker ingress; the sync runs through Kafka and the function
processes. Exact: each fired slot is one job and one slot marker, never two."""
from __future__ import annotations

import pytest

from bench.schedule_soak import soak

pytestmark = pytest.mark.e2e


def test_scheduled_syncs_fire_through_the_stack_once_per_slot(running_stack):
    result = soak(sources=2, minutes=2, rows=500)
    assert result["failed"] == []
    # Two sources x two whole-minute slots; a slot is never fired twice.
    assert result["syncs"] == result["succeeded"] == result["distinct_slots"] == result["slot_markers"] == 4

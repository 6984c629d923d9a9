"""shared/storage/syncstate.py: a source's incremental state, compare-and-swap on a real local store."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from shared.core.errors import PreconditionFailed, SourceError
from shared.storage import syncstate
from shared.storage.store import LocalStore, TenantStore

pytestmark = pytest.mark.unit


@dataclass
class Env:
    store: TenantStore | None
    source_id: str | None = "udb-0a1b2c3d"


@dataclass
class SyncEnv(Env):
    pending_state: dict = field(default_factory=dict)


@pytest.fixture
def store(tmp_path):
    return TenantStore(LocalStore(tmp_path / "store"), "acme")


def test_no_state_yet(store):
    assert syncstate.load_state(Env(store)) == ({}, None)
    assert syncstate.stream_state(Env(store), "orders") == {}
    assert syncstate.load_state(None) == ({}, None) and syncstate.load_state(Env(None)) == ({}, None)


def test_streams_are_saved_side_by_side_under_the_tenant(store, tmp_path):
    env = Env(store)
    syncstate.save_stream(env, "orders", {"cursor_field": "updated_at", "last_value": "2026-12-01"})
    syncstate.save_stream(env, "files", {"objects": {"a.csv": "etag-1"}})
    syncstate.save_stream(env, "orders", {"cursor_field": "updated_at", "last_value": "2026-12-06"})
    state, etag = syncstate.load_state(env)
    assert etag is not None and state["source_id"] == "udb-0a1b2c3d"
    assert {name: {k: v for k, v in entry.items() if k != "synced_at"} for name, entry in state["streams"].items()} == {
        "orders": {"cursor_field": "updated_at", "last_value": "2026-12-06"},
        "files": {"objects": {"a.csv": "etag-1"}}}
    assert syncstate.stream_state(env, "orders")["last_value"] == "2026-12-06"
    on_disk = tmp_path / "store" / "tenants" / "acme" / "state" / "udb-0a1b2c3d.json"
    assert json.loads(on_disk.read_text())["streams"]["files"]["objects"] == {"a.csv": "etag-1"}


def test_the_sync_function_only_collects_pending_state(store):
    env = SyncEnv(store)
    syncstate.save_stream(env, "orders", {"last_value": 7})
    assert env.pending_state == {"orders": {"last_value": 7}}
    assert syncstate.load_state(env) == ({}, None)  # written by the writer once loaded, not here


class LosingStore(TenantStore):
    """A real local store whose every conditional write loses, as if five syncs raced it."""

    def put(self, relative, data, **kw):
        raise PreconditionFailed(f"{relative} changed")


def test_a_write_lost_five_times_fails_with_the_reason(tmp_path):
    env = Env(LosingStore(LocalStore(tmp_path / "store"), "acme"))
    with pytest.raises(SourceError) as info:
        syncstate.save_stream(env, "orders", {"last_value": 1})
    assert str(info.value) == "state of source udb-0a1b2c3d: changed by others five times in a row"

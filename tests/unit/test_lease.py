"""The writer's short lease and its heartbeat (issue 23, point 4): kept while a load runs,
free again within one period after its holder dies, and a lost lease stops the load."""
from __future__ import annotations

import json
import time

import pytest

from shared.storage import lease
from shared.core.errors import TransientError
from shared.storage.store import LocalStore

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def test_a_heartbeat_keeps_the_lease_past_its_period(store):
    held = lease.acquire(store, "acme", seconds=0.6, wait=0)
    with lease.Heartbeat(store, held, seconds=0.6) as keeper:
        time.sleep(1.5)  # two and a half periods
        keeper.check()
        with pytest.raises(TransientError, match="held by another writer"):
            lease.acquire(store, "acme", seconds=0.6, wait=0.3)
    assert keeper.renewals >= 5  # every 0.2 s
    assert json.loads(store.get(lease.lease_key("acme")).data)["owner"] == held.owner
    lease.release(store, keeper.lease)
    assert store.head(lease.lease_key("acme")) is None


def test_a_dead_holders_lease_is_taken_over_within_one_period(store):
    dead = lease.acquire(store, "acme", seconds=0.5, wait=0)  # its writer crashes: no heartbeat
    started = time.monotonic()
    taken = lease.acquire(store, "acme", seconds=0.5, wait=5, poll=0.02)
    assert 0.4 <= time.monotonic() - started < 0.8
    assert taken.owner != dead.owner
    assert json.loads(store.get(lease.lease_key("acme")).data)["owner"] == taken.owner


def test_a_lost_lease_fails_check_and_renew_before_the_upload(store):
    held = lease.acquire(store, "acme", seconds=0.6, wait=0)
    with lease.Heartbeat(store, held, seconds=0.6) as keeper:
        # Another writer takes the lease (as after a pause longer than the period).
        store.put(lease.lease_key("acme"), json.dumps({"owner": "other", "expires": time.time() + 60}).encode())
        time.sleep(0.5)
        with pytest.raises(TransientError, match="lost the warehouse lease"):
            keeper.check()
        with pytest.raises(TransientError, match="lost the warehouse lease"):
            keeper.renew()
    lease.release(store, keeper.lease)  # not ours any more: left alone
    assert json.loads(store.get(lease.lease_key("acme")).data)["owner"] == "other"


def test_an_expired_lease_is_lost_even_when_the_heartbeat_could_not_run(store):
    held = lease.acquire(store, "acme", seconds=0.2, wait=0)
    keeper = lease.Heartbeat(store, held, seconds=0.2)  # never started: a frozen process
    time.sleep(0.3)
    with pytest.raises(TransientError, match="expired before it was renewed"):
        keeper.check()


HOLD = """
import sys, time
from pathlib import Path
from shared.storage import lease
from shared.storage.store import LocalStore
lease.acquire(LocalStore(Path(sys.argv[1])), "acme", seconds=60, wait=0)
print("held", flush=True)
if sys.argv[2] == "stay":
    time.sleep(60)
"""


def holder(store, mode: str):
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(store.root), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lease_of_a_dead_holder_process_is_taken_over_at_once(store):
    proc = holder(store, "exit")  # takes a 60 s lease and dies without releasing it
    proc.wait(timeout=30)
    dead = json.loads(store.get(lease.lease_key("acme")).data)
    assert dead["expires"] > time.time() + 30 and dead["holder"]["pid"] == proc.pid
    started = time.monotonic()
    taken = lease.acquire(store, "acme", seconds=10, wait=5)
    assert time.monotonic() - started < 0.5
    assert json.loads(store.get(lease.lease_key("acme")).data)["owner"] == taken.owner


def test_the_lease_of_a_live_holder_process_is_not_taken(store):
    proc = holder(store, "stay")
    try:
        with pytest.raises(TransientError, match="held by another writer"):
            lease.acquire(store, "acme", seconds=10, wait=0.5)
    finally:
        proc.kill()
        proc.wait()


def test_a_holder_elsewhere_cannot_be_proven_dead():
    me = lease.holder_identity()
    assert me is not None and lease.holder_dead(me) is False  # this process runs
    assert lease.holder_dead({**me, "pid": 2 ** 22 + 7}) is True  # no such pid here
    assert lease.holder_dead({**me, "start": "1"}) is True  # the pid is a later process now
    for other in ({**me, "pid": 2 ** 22 + 7, "pidns": "pid:[1]"}, {**me, "pid": 2 ** 22 + 7, "boot": "x"}, None, {}):
        assert lease.holder_dead(other) is False  # another container or machine: wait for the expiry

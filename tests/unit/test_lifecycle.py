"""A function's lifecycle (shared/serving/lifecycle.py): start with settings, failing fast on bad
configuration; stop closes what start opened; alive is a flag; ready checks the dependencies
over start's long-lived clients, at most once per UDB_READY_CACHE_SECONDS. The object store here
is a real S3 endpoint on loopback (tests/peers/s3_bucket.py) that counts what reaches it."""
from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from functions.reports import bounded
from shared.core.errors import StartupError
from shared.serving.lifecycle import Lifecycle
from shared.serving.runtime import Context
from tests.peers.s3_bucket import S3Bucket

pytestmark = pytest.mark.unit


@pytest.fixture
def bucket():
    with S3Bucket("udb") as peer:
        yield peer


def _s3(settings, peer: S3Bucket, **changes):
    return dataclasses.replace(settings, store="s3", s3_endpoint=peer.url, s3_access_key="key",
                               s3_secret_key="secret-key", bucket=peer.bucket, **changes)


def _wait(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_ready_within_the_ttl_checks_the_store_once_over_one_connection(settings, bucket):
    lifecycle = Lifecycle("sync")
    ctx = lifecycle.start(_s3(settings, bucket, ready_cache_seconds=60))
    assert isinstance(ctx, Context) and lifecycle.alive()
    assert bucket.head_bucket_count() == 1  # start: the bucket is there (S3Store.ensure_bucket)
    reports = [lifecycle.ready() for _ in range(500)]
    assert reports[0] == {"object_store": "up", "duckdb_extensions": "up"}
    assert all(report is reports[0] for report in reports)
    assert bucket.head_bucket_count() == 2  # 500 probes in the TTL: one check
    for _ in range(3):  # /startupz: fresh each time, over the same connection
        assert lifecycle.ready(fresh=True)["object_store"] == "up"
    assert bucket.head_bucket_count() == 5
    assert bucket.connections == 1 and bucket.open == 1
    lifecycle.stop()


def test_a_stale_report_is_refreshed_once_in_the_background(settings, bucket):
    lifecycle = Lifecycle("sync")
    lifecycle.start(_s3(settings, bucket, ready_cache_seconds=0.2))
    lifecycle.ready()
    assert bucket.head_bucket_count() == 2
    time.sleep(0.25)
    for _ in range(200):  # stale: each answers the last report; one refresh starts
        assert lifecycle.ready()["object_store"] == "up"
    assert _wait(lambda: bucket.head_bucket_count() == 3)
    time.sleep(0.1)
    assert bucket.head_bucket_count() == 3 and bucket.connections == 1
    lifecycle.stop()


def test_stop_closes_the_store_connections_and_runs_the_stop_hooks_once(settings, bucket):
    stopped = []
    lifecycle = Lifecycle("sync", on_stop=[lambda: stopped.append(1)])
    ctx = lifecycle.start(_s3(settings, bucket))
    secrets = ctx.secrets  # opened on first use; closed by stop too
    lifecycle.ready()
    assert bucket.open == 1
    lifecycle.stop()
    # The client closed its pool: the peer sees the connection end.
    assert _wait(lambda: bucket.open == 0), bucket.open
    assert not lifecycle.alive() and stopped == [1]
    assert lifecycle.ready() == {"lifecycle": "down: stopped"}
    with pytest.raises(RuntimeError, match="udb-sync is not started"):
        lifecycle.ctx  # noqa: B018 - the property raises
    lifecycle.stop()
    assert stopped == [1] and secrets is not None
    assert bucket.head_bucket_count() == 2


def test_stop_ends_the_reports_warm_renderer_children(settings):
    pool = bounded.WarmPool()
    lifecycle = Lifecycle("reports", on_stop=[pool.close])
    lifecycle.start(settings)
    pool.warm_up(("png",), keep=True, nice=10)
    child = pool._idle["png"][0]
    assert child.poll() is None
    lifecycle.stop()
    assert child.poll() is not None and pool._idle == {}


def test_bad_configuration_fails_at_start_naming_every_problem_and_opens_nothing(settings, bucket):
    lifecycle = Lifecycle("sync")
    bad = _s3(settings, bucket, mode="bogus", secret_key="not-a-fernet-key", link_ttl_seconds=-1)
    with pytest.raises(StartupError) as raised:
        lifecycle.start(bad)
    assert raised.value.lines == [
        "UDB_LINK_TTL_SECONDS: expected 0 (no links) or more seconds, found -1",
        "UDB_MODE: expected one of embedded, stack, cluster; found 'bogus'",
        "UDB_SECRET_KEY: expected a url-safe base64 Fernet key of 32 bytes",
    ]
    assert str(raised.value).startswith("invalid configuration: UDB_LINK_TTL_SECONDS: expected 0")
    assert not lifecycle.alive() and lifecycle.ready() == {"lifecycle": "down: not started"}
    assert bucket.connections == 0 and bucket.requests == []


def test_strict_start_refuses_when_a_required_dependency_is_down(settings):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    lifecycle = Lifecycle("sync")
    down = dataclasses.replace(settings, store="s3", s3_endpoint=f"http://127.0.0.1:{closed}", s3_access_key="k",
                               s3_secret_key="s", strict_startup=True)
    with pytest.raises(StartupError) as raised:
        lifecycle.start(down)
    assert [line.split(":")[0] for line in raised.value.lines] == ["required dependency object_store is down"]
    assert f"127.0.0.1:{closed}" in raised.value.lines[0]
    assert not lifecycle.alive()


def test_start_is_idempotent_and_an_adopted_context_stays_open_for_its_owner(settings, bucket):
    lifecycle = Lifecycle("sync")
    first = lifecycle.start(_s3(settings, bucket))
    assert lifecycle.start(_s3(settings, bucket)) is first and bucket.head_bucket_count() == 1
    lifecycle.stop()
    owner = Lifecycle("artifacts")
    ctx = owner.start(_s3(settings, bucket))
    borrower = Lifecycle("artifacts")
    borrower.adopt(ctx)
    assert borrower.ctx is ctx and borrower.ready()["object_store"] == "up"
    borrower.stop()
    assert _wait(lambda: bucket.open == 1) and owner.ready(fresh=True)["object_store"] == "up"
    owner.stop()
    assert _wait(lambda: bucket.open == 0)


def test_the_context_has_typed_helpers_made_once(settings):
    from shared.observability.lineage import Lineage
    from shared.security.auth import Gatekeeper
    from shared.security.links import Links
    from shared.security.secrets import LocalSecretStore

    lifecycle = Lifecycle("artifacts")
    ctx = lifecycle.start(settings)
    assert not hasattr(ctx, "extras")
    for name, kind in (("gatekeeper", Gatekeeper), ("links", Links), ("secrets", LocalSecretStore),
                       ("lineage", Lineage)):
        helper = getattr(ctx, name)
        assert isinstance(helper, kind) and getattr(ctx, name) is helper, name
    sibling = ctx.sibling("reports")
    assert sibling.store is ctx.store and sibling.job_events is ctx.job_events
    assert sibling.gatekeeper is not ctx.gatekeeper and sibling.report_landed is None
    lifecycle.stop()


def test_the_readiness_cache_setting_is_read_as_a_number():
    from shared.core.errors import ValidationError
    from shared.core.settings import Settings
    assert Settings.from_env(env={"UDB_READY_CACHE_SECONDS": "0.5"}).ready_cache_seconds == 0.5
    with pytest.raises(ValidationError, match="UDB_READY_CACHE_SECONDS: expected float, found 'soon'"):
        Settings.from_env(env={"UDB_READY_CACHE_SECONDS": "soon"})


def test_after_a_fork_the_context_drops_what_the_parent_owns(settings, bucket):
    """What gunicorn's worker does right after the fork (Lifecycle._forked_child), called in
    this process: a new job-events producer, the store's pooled connections dropped (the next
    call opens its own), helpers made again; the same store client and settings."""
    from shared.serving.jobevents import KafkaJobEvents
    lifecycle = Lifecycle("sync")
    # Kafka connects on first use: nothing listens there and nothing is dialled.
    ctx = lifecycle.start(_s3(settings, bucket, kafka_bootstrap="127.0.0.1:9", job_events_topic="udb.job-events"))
    producer, store, gate = ctx.job_events, ctx.store, ctx.gatekeeper
    assert isinstance(producer, KafkaJobEvents) and bucket.open == 1
    ctx.after_fork()
    assert isinstance(ctx.job_events, KafkaJobEvents) and ctx.job_events is not producer
    assert (ctx.job_events.bootstrap, ctx.job_events.topic) == ("127.0.0.1:9", "udb.job-events")
    assert ctx.store is store and ctx.gatekeeper is not gate
    assert _wait(lambda: bucket.open == 0)
    store.ping()  # reconnects: a second connection, the first one gone
    assert bucket.connections == 2 and bucket.open == 1
    producer.close()  # here the "parent's" producer is ours to close
    lifecycle.stop()
    assert _wait(lambda: bucket.open == 0)


def test_prepare_runs_once_at_start_asks_for_spares_and_opens_none_before_a_fork(settings, bucket):
    """The writer's prepare keeps a DuckDB spare with the lake's extensions (httpfs too: the
    store is S3), but start opens none: it runs in gunicorn's master, which only forks; the
    worker opens them (Lifecycle._forked_child), or the first job does. stop drops them."""
    from functions.writer.handler import prepare
    from shared.storage import duck
    duck.spares.close()
    duck.spares.opened = duck.spares.taken = 0
    calls = []

    def counted(ctx):
        calls.append(ctx.function)
        prepare(ctx)

    lifecycle = Lifecycle("writer", prepare=counted)
    lifecycle.start(_s3(settings, bucket))
    lifecycle.start(_s3(settings, bucket))  # idempotent: prepared once
    assert calls == ["writer"]
    assert duck.spares._kinds == {("ducklake", "httpfs")}
    assert (duck.spares.opened, duck.spares._ready) == (0, {})
    duck.spares.fill(wait=True)  # what the forked worker does
    assert duck.spares.opened == 1
    lifecycle.stop()
    assert (duck.spares._kinds, duck.spares._ready) == (set(), {})


def test_discover_and_sync_import_every_connector_at_start(settings):
    import subprocess
    import sys
    code = ("import sys; from shared.core.settings import Settings; from shared.serving.lifecycle import Lifecycle; "
            "from functions.sync.handler import prepare; "
            "before = sorted(m for m in sys.modules if m.startswith('shared.sources.')); "
            "Lifecycle('sync', prepare=prepare).start(Settings.from_env(env={}, home=sys.argv[1])); "
            "from shared.sources import registry; "
            "print(registry._discovered, 'shared.sources.webdav' in before, 'shared.sources.webdav' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(settings.home)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False", "True"], out.stderr

"""Each Trigger's effective delivery, end to end through the real path of a failure: the local
broker (eventing-kafka-broker's rules) on real Kafka, UDB's own routing table (eventing/, under a
namespace of its own so no topic or group is shared with the stack), the dead-letter KafkaSource,
and the real artifacts function process that fails the job.

The writer and analyze are named test peers here (plain HTTP servers answering as each case
needs): analyze answering 500 for one job, the writer answering 500, and analyze answering 200
with a body that is not a CloudEvent. Each is retried exactly as the Trigger's own delivery says
(1 + 3 attempts, 2 s / 4 s / 8 s apart; the reply that is not a CloudEvent is not retried), then
dead-lettered, and its job `failed` with the reason. Current semantics (functions/artifacts/
redrive.py): a 500 or another 4xx fails the job at once; only outage-like answers are parked."""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from devstack.broker import Broker
from shared.core import events
from shared.serving import runtime
from shared.core.routing import load_routes
from shared.core.settings import Settings
from shared.core.tenancy import new_job_id
from tests.conftest import REPO
from tests.function_server import serve
from tests.peers.subscriber import Subscriber

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
TENANT = "acme"


def answering_by_job(answers: dict) -> Subscriber:
    """Stands in for a function: records each delivery and answers by job (202 for others)."""
    return Subscriber(lambda event: answers.get(event["jobid"], (202, {}, b"")))


def eventing_copy(tmp_path: Path, suffix: str) -> Path:
    """eventing/ as it is, in namespace udb<suffix> with its own dead-letter topic and group."""
    target = tmp_path / "eventing"
    target.mkdir()
    for name in ("broker.yaml", "triggers.yaml", "deadletters.yaml"):  # no PingSources here
        text = (REPO / "eventing" / name).read_text()
        text = text.replace("namespace: udb\n", f"namespace: udb{suffix}\n")
        text = text.replace("udb.dead-letters", f"udb.dead-letters-{suffix}")
        text = text.replace("knative-source-udb-dead-letters", f"knative-source-udb{suffix}-dead-letters")
        (target / name).write_text(text)
    return target


def test_failed_deliveries_follow_each_triggers_delivery_then_fail_their_jobs(stack_services, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    eventing = eventing_copy(tmp_path, suffix)
    routes = load_routes(eventing, "udb")
    home = tmp_path / "home"
    analyze_500, writer_500, not_an_event = new_job_id(), new_job_id(), new_job_id()
    analyze = answering_by_job({analyze_500: (500, {}, b"analysis broke"),
                    not_an_event: (200, {"Content-Type": "application/json"}, b'{"status": "done"}')})
    writer = answering_by_job({writer_500: (500, {}, b"load broke")})
    others = answering_by_job({})
    settings = Settings.from_env(env={"UDB_MODE": "stack", "UDB_STORE": "local", "UDB_HOME": str(home),
                                      "UDB_KAFKA_BOOTSTRAP": stack_services["kafka"]})
    ctx = runtime.start("artifacts", settings)
    for job in (analyze_500, writer_500, not_an_event):
        ctx.jobs(TENANT).create(job, hint="s3://x/y.csv")

    with serve("artifacts", home, UDB_AUTH="off", UDB_BROKER_TOKEN="", UDB_EVENTING_DIR=str(eventing),
               UDB_KAFKA_BOOTSTRAP=stack_services["kafka"]) as artifacts:
        subscribers = {"udb-analyze": analyze.url, "udb-writer": writer.url, "udb-discover": others.url,
                       "udb-sync": others.url, "udb-reports": others.url, "udb-artifacts": artifacts.url}

        async def scenario():
            broker = Broker(routes, stack_services["kafka"], subscribers)
            await broker.start()
            try:
                started = time.monotonic()
                await broker.publish(events.make_event(events.ANALYZE_REQUESTED, {}, tenant=TENANT, job_id=analyze_500,
                                                       function="test"))
                await broker.publish(events.make_event(events.ANALYZE_REQUESTED, {}, tenant=TENANT, job_id=not_an_event,
                                                       function="test"))
                # A valid sync.staged (the dead-letter path checks it); the writer peer never reads it.
                staged = {"source_id": "src-1", "source_short": "sales", "autoanalyze": False,
                          "tables": [{"table": "sales", "stream": "sales", "batch_id": "b1",
                                      "parts": ["tenants/acme/staging/x/part-0.parquet"], "rows": 1,
                                      "schema_hash": "h", "columns": [{"name": "id", "type": "BIGINT"}]}]}
                await broker.publish(events.make_event(events.SYNC_STAGED, staged, tenant=TENANT, job_id=writer_500,
                                                       function="test"))
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    states = {job: ctx.jobs(TENANT).get(job)["state"] for job in (analyze_500, writer_500, not_an_event)}
                    if all(state == "failed" for state in states.values()):
                        return time.monotonic() - started, dict(broker.stats)
                    await asyncio.sleep(0.2)
                raise AssertionError(f"jobs not failed in 90 s: {states}")
            finally:
                await broker.stop()

        elapsed, stats = asyncio.run(scenario())

    # analyze-on-analyze-requested and writer-on-sync-staged: retry 3, exponential from 1 s.
    for peer, job in ((analyze, analyze_500), (writer, writer_500)):
        times = peer.times(job)
        assert len(times) == 4, (job, times)
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps == pytest.approx([2.0, 4.0, 8.0], abs=0.5), gaps
    assert len(analyze.times(not_an_event)) == 1  # an answer that is not a CloudEvent is not retried
    assert elapsed >= 14
    assert stats[f"dead-lettered:analyze-on-analyze-requested"] == 2
    assert stats[f"dead-lettered:writer-on-sync-staged"] == 1

    jobs = {job: ctx.jobs(TENANT).get(job) for job in (analyze_500, writer_500, not_an_event)}
    assert {j: (d["error"]["stage"], d["error"]["function"]) for j, d in jobs.items()} == {
        analyze_500: ("analyze", "analyze"), writer_500: ("load", "writer"), not_an_event: ("analyze", "analyze")}
    assert jobs[analyze_500]["error"]["reason"] == (
        f"delivery of dev.udb.analyze.requested to {analyze.url} failed after all retries (HTTP 500): analysis broke")
    assert jobs[writer_500]["error"]["reason"] == (
        f"delivery of dev.udb.sync.staged to {writer.url} failed after all retries (HTTP 500): load broke")
    assert jobs[not_an_event]["error"]["reason"] == (
        f"delivery of dev.udb.analyze.requested to {analyze.url} failed after all retries "
        f'(HTTP 200, a reply that is not a CloudEvent): {{"status": "done"}}')

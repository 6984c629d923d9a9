"""The local broker killed (-9) while idle comes back fast (issue 23, point 3): its ingress
answers within 5 s of the restart, and events posted right after it are delivered exactly once.

The broker opens its ingress before its consumers join their groups, and joins them with
static membership (`--instance`), so a restart does not wait out the killed member's session.
"""
from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest
from cloudevents.http import to_binary

from devstack import stack
from devstack.services import process
from shared.core import events
from shared.core.tenancy import new_job_id
from tests.stack_fixtures import auth_headers, broker_auth, sales_in_minio, wait_for_job

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
INGRESS_BOUND_S = 5.0
# Static membership: the restarted consumers rejoin at once. With dynamic membership the first
# delivery waited out the killed member's 30 s session (29.5-30.6 s measured, docs/reliability.md).
DELIVERY_BOUND_S = 10.0


def jobs_started(function: str, tenant: str) -> float:
    # GET /metrics needs the metrics or broker token (shared/security/auth.py) where the stack sets one.
    text = httpx.get(stack.function_url(function) + "/metrics", headers=broker_auth(), timeout=5).text
    found = re.findall(rf'udb_jobs_started_total{{function="{function}",tenant="{tenant}"}} ([0-9.e+]+)', text)
    return float(found[0]) if found else 0.0


def kill_broker() -> None:
    pid = stack._running("broker")
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process.alive(pid):
        assert time.monotonic() < deadline, "the killed broker did not exit"
        time.sleep(0.05)


def test_broker_killed_while_idle_answers_within_5s_and_delivers_once(running_stack, s3_client, tenant, tmp_path):
    hint = sales_in_minio(s3_client, tenant, tmp_path, 700)
    job = new_job_id()
    event = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autoanalyze": False}, tenant=tenant,
                              job_id=job, function="test")
    headers, body = to_binary(event)
    time.sleep(2)  # idle: nothing in flight
    kill_broker()

    restarted = time.monotonic()
    stack.start_broker()
    with httpx.Client(timeout=2) as client:
        while True:  # the first post that the ingress accepts
            try:
                if client.post(stack.broker_url(), headers={**headers, **broker_auth()}, content=body).status_code == 202:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() - restarted < 30, "the ingress never answered"
            time.sleep(0.05)
    ingress_s = time.monotonic() - restarted
    with httpx.Client(timeout=5) as client:  # the first delivery: discover made the job document
        while client.get(f"{stack.function_url('artifacts')}/status/{job}",
                         headers=auth_headers(tenant)).status_code != 200:
            assert time.monotonic() - restarted < 60, "nothing was delivered after the restart"
            time.sleep(0.05)
    first_delivery_s = time.monotonic() - restarted
    done = wait_for_job(stack.function_url("artifacts"), tenant, job, timeout=90, states=("loaded", "failed"))
    delivered_s = time.monotonic() - restarted
    print(f"\nbroker restart -> ingress {ingress_s:.2f} s, -> first delivery {first_delivery_s:.2f} s, "
          f"-> job loaded {delivered_s:.2f} s")
    assert ingress_s <= INGRESS_BOUND_S
    assert first_delivery_s <= DELIVERY_BOUND_S
    assert done["state"] == "loaded", done.get("error")
    assert list(done["tables"].values()) == [{"rows": 700}]
    # Exactly once: each function started this tenant's job once (no redelivery, no double post).
    assert [jobs_started(f, tenant) for f in ("discover", "sync", "writer")] == [1, 1, 1]

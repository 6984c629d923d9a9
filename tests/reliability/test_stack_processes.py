"""`just stack` after any single kill (issue 23, point 7): status shows each function's master
and its process group, a killed functions-framework (gunicorn) master leaves no worker serving,
and `up`/`down` clear whatever a kill left behind — an orphan of the group, or as a last resort
a listener on the port that belongs to this checkout."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from devstack import services, stack
from devstack.services import ROOT, process

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
PORT = stack.FUNCTION_PORTS["analyze"]
# A stand-in for an orphaned server worker: the parent forks a child that serves HTTP on the
# function's port, then the parent is killed. Its command line names analyze's main.py, as the
# real worker's does (argv[1]), which is how the stack recognises its own processes.
ORPHAN = """
import os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
server = HTTPServer(("127.0.0.1", int(sys.argv[2])), BaseHTTPRequestHandler)
if os.fork() == 0:
    server.serve_forever()
time.sleep(3600)
"""


def wait_until(check, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, what
        time.sleep(0.05)
    return time.monotonic() - started


def port_free() -> bool:
    return not process.port_busy(PORT)


def make_orphan() -> int:
    """An orphan of analyze's recorded process group holding its port; returns its pid."""
    leader = process.spawn("fn-analyze", [sys.executable, "-c", ORPHAN,
                                            str(ROOT / "functions" / "analyze" / "main.py"), str(PORT)], cwd=ROOT)
    wait_until(lambda: len(stack.group("analyze")) == 2 and not port_free(), 10, "the stand-in never listened")
    os.kill(leader, signal.SIGKILL)
    wait_until(lambda: not process.alive(leader), 5, "the leader did not die")
    (orphan,) = stack.group("analyze")
    return orphan


@pytest.fixture
def analyze_restored(running_stack):
    yield
    stack.start_function("analyze")
    assert stack.status()["analyze"]["state"] == "up"


def test_status_shows_each_master_and_its_group(running_stack):
    report = stack.status()
    for name, port in stack.FUNCTION_PORTS.items():
        info = report[name]
        master = info["pid"]
        assert info["state"] == "up" and info["pgid"] == master
        assert "functions-framework" in " ".join(psutil.Process(master).cmdline())
        workers = [pid for pid in info["group"] if pid != master]
        assert len(workers) == 1 and psutil.Process(workers[0]).ppid() == master, info
        assert set(stack.listeners(port)) <= set(info["group"])
    assert report["broker"]["group"] == [report["broker"]["pid"]]
    # The CLI prints the master and the group.
    out = subprocess.run([sys.executable, "-m", "devstack.stack", "status"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60).stdout
    line = next(l for l in out.splitlines() if l.startswith("analyze "))
    info = report["analyze"]
    assert line.endswith(f"pid {info['pid']} group {info['pgid']}: {' '.join(map(str, info['group']))}")


def test_killing_the_master_leaves_no_worker_serving_and_up_works(analyze_restored):
    info = stack.status()["analyze"]
    (worker,) = [pid for pid in info["group"] if pid != info["pid"]]
    os.kill(info["pid"], signal.SIGKILL)
    gone = wait_until(lambda: not process.alive(worker) and port_free(), 5, "the worker outlived its master")
    print(f"\nmaster killed -> worker gone and port free in {gone:.2f} s")
    assert stack.status()["analyze"]["state"] == "down"
    up = subprocess.run([sys.executable, "-m", "devstack.stack", "up"], capture_output=True, text=True, cwd=ROOT,
                        timeout=300)
    assert up.returncode == 0, up.stderr
    assert all(stack.status()[n]["state"] == "up" for n in [*stack.FUNCTION_PORTS, "broker"])


def test_a_killed_worker_is_replaced_by_its_master(analyze_restored):
    info = stack.status()["analyze"]
    (worker,) = [pid for pid in info["group"] if pid != info["pid"]]
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: len(stack.group("analyze")) == 2 and worker not in stack.group("analyze"), 30,
               "gunicorn did not replace its worker")
    wait_until(lambda: stack.status()["analyze"]["state"] == "up", 30, "analyze did not come back")
    assert stack.status()["analyze"]["pid"] == info["pid"]


def test_status_down_and_up_handle_an_orphaned_worker(analyze_restored):
    stack.stop("analyze")
    orphan = make_orphan()
    info = stack.status()["analyze"]
    assert (info["state"], info["pid"], info["group"]) == ("orphaned", None, [orphan])
    stack.stop("analyze")  # what `just stack down` does for each function
    assert not process.alive(orphan) and port_free()

    orphan = make_orphan()
    stack.start_function("analyze")  # what `just stack up` does: the orphan is cleared first
    assert not process.alive(orphan)
    assert httpx.get(stack.function_url("analyze") + "/healthz", timeout=5).status_code == 200


def test_a_listener_of_this_checkout_without_a_pid_file_is_stopped_as_a_last_resort(analyze_restored):
    stack.stop("analyze")
    orphan = make_orphan()
    process.pid_file("fn-analyze").unlink()  # nothing records it any more
    assert stack.status()["analyze"]["state"] == "down" and not port_free()
    assert stack.listeners(PORT) == [orphan]
    stack.stop("analyze")
    assert not process.alive(orphan) and port_free()


def test_a_listener_not_of_this_checkout_is_left_alone(analyze_restored):
    stack.stop("analyze")
    stranger = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(PORT)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: not port_free(), 10, "the stranger never listened")
        stack.stop("analyze")
        assert stranger.poll() is None  # not ours: not killed
        with pytest.raises(services.ServiceError, match=f"port {PORT} is in use by a process not started here"):
            stack.start_function("analyze")
    finally:
        stranger.kill()
        stranger.wait()

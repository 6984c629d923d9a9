"""shared/serving/orphans.py: a forked server worker dies with the process that forked it.

Each case runs in its own Python process, so the at-fork hook is installed there and not in
the test session's process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")]

ROOT = Path(__file__).resolve().parents[2]

# Forks one child, which reports its parent-death signal (prctl PR_GET_PDEATHSIG) and its pid.
CHILD = textwrap.dedent("""
    import ctypes, ctypes.util, os, sys, time
    from shared.serving import orphans
    if sys.argv[1] == "gunicorn":
        sys.modules["gunicorn.arbiter"] = type(sys)("gunicorn.arbiter")  # as inside a gunicorn master
    orphans.die_with_parent()
    orphans.die_with_parent()   # twice: installed once
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        sig = ctypes.c_int(-1)
        libc.prctl(2, ctypes.byref(sig), 0, 0, 0)   # PR_GET_PDEATHSIG
        os.write(write, f"{sig.value} {os.getpid()}\\n".encode())
        time.sleep(30)
        os._exit(0)
    print(os.read(read, 100).decode().strip(), flush=True)
    time.sleep(30)
""")


def _start(mode: str) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    sig, pid = proc.stdout.readline().split()
    return proc, int(sig), int(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _stop(proc: subprocess.Popen, child: int) -> None:
    for pid in (child, proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(5)


def test_a_gunicorn_worker_gets_sigkill_as_its_parent_death_signal_and_dies_with_the_master():
    proc, sig, child = _start("gunicorn")
    try:
        assert sig == signal.SIGKILL
        assert _alive(child)
        os.kill(proc.pid, signal.SIGKILL)   # the master killed outright
        proc.wait(5)
        deadline = time.monotonic() + 3
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child)
    finally:
        _stop(proc, child)


def test_other_forks_keep_their_usual_lifetime():
    proc, sig, child = _start("plain")
    try:
        assert sig == 0
    finally:
        _stop(proc, child)

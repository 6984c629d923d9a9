"""No orphan serves: a forked server worker dies with the process that forked it.

functions-framework runs gunicorn: a master that binds the port and forks a worker, which
inherits the listening socket. When the master is killed outright (SIGKILL, the OOM killer)
the worker used to keep answering on the port with nobody managing it, and the next start
failed on "port in use" (issue 23, point 7). Linux's PR_SET_PDEATHSIG makes the kernel send
the child a signal when its parent goes; set in every forked child (gunicorn forks from its
main thread, the one the signal is tied to). Elsewhere (not Linux) this is a no-op and the
stack's process-group handling (devstack/stack.py) still cleans up.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
_installed = False
_forker: int | None = None  # the pid that is forking, recorded just before the fork


def _remember_forker() -> None:
    global _forker
    _forker = os.getpid()


def _set_parent_death_signal() -> None:
    # Only a server's worker: other forks of a process that made a FunctionApp (a test's
    # multiprocessing pool, say) keep their usual lifetime.
    if "gunicorn.arbiter" not in sys.modules:
        return
    # The forking process, not "pid 1 means orphaned": in a container the gunicorn master is pid 1.
    parent = _forker if _forker is not None else os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the flag was set
        os._exit(1)


def die_with_parent() -> None:
    """Install, once per process, the hook that makes every forked child die with us."""
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_remember_forker, after_in_child=_set_parent_death_signal)
    _installed = True

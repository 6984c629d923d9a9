"""A memory bound and a deadline around one unit of work (an analysis, a report render).

Why: a 250 KB CSV of 4,000 integer columns made analyze grow to 22.9 GB until the kernel
killed it, and the broker's redelivery did it again (issue 23). Nothing one tenant sends may
take a worker down, so the work runs inside a `Bound` and a breach fails the step with a
reason instead of growing:

- DuckDB keeps under its own `memory_limit` (`bounded_duckdb_memory` splits the bound among
  the connections of the work); each connection is registered with `watch(con)`, and the
  moment the bound breaks it is interrupted (`connection.interrupt()`), so a long query ends
  at once with an InterruptException, which `step` turns into the bound's reason.
- Python-side work is watched by a thread that samples the resident memory (RSS) of this
  process and the children the work starts (Chromium rendering PNG charts) every `interval`
  seconds, and the clock. The bound is on what the work *adds* to the resident size it began
  with (after handing freed memory back): the process may host other things — an embedded run
  inside a test runner, an MCP server or a notebook — and a dedicated worker starts small
  (about 0.1–0.3 GB), so its peak stays near the bound. On a breach it interrupts DuckDB and raises `BoundExceeded` in the bounded thread
  (CPython's PyThreadState_SetAsyncExc: it fires at that thread's next bytecode, so a
  pure-Python loop or a pandas call returning to Python stops there), again every second
  until the work has left the bound, so a broad `except Exception` in a library cannot keep
  it going. `check()` between steps raises it too.
- Not RLIMIT_AS: it caps address space, not memory, and children inherit it; Chromium (V8)
  and glibc's per-thread arenas reserve many GB of address space they never touch, so a
  cap low enough to matter breaks PNG charts and threads, and a breach is a crash in C code
  rather than a reason.

The step names what was running (`step("profile", "ra__wide columns 1-64 of 4,000")`) and
ends up in the reason, e.g. "analysis exceeded 2048 MB at step profile ra__wide columns
65-128 of 4,000 (2,101 MB over the 240 MB resident at its start; UDB_ANALYZE_MEMORY_MB)".
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from typing import Iterator, Literal

import psutil

from shared.observability import telemetry
from shared.core.errors import InputError


class BoundExceeded(InputError):
    """The work broke its memory bound or its deadline. Deterministic: the same input would
    break it again, so the job fails with this reason and delivery is not retried."""

    udb_step: str | None = None  # the step it stopped in (telemetry.step_of reads it)


def _descendants(pid: int) -> list[int] | None:
    """`pid`'s descendants from Linux's /proc/<pid>/task/<tid>/children, or None where that is
    not available. psutil's `children()` reads every process's status file to find them: with
    a watchdog sampling every 50 ms on a host running many processes, that was a tenth of a
    small analysis's CPU time."""
    found, todo = [], [pid]
    try:
        while todo:
            current = todo.pop()
            for task in os.listdir(f"/proc/{current}/task"):
                try:
                    with open(f"/proc/{current}/task/{task}/children") as listing:
                        kids = [int(k) for k in listing.read().split()]
                except FileNotFoundError:  # the thread or the process ended while we looked
                    continue
                found += kids
                todo += kids
    except FileNotFoundError:
        if current == pid:
            raise psutil.NoSuchProcess(pid) from None
    except OSError:
        return None
    return found


def process_tree_rss(process: psutil.Process, exclude: frozenset = frozenset()) -> int:
    """Resident bytes of `process` and its children, but those in `exclude` (a child may exit
    while we look)."""
    total = process.memory_info().rss
    pids = _descendants(process.pid)
    children = [c.pid for c in process.children(recursive=True)] if pids is None else pids
    for pid in children:
        if pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def parse_size_mb(text: str) -> int | None:
    """MB of a DuckDB size setting like "1GB", "512MB", "1.5GiB"; None when not understood."""
    units = {"kib": 1 / 1024, "kb": 1 / 1000, "mib": 1, "mb": 1, "gib": 1024, "gb": 1000, "tib": 1024 ** 2,
             "tb": 1000 ** 2, "b": 1 / 1024 ** 2}
    raw = str(text).strip().lower().replace(" ", "")
    for unit in sorted(units, key=len, reverse=True):
        if raw.endswith(unit):
            try:
                return int(float(raw[: -len(unit)]) * units[unit])
            except ValueError:
                return None
    return None


def bounded_duckdb_memory(configured: str, bound_mb: int, share: float) -> str:
    """The memory_limit of one DuckDB connection inside a bound of `bound_mb`: the configured
    limit, but never more than `share` of the bound (several connections and Python share it)."""
    if bound_mb <= 0:
        return configured
    cap = max(64, int(bound_mb * share))
    configured_mb = parse_size_mb(configured)
    if configured_mb is not None and configured_mb <= cap:
        return configured
    return f"{cap}MB"


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the kernel (glibc's malloc_trim), so
    the resident size a bound starts from is what is in use, not what earlier work (in one
    embedded process: sync and load) freed but the allocator kept."""
    import gc
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _is_duckdb_out_of_memory(exc: BaseException) -> bool:
    kind = type(exc)
    return kind.__module__.split(".")[0] in ("duckdb", "_duckdb") and kind.__name__ == "OutOfMemoryException"


class Bound:
    """`with Bound(...) as bound:` runs its block under a memory bound and a deadline.

    memory_mb / deadline_s of 0 turn that bound off. `what` names the work in reasons
    ("analysis"); memory_setting / deadline_setting name the settings a reason points at.
    A caller that must never see the bare asynchronous exception (it can fire while the
    bound is being left) wraps the block with `reasoned()`.
    """

    def __init__(self, *, memory_mb: int, deadline_s: float, what: str = "analysis",
                 memory_setting: str = "UDB_ANALYZE_MEMORY_MB", deadline_setting: str = "UDB_ANALYZE_DEADLINE_S",
                 interval: float = 0.05, log=None):
        self.memory_mb, self.deadline_s, self.what = memory_mb, deadline_s, what
        self.memory_setting, self.deadline_setting = memory_setting, deadline_setting
        self.interval, self.log = interval, log
        self.current = "start"
        self.breach: str | None = None  # the reason, once broken
        self.breach_step: str | None = None
        self.peak_rss = 0  # the largest resident size of the process and the children the work started
        self.start_rss = 0  # ... when the bound was entered
        self._preexisting: frozenset = frozenset()
        self.started = 0.0
        self._ended = 0.0
        self._connections: list = []
        self._stack: list[str] = []
        self.duckdb_memory: str | None = None
        self._lock = threading.Lock()
        self._armed = False
        self._thread_id: int | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._process = psutil.Process()
        self._sampled_at = 0.0  # monotonic time of the last sample
        self.samples = 0  # samples taken (the watchdog's and the checks')

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Bound":
        _release_free_memory()  # what earlier work freed should not count against this bound
        self.started = time.monotonic()
        self._ended = 0.0
        self._thread_id = threading.get_ident()
        self._armed = True
        self._stop.clear()
        # What the bound counts is what the work adds: the process may host other things (an
        # embedded run inside a test runner or an MCP server; the stack's services as children).
        try:
            pids = _descendants(self._process.pid)
            self._preexisting = frozenset(
                [c.pid for c in self._process.children(recursive=True)] if pids is None else pids)
            self.start_rss = process_tree_rss(self._process, self._preexisting)
        except psutil.Error:
            self._preexisting, self.start_rss = frozenset(), 0
        self._sample_peak()  # a breach is found by the first step's check, and named after it
        if self.memory_mb > 0 or self.deadline_s > 0:
            self._watchdog = threading.Thread(target=self._watch, name=f"bound-{self.what}", daemon=True)
            self._watchdog.start()
        return self

    def __exit__(self, kind, exc, tb) -> Literal[False]:
        self._disarm()
        if exc is not None and self.breach and not isinstance(exc, BoundExceeded) or (
                isinstance(exc, BoundExceeded) and not exc.args):
            # The interrupted query's InterruptException, or the bare async exception: say why.
            raise self.error() from None
        return False

    def _disarm(self) -> None:
        self._ended = time.monotonic()
        self._sample_peak()
        with self._lock:
            self._armed = False
            if self._thread_id is not None:
                # Drop an asynchronous exception set but not yet raised: the work is over.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), None)
        self._stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=2)
        self._connections.clear()

    @contextlib.contextmanager
    def reasoned(self) -> Iterator[None]:
        """Around `with bound:` — a BoundExceeded without its reason (the asynchronous one,
        raised while the bound was being left) gets it."""
        try:
            yield
        except BoundExceeded as exc:
            if exc.args:
                raise
            raise self.error() from None

    # -- what the work calls ----------------------------------------------------------------
    def watch(self, con, memory_limit: str | None = None):
        """Register a DuckDB connection: it is interrupted when the bound breaks, and its
        `memory_limit` (what it was opened with) is named when DuckDB runs out of it."""
        self._connections.append(con)
        if memory_limit:
            self.duckdb_memory = memory_limit
        return con

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        """One named step: checked before it starts, and any failure inside it that the bound
        caused becomes the bound's reason naming this step."""
        label = f"{name} {detail}".strip()
        self._stack.append(label)
        self.current = label
        try:
            self.check()
        except BaseException:
            self._leave(label)
            raise
        try:
            yield
        except BoundExceeded as exc:
            self._leave(label)
            if exc.args:
                raise
            raise self.error() from None
        except Exception as exc:
            self._leave(label)
            if self.breach:
                raise self.error() from exc
            if _is_duckdb_out_of_memory(exc):
                # DuckDB kept to its share of the bound: the same failure, said as the bound.
                error = BoundExceeded(
                    f"{self.what} exceeded DuckDB's memory_limit of {self.duckdb_memory or '?'} (its share of "
                    f"{self.memory_mb} MB) at step {label} ({self.memory_setting})")
                error.udb_step = label
                raise error from exc
            telemetry.mark_step(exc, label)
            raise
        self._leave(label)
        self.check()

    def _leave(self, label: str) -> None:
        """Back in the enclosing step; between top-level steps a breach is named "after <last>"."""
        if self._stack and self._stack[-1] == label:
            self._stack.pop()
        self.current = self._stack[-1] if self._stack else f"after {label}"

    def check(self) -> None:
        """Raise BoundExceeded when the bound is broken (between steps, and in loops). It samples
        only when the last sample (the watchdog's, or its own) is older than `interval`: an
        analysis passes ~40 step boundaries in a few hundred milliseconds, and each sample reads
        a /proc file per thread of the process (~0.5 ms in a served function's worker), while
        the watchdog samples every `interval` anyway."""
        if self.breach is None and time.monotonic() - self._sampled_at >= self.interval:
            self._sample()
        if self.breach is not None:
            raise self.error()

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if self.deadline_s <= 0:
            return None
        return self.deadline_s - (time.monotonic() - self.started)

    def error(self) -> BoundExceeded:
        exc = BoundExceeded(self.breach or f"{self.what} was stopped at step {self.current}")
        exc.udb_step = self.breach_step or self.current  # the job document names the step
        return exc

    @property
    def elapsed(self) -> float:
        """Seconds since the bound was entered (until it was left)."""
        return (self._ended or time.monotonic()) - self.started if self.started else 0.0

    @property
    def peak_mb(self) -> int:
        """Peak resident MB of the process and the children the work started."""
        return self.peak_rss // 2 ** 20

    @property
    def start_mb(self) -> int:
        return self.start_rss // 2 ** 20

    # -- the watchdog -----------------------------------------------------------------------
    def _sample_peak(self) -> int:
        """Sample; returns the bytes the work has added since the bound was entered."""
        self._sampled_at = time.monotonic()
        self.samples += 1
        try:
            rss = process_tree_rss(self._process, self._preexisting)
        except psutil.Error:
            rss = 0
        self.peak_rss = max(self.peak_rss, rss)
        return max(0, rss - self.start_rss)

    def _sample(self) -> None:
        added = self._sample_peak()
        if self.breach is not None:
            return
        step = self.current
        # "MB over" is rounded up: a breach by a few KB never reads as the bound itself.
        if self.memory_mb > 0 and added > self.memory_mb * 2 ** 20:
            self.breach = (f"{self.what} exceeded {self.memory_mb} MB at step {step} "
                           f"({-(-added // 2 ** 20):,} MB over the {self.start_rss // 2 ** 20:,} MB resident at its "
                           f"start; {self.memory_setting})")
        elif self.deadline_s > 0 and time.monotonic() - self.started > self.deadline_s:
            self.breach = (f"{self.what} deadline of {self.deadline_s:g} s exceeded at step {step} "
                           f"({self.deadline_setting})")
        if self.breach is not None:
            self.breach_step = step

    def _watch(self) -> None:
        last_strike = 0.0
        while not self._stop.wait(self.interval):
            self._sample()
            if self.breach is None:
                continue
            now = time.monotonic()
            if now - last_strike < 1.0:
                continue
            if last_strike == 0.0 and self.log is not None:
                self.log.warning("stopping the work: %s", self.breach)
            last_strike = now
            self._strike()

    def _strike(self) -> None:
        """Stop the bounded work: interrupt its DuckDB queries, raise in its thread."""
        for con in list(self._connections):
            with contextlib.suppress(Exception):
                con.interrupt()
        with self._lock:
            if self._armed and self._thread_id is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id),
                                                           ctypes.py_object(BoundExceeded))

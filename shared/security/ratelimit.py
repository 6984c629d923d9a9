"""Rate limits per tenant on the HTTP entry points, and the cap on a tenant's concurrent jobs.

- `Limiter`: a token bucket per key (a tenant, or `ip:<address>` for failed authentications)
  in this process: `UDB_RATE_LIMIT` requests per minute refill it, `UDB_RATE_BURST` is its size.
  Each function process keeps its own buckets, so N replicas admit up to N times the rate;
  the limit protects a process (and its store) from one tenant, it is not a billing quota.
- `check_concurrent_jobs`: refuses a new job while the tenant already has
  `UDB_MAX_CONCURRENT_JOBS` live ones (any state but completed/failed, updated within
  `UDB_LIVE_JOB_SECONDS`, so a job orphaned by a crash stops counting, and held by the broker:
  a job whose first event the broker never took is no job, `jobs.held_by_broker`). Counting reads the
  tenant's job documents; two discoveries at the same instant can both pass (a soft cap).
"""
from __future__ import annotations

import json
import math
import threading
import time
from datetime import datetime, timezone

from shared.core.errors import InputError, NotFound, UDBError
from shared.storage.jobs import TERMINAL, held_by_broker


class RateLimited(UDBError):
    """Too many requests: answered 429 with Retry-After (seconds)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class TooManyJobs(RateLimited, InputError):
    """The tenant has too many live jobs: 429 at an HTTP door, a failed job through an event."""


class Limiter:
    """Token buckets, one per key, refilled at `per_minute / 60` tokens a second up to `burst`."""

    def __init__(self, per_minute: int, burst: int, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self.lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, what: str = "requests") -> None:
        """Spend one token of `key`'s bucket, or raise RateLimited saying when one is back."""
        if not self.enabled:
            return
        now = self.clock()
        with self.lock:
            tokens, at = self.buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1:
                self.buckets[key] = (tokens - 1, now)
                if len(self.buckets) > 100_000:  # forget full buckets: they carry no state
                    self._prune(now)
                return
            self.buckets[key] = (tokens, now)
        wait = (1 - tokens) / self.rate
        raise RateLimited(f"too many {what} for {key}: the limit is {self.rate * 60:g} a minute with bursts "
                          f"of {self.burst} (UDB_RATE_LIMIT, UDB_RATE_BURST); retry in {math.ceil(wait)} s", wait)

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for key in full:
            del self.buckets[key]


def live_jobs(store, *, stale_after: float, exclude: str | None = None, now: float | None = None) -> list[str]:
    """Ids of the tenant's live jobs (not completed/failed, updated within `stale_after` s).
    `store` is the tenant's TenantStore."""
    now = time.time() if now is None else now
    live = []
    for info in store.list("jobs/"):
        name = info.key.rsplit("/", 1)[-1]
        if not name.endswith(".json") or name[:-5] == exclude:
            continue
        try:
            doc = json.loads(store.get(info.key).data)
        except (NotFound, ValueError):
            continue  # deleted or being replaced meanwhile
        if doc.get("state") in TERMINAL or not held_by_broker(doc):
            continue
        try:
            updated = datetime.fromisoformat(doc["updated_at"]).astimezone(timezone.utc).timestamp()
        except (KeyError, TypeError, ValueError):
            updated = now
        if stale_after <= 0 or now - updated <= stale_after:
            live.append(name[:-5])
    return live


def check_concurrent_jobs(ctx, tenant: str, job_id: str | None = None) -> None:
    """Raise TooManyJobs when `tenant` already has UDB_MAX_CONCURRENT_JOBS live jobs besides
    `job_id` (the job being started, which may already have its document)."""
    cap = ctx.settings.max_concurrent_jobs
    if cap <= 0:
        return
    live = live_jobs(ctx.tenant_store(tenant), stale_after=ctx.settings.live_job_seconds, exclude=job_id)
    if len(live) >= cap:
        raise TooManyJobs(f"tenant {tenant} already has {len(live)} live jobs; the limit is {cap} "
                          f"(UDB_MAX_CONCURRENT_JOBS): retry when one has finished", 30)

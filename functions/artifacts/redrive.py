"""Resume jobs that ran out of retries because a dependency was down (issue 23, point 5).

A delivery that exhausted its retries reaches `deadletters.handle`. When the failure was an
outage — no answer at all (the function was down or timed out), 502, 503, 504, 408 or 429 — the
job is not failed: the dead letter is *parked* under

    tenants/<t>/deadletters/<job>/<event-key>.json

with an empty marker `redrive/<t>/<job>/<event-key>` beside `locks/` (the sweep lists that small
prefix, not every tenant's objects, once a minute), and the job document gets
`redrive: {state: waiting, function, reason, since, redrives}`.
`POST /admin/redrive` (the `udb-redrive` PingSource, every minute; the stack's local broker
runs the same PingSource) sweeps the parked letters: once the function that failed answers its
`/readyz` with 200, its event goes back to the broker, which delivers it with the Trigger's full
retry budget again, and the letter is removed (delete-if-match). Sent before removed, so a crash
between the two sends it once more rather than never; nothing is duplicated by that: each
function ignores an event of a finished job, and the writer's batch catalogue skips a batch
already applied.

A deterministic failure (any other 4xx, or 500: a bug, the same on every attempt) fails the
job at once, as before. A job resumed `UDB_REDRIVE_MAX` times, or waiting longer than
`UDB_REDRIVE_MAX_AGE_SECONDS`, fails with the last reason and how long it waited.

Which `/readyz` is probed comes from the dead letter's `knativeerrordest` (the subscriber the
broker tried). Only a loopback address (the stack) or a cluster-local Service name
(`*.svc.cluster.local`, `*.svc`) is probed, at its root path with a 2 s timeout and no
redirects: anything else is not a UDB function, and its job fails as before.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
from cloudevents.http import CloudEvent

from shared.core import bindings
from shared.core.errors import NotFound, PreconditionFailed, TransientError
from shared.serving.httpfn import json_response
from shared.storage.jobs import TERMINAL, now_iso
from shared.serving.runtime import Context
from shared.storage.store import TenantStore
from shared.core.tenancy import JOB_RE, TENANT_RE, validate_job_id, validate_tenant

# What an outage looks like to the broker: no answer (code 0), a gateway or the function saying
# "not now". A 500 is the handler failing on this input: retrying later changes nothing.
OUTAGE_CODES = {0, 408, 429, 502, 503, 504}
REDRIVES = "udbredrives"      # extension: how many times this event was resumed already
WAITING_SINCE = "udbwaitsince"  # extension: when its job first started waiting (epoch seconds)
ERROR_EXTENSIONS = ("knativeerrordest", "knativeerrorcode", "knativeerrordata")
PROBE_TIMEOUT = 2.0
MARKERS = "redrive/"
_MARKER_RE = re.compile(r"^redrive/(?P<tenant>[^/]+)/(?P<job>[^/]+)/(?P<key>[0-9a-f]{32})$")


def outage(code: str | None) -> bool:
    try:
        return int(code or 0) in OUTAGE_CODES
    except ValueError:
        return False


def probe_url(dest: str | None) -> str | None:
    """The `/readyz` of the function a dead letter was meant for, if it is one of UDB's."""
    try:
        parts = urlsplit(dest or "")
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return None
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host.endswith(".svc.cluster.local") or host.endswith(".svc")
    if not local:
        return None
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}{f':{port}' if port else ''}/readyz"


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=PROBE_TIMEOUT, follow_redirects=False).status_code == 200
    except httpx.HTTPError:
        return False


def _event_key(event_id: str) -> str:
    return hashlib.sha256(event_id.encode()).hexdigest()[:32]


def _letter_key(job_id: str, event_key: str) -> str:
    """The parked letter, relative to the tenant's prefix."""
    return f"deadletters/{job_id}/{event_key}.json"


def _marker_key(tenant: str, job_id: str, event_key: str) -> str:
    """Outside tenants/ (a raw store key), so every part is checked before it becomes a path."""
    return f"{MARKERS}{validate_tenant(tenant)}/{validate_job_id(job_id)}/{event_key}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def park(ctx: Context, event: CloudEvent, *, function: str, reason: str) -> str | None:
    """Keep an outage's dead letter for the sweep. None when it was parked (or its job is
    finished anyway); else why the job must fail now."""
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    if not outage(attrs.get("knativeerrorcode")):
        return reason
    probe = probe_url(attrs.get("knativeerrordest"))
    now = time.time()
    try:
        redrives = int(attrs.get(REDRIVES, 0))
        since = float(attrs.get(WAITING_SINCE, now))
    except ValueError:
        redrives, since = 0, now
    waited = now - since
    if probe is None or ctx.settings.redrive_max <= 0:
        return reason
    if redrives >= ctx.settings.redrive_max or waited > ctx.settings.redrive_max_age_seconds:
        return f"{reason} (resumed {redrives} times over {waited:.0f} s; still failing)"
    jobs = ctx.jobs(tenant)
    try:
        if jobs.get(job_id)["state"] in TERMINAL:
            return None  # finished meanwhile (a late duplicate): nothing to resume
    except NotFound:
        jobs.ensure(job_id)
    kept = {k: v for k, v in attrs.items() if k not in ERROR_EXTENSIONS}
    kept[WAITING_SINCE] = str(int(since))
    letter = {"attributes": kept, "data": _data(event), "function": function, "reason": reason,
              "probe": probe, "redrives": redrives, "parked_at": now_iso()}
    event_key = _event_key(attrs["id"])
    ctx.tenant_store(tenant).put(_letter_key(job_id, event_key), json.dumps(letter).encode(),
                                 content_type="application/json")
    ctx.store.put(_marker_key(tenant, job_id, event_key), b"")  # after the letter: a marker always has one
    jobs.annotate(job_id, live_only=True, redrive={"state": "waiting", "function": function, "reason": reason,
                               "since": _iso(since), "at": now_iso(), "redrives": redrives})
    ctx.log.warning("job waits for %s to come back (dead letter parked): %s", function, reason)
    return None


def _data(event: CloudEvent):
    data = event.get_data()
    if isinstance(data, bytes):
        data = data.decode()
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def sweep(ctx: Context, *, tenant: str | None = None, probe=ready) -> dict:
    """Send every parked letter whose function is ready back to the broker; the counts."""
    counts = {"parked": 0, "redriven": 0, "waiting": 0, "finished": 0}
    health: dict[str, bool] = {}
    for info in list(ctx.store.list(f"{MARKERS}{tenant}/" if tenant else MARKERS)):
        match = _MARKER_RE.match(info.key)
        if not (match and TENANT_RE.fullmatch(match["tenant"]) and JOB_RE.fullmatch(match["job"])):
            continue
        counts["parked"] += 1
        store = TenantStore(ctx.store, match["tenant"])
        key = _letter_key(match["job"], match["key"])
        try:
            blob = store.get(key)
            letter = json.loads(blob.data)
        except NotFound:  # claimed by a concurrent sweep (or a crash between its two deletes)
            _drop_marker(ctx, info.key)
            counts["parked"] -= 1
            continue
        jobs = ctx.jobs(match["tenant"])
        try:
            finished = jobs.get(match["job"])["state"] in TERMINAL
        except NotFound:
            finished = False
        if finished:
            if _claim(store, key, blob.etag):
                _drop_marker(ctx, info.key)
            counts["finished"] += 1
            continue
        url = letter["probe"]
        if url not in health:
            health[url] = probe(url)
        if not health[url]:
            counts["waiting"] += 1
            continue
        attrs = {**letter["attributes"], REDRIVES: str(letter["redrives"] + 1)}
        try:
            bindings.send_to_broker(ctx.settings, CloudEvent(attrs, letter["data"]))
        except TransientError as exc:
            ctx.log.warning("redrive of job %s postponed: %s", match["job"], exc)
            counts["waiting"] += 1
            continue
        # Sent, then removed: a crash in between sends it once more next minute (harmless: every
        # function ignores what it already did), never zero times.
        _claim(store, key, blob.etag)
        _drop_marker(ctx, info.key)
        jobs.annotate(match["job"], live_only=True, redrive={"state": "redriven", "function": letter["function"],
                                         "reason": letter["reason"], "since": _iso(float(attrs[WAITING_SINCE])),
                                         "at": now_iso(), "redrives": letter["redrives"] + 1})
        ctx.log.info("job %s resumed: %s sent to the broker again (redrive %d)", match["job"], attrs["type"],
                     letter["redrives"] + 1)
        counts["redriven"] += 1
    return counts


def _drop_marker(ctx: Context, key: str) -> None:
    try:
        ctx.store.delete(key)
    except NotFound:
        pass


def _claim(store: TenantStore, key: str, etag: str) -> bool:
    try:
        store.delete(key, if_match=etag)
        return True
    except (PreconditionFailed, NotFound):
        return False


def redrive_route(request, ctx: Context):
    """POST /admin/redrive (a ping CloudEvent or a plain POST; the body is ignored)"""
    from functions.artifacts.admin import _caller_tenant

    tenant = _caller_tenant(request)
    result = sweep(ctx, tenant=tenant)
    result["tenant"] = tenant or "*"
    if result["parked"]:
        ctx.log.info("redrive: %d parked, %d resumed, %d still waiting", result["parked"], result["redriven"],
                     result["waiting"])
    return json_response(result)


ROUTES = [("POST", "/admin/redrive", redrive_route)]

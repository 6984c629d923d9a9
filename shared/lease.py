"""The writer's lease on a tenant's warehouse: `locks/<t>/warehouse.lease`.

Taken with put-if-absent, renewed or taken over (when expired) with put-if-match, released
with delete-if-match. The writer already runs alone (max-scale 1, concurrency 1), the lease
makes that true even across a rollout or a stuck pod.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from shared.errors import NotFound, PreconditionFailed, TransientError
from shared.store import ObjectStore
from shared.tenancy import validate_tenant


@dataclass
class Lease:
    key: str
    owner: str
    etag: str
    expires: float


def lease_key(tenant: str) -> str:
    return f"locks/{validate_tenant(tenant)}/warehouse.lease"


def acquire(store: ObjectStore, tenant: str, *, seconds: float, wait: float, owner: str | None = None,
            poll: float = 0.1) -> Lease:
    key, owner = lease_key(tenant), owner or uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while True:
        expires = time.time() + seconds
        body = json.dumps({"owner": owner, "expires": expires}).encode()
        try:
            return Lease(key, owner, store.put(key, body, if_none_match=True), expires)
        except PreconditionFailed:
            pass
        try:
            held = store.get(key)
            current = json.loads(held.data)
            if current.get("expires", 0) < time.time():
                # Expired: take it over, but only if nobody renewed or took it meanwhile.
                return Lease(key, owner, store.put(key, body, if_match=held.etag), expires)
        except (NotFound, PreconditionFailed, ValueError):
            pass  # released, renewed or taken between our reads: try again
        if time.monotonic() > deadline:
            raise TransientError(f"warehouse lease for {tenant} is held by another writer")
        time.sleep(poll)


def renew(store: ObjectStore, lease: Lease, *, seconds: float) -> Lease:
    expires = time.time() + seconds
    body = json.dumps({"owner": lease.owner, "expires": expires}).encode()
    try:
        etag = store.put(lease.key, body, if_match=lease.etag)
    except PreconditionFailed:
        raise TransientError("lost the warehouse lease") from None
    return Lease(lease.key, lease.owner, etag, expires)


def release(store: ObjectStore, lease: Lease) -> None:
    try:
        store.delete(lease.key, if_match=lease.etag)
    except PreconditionFailed:
        pass  # expired and taken over: nothing of ours to release

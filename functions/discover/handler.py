"""discover: hint -> provider, confidence, catalogue of streams; `dev.udb.source.discovered`."""
from __future__ import annotations

import hashlib
import json

from cloudevents.http import CloudEvent

from functions.discover.detect import detect
from shared import events
from shared.errors import SourceError
from shared.runtime import Context
from shared.sources import module_for

FUNCTION = "discover"


def handle(event: CloudEvent, ctx: Context) -> CloudEvent:
    data = events.event_data(event)
    attrs = event.get_attributes()
    tenant, job_id = attrs["tenant"], attrs["jobid"]
    jobs = ctx.jobs(tenant)
    hint = data["hint"].strip()
    jobs.ensure(job_id, hint=hint, traceparent=attrs.get("traceparent"))
    jobs.move(job_id, "discovering")

    found = detect(hint)
    if not found["candidates"]:
        raise SourceError(f"cannot tell what {hint!r} is: not a path, URL or DSN UDB knows")
    best = found["candidates"][0]
    catalogue = module_for(best["provider"]).inspect(hint)
    # The id is stable for the same hint, so rediscovery updates the same source document.
    source_id = f"{catalogue['short']}-{hashlib.sha256(hint.encode()).hexdigest()[:8]}"
    source = {"id": source_id, "short": catalogue["short"], "provider": catalogue["provider"], "hint": hint,
              "confidence": best["confidence"], "streams": catalogue["streams"]}
    ctx.tenant_store(tenant).put(f"sources/{source_id}.json", json.dumps(source, indent=2).encode(),
                                 content_type="application/json")
    jobs.move(job_id, "discovered", source_id=source_id)
    ctx.log.info("discovered %s with %d streams", source_id, len(source["streams"]))
    autosync, autoanalyze = data.get("autosync", True), data.get("autoanalyze", True)
    return ctx.emit(events.SOURCE_DISCOVERED,
                    {"source": source, "candidates": found["candidates"], "ambiguous": found["ambiguous"],
                     "autosync": autosync, "autoanalyze": autoanalyze},
                    event, autosync=autosync, autoanalyze=autoanalyze)

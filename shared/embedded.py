"""Embedded mode: every function in one process, events routed by the Triggers in `eventing/`.

The dispatcher knows no routes of its own: for each event it asks `Routes.match` which
Triggers fire and calls the handler behind each Trigger's subscriber (Knative Service
`udb-<function>` runs `functions/<function>/handler.py`). Replies re-enter the queue, as
they would re-enter the Broker.
"""
from __future__ import annotations

import importlib
from collections import deque
from typing import Callable

from cloudevents.http import CloudEvent

from shared import runtime
from shared.errors import ValidationError
from shared.routing import Routes, load_routes
from shared.settings import Settings

SERVICE_PREFIX = "udb-"


def handler_for(service: str):
    if not service.startswith(SERVICE_PREFIX):
        raise ValidationError("unknown subscriber", {"subscriber": f"expected a udb-<function> Service, found {service!r}"})
    module = importlib.import_module(f"functions.{service[len(SERVICE_PREFIX):]}.handler")
    return module.FUNCTION, module.handle


class Dispatcher:
    def __init__(self, settings: Settings, on_event: Callable[[CloudEvent], None] | None = None):
        self.settings = settings
        self.routes: Routes = load_routes(settings.eventing_dir, settings.broker_name)
        self.on_event = on_event or (lambda event: None)
        base = runtime.start("embedded", settings)
        self.contexts: dict[str, runtime.Context] = {}
        self._base = base

    def context(self, function: str) -> runtime.Context:
        if function not in self.contexts:
            b = self._base
            self.contexts[function] = runtime.Context(function=function, settings=b.settings, store=b.store,
                                                      job_events=b.job_events, log=runtime.logs.get(function))
        return self.contexts[function]

    def publish(self, event: CloudEvent) -> list[CloudEvent]:
        """Deliver `event` and every reply it causes; returns all events in delivery order."""
        seen, queue = [], deque([event])
        while queue:
            current = queue.popleft()
            seen.append(current)
            self.on_event(current)
            for trigger in self.routes.match(current.get_attributes()):
                function, handle = handler_for(trigger.subscriber)
                reply = runtime.invoke(handle, current, self.context(function))
                if reply is not None:
                    queue.append(reply)
        return seen

"""Embedded mode: every function in one process, events routed by the Triggers in `eventing/`.

The dispatcher knows no routes of its own: for each event it asks `Routes.match` which
Triggers fire and calls the handler behind each Trigger's subscriber (Knative Service
`udb-<function>` runs `functions/<function>/handler.py`). Replies re-enter the queue, as
they would re-enter the Broker.

A delivery that fails (the handler raises) on a Trigger with a dead-letter sink is dead-lettered
as the Broker would after its retries, with the `knativeerror*` extensions, and the KafkaSource
reading that sink's topic gets it (eventing/deadletters.yaml). Embedded mode does not retry:
in one process a crash is a bug, not an outage. Handlers that do not fail their job on a crash
(the reports function) raise; the others have already turned a crash into a failed job.
"""
from __future__ import annotations

import base64
import importlib
from collections import deque
from typing import Callable

from cloudevents.http import CloudEvent

from shared.serving import runtime
from shared.serving.lifecycle import Lifecycle
from shared.core.errors import ValidationError
from shared.core.routing import Routes, load_routes
from shared.core.settings import Settings

SERVICE_PREFIX = "udb-"


def handler_for(service: str):
    if not service.startswith(SERVICE_PREFIX):
        raise ValidationError("unknown subscriber", {"subscriber": f"expected a udb-<function> Service, found {service!r}"})
    module = importlib.import_module(f"functions.{service[len(SERVICE_PREFIX):]}.handler")
    return module.FUNCTION, module.handle


class Dispatcher:
    def __init__(self, settings: Settings, on_event: Callable[[CloudEvent], None] | None = None,
                 skip: tuple[str, ...] = ()):
        self.settings = settings
        self.routes: Routes = load_routes(settings.eventing_dir, settings.broker_name)
        self.on_event = on_event or (lambda event: None)
        self.skip = set(skip)  # subscribers not called (`udb run --no-reports`: udb-reports)
        # One lifecycle for the process: every function's context shares its store and job events.
        self.lifecycle = Lifecycle("embedded")
        self._base = self.lifecycle.start(settings)
        self.contexts: dict[str, runtime.Context] = {}

    def context(self, function: str) -> runtime.Context:
        if function not in self.contexts:
            self.contexts[function] = self._base.sibling(function)
        return self.contexts[function]

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close every function's helpers, then the shared store and job events. Idempotent."""
        for ctx in self.contexts.values():
            ctx.close_helpers()
        self.lifecycle.stop()

    def publish(self, event: CloudEvent) -> list[CloudEvent]:
        """Deliver `event` and every reply it causes; returns all events in delivery order."""
        seen, queue = [], deque([event])
        while queue:
            current = queue.popleft()
            seen.append(current)
            self.on_event(current)
            for trigger in self.routes.match(current.get_attributes()):
                if trigger.subscriber in self.skip:
                    continue
                function, handle = handler_for(trigger.subscriber)
                try:
                    reply = runtime.invoke(handle, current, self.context(function))
                except ValidationError:
                    raise
                except Exception as exc:
                    if not trigger.delivery.dead_letter_sink:
                        raise
                    queue.extend(self._dead_letters(trigger, current, exc))
                    continue
                if reply is not None:
                    queue.append(reply)
        return seen

    def _dead_letters(self, trigger, event: CloudEvent, exc: Exception) -> list[CloudEvent]:
        """The dead letter of `event` as the Broker writes it, for each KafkaSource that reads
        the sink's topic (delivered straight to its subscriber, as a source has no filter)."""
        topic = self.routes.sinks.get(trigger.delivery.dead_letter_sink, trigger.delivery.dead_letter_sink)
        attrs = dict(event.get_attributes())
        attrs["knativeerrordest"] = f"embedded:{trigger.subscriber}"
        attrs["knativeerrorcode"] = "500"
        attrs["knativeerrordata"] = base64.b64encode(f"{type(exc).__name__}: {exc}".encode()[:1024]).decode()
        dead = CloudEvent(attrs, event.get_data())
        self.on_event(dead)
        for source in self.routes.sources:
            if topic in source.topics and source.subscriber not in self.skip:
                function, handle = handler_for(source.subscriber)
                reply = runtime.invoke(handle, dead, self.context(function))
                if reply is not None:
                    return [reply]
        return []

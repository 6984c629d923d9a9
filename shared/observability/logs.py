"""JSON-lines logging with the tenant, job and trace of the event being handled.

The ids come from context variables set by the handler wrapper, so every log line inside a
handler carries them without passing them around.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from contextlib import contextmanager

import opentelemetry.trace as trace

tenant_var = contextvars.ContextVar("tenant", default=None)
job_var = contextvars.ContextVar("job", default=None)
trace_var = contextvars.ContextVar("trace", default=None)
function_var = contextvars.ContextVar("function", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = _span_ids()
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "function": function_var.get(),
            "tenant": tenant_var.get(),
            "job": job_var.get(),
            "trace_id": trace_id or trace_var.get(),
            "span_id": span_id,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            line.update(extra)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _span_ids() -> tuple[str | None, str | None]:
    """(trace id, span id) of the current OpenTelemetry span, if a handler or stage span is open."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


# The level `setup` last set on the "udb" logger; None until it first runs in this process.
_set_level: int | None = None


def setup(level: str = "INFO", stream=None) -> None:
    global _set_level
    root = logging.getLogger("udb")
    if _set_level is not None:
        # Every context started in this process calls this (embedded mode starts one per
        # function, some lazily, mid-job): it follows the setting, but a level someone else set
        # since (the host application, a test raising it to DEBUG) is theirs and stays.
        if root.level == _set_level:
            root.setLevel(level)
            _set_level = root.level
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _set_level = root.level


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"udb.{name}")


@contextmanager
def bound(*, tenant=None, job=None, trace=None, function=None):
    tokens = [(var, var.set(value)) for var, value in
              ((tenant_var, tenant), (job_var, job), (trace_var, trace), (function_var, function))
              if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)

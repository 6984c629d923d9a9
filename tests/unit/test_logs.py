"""shared/observability/logs.py: JSON-lines logs carrying the tenant, job and trace of the event."""
from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared.observability import logs

pytestmark = pytest.mark.unit


def _record(message="hello %s", args=("world",), level=logging.INFO, **attrs) -> logging.LogRecord:
    record = logging.LogRecord("udb.unit", level, __file__, 1, message, args, None)
    for key, value in attrs.items():
        setattr(record, key, value)
    return record


def _format(record) -> dict:
    return json.loads(logs.JsonFormatter().format(record))


def test_a_line_outside_any_handler_has_the_fields_with_none():
    line = _format(_record())
    assert set(line) == {"time", "level", "logger", "function", "tenant", "job", "trace_id", "span_id", "message"}
    assert line["message"] == "hello world"
    assert line["level"] == "info" and line["logger"] == "udb.unit"
    assert line["tenant"] is line["job"] is line["function"] is line["trace_id"] is line["span_id"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_bound_sets_the_ids_and_restores_them():
    with logs.bound(tenant="acme", job="job-0123456789abcdef", function="sync", trace="t" * 32):
        line = _format(_record())
        assert (line["tenant"], line["job"], line["function"], line["trace_id"]) == \
            ("acme", "job-0123456789abcdef", "sync", "t" * 32)
        with logs.bound(tenant="other"):   # nested: only the given ids change
            inner = _format(_record())
            assert (inner["tenant"], inner["job"]) == ("other", "job-0123456789abcdef")
        assert _format(_record())["tenant"] == "acme"
    assert _format(_record())["tenant"] is None


def test_bound_restores_on_error():
    with pytest.raises(RuntimeError), logs.bound(tenant="acme"):
        raise RuntimeError("boom")
    assert logs.tenant_var.get() is None


def test_extra_fields_and_exceptions():
    record = _record(fields={"rows": 3, "path": "a.csv"})
    line = _format(record)
    assert (line["rows"], line["path"]) == (3, "a.csv")
    try:
        raise ValueError("bad value")
    except ValueError:
        failed = _record(level=logging.ERROR, exc_info=sys.exc_info())
    line = _format(failed)
    assert line["level"] == "error"
    assert "ValueError: bad value" in line["exception"]


def test_the_open_span_gives_trace_and_span_ids():
    tracer = TracerProvider().get_tracer("unit")
    with tracer.start_as_current_span("stage") as span, logs.bound(trace="ignored-when-a-span-is-open"):
        line = _format(_record())
        context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_setup_writes_json_lines_and_follows_later_levels(monkeypatch):
    root = logging.getLogger("udb")
    saved = (root.handlers[:], root.level, root.propagate)
    monkeypatch.setattr(logs, "_set_level", None)   # as in a fresh process
    root.handlers = []
    try:
        stream = io.StringIO()
        logs.setup("WARNING", stream=stream)
        logger = logs.get("unit")
        assert logger.name == "udb.unit"
        logger.info("dropped")
        logger.warning("kept %d", 7)
        assert [json.loads(x)["message"] for x in stream.getvalue().splitlines()] == ["kept 7"]
        logs.setup("DEBUG")            # a later context follows the setting, no second handler
        assert root.level == logging.DEBUG and len(root.handlers) == 1
        root.setLevel(logging.ERROR)   # someone else's level stays
        logs.setup("INFO")
        assert root.level == logging.ERROR
    finally:
        root.handlers, root.propagate = saved[0], saved[2]
        root.setLevel(saved[1])

"""shared/core/errors.py: which failures are retried, and how several problems are reported."""
from __future__ import annotations

import pytest

from shared.core.errors import (
    InputError,
    JobFailed,
    JobNotAccepted,
    NotFound,
    SourceError,
    TransientError,
    ValidationError,
    is_transient,
)

pytestmark = pytest.mark.unit


def test_validation_error_names_every_problem_sorted_and_is_a_value_error():
    err = ValidationError("bad event", {"tenant": "missing", "data.hint": "expected a string, found 42"})
    assert str(err) == "bad event: data.hint: expected a string, found 42; tenant: missing"
    assert err.to_dict() == {"error": "bad event",
                             "problems": {"tenant": "missing", "data.hint": "expected a string, found 42"}}
    assert isinstance(err, InputError) and isinstance(err, ValueError)
    assert str(ValidationError("nothing wrong", {})) == "nothing wrong"


def test_not_found_prints_its_message_unquoted():
    assert str(NotFound("tenants/acme/jobs/x.json")) == "tenants/acme/jobs/x.json"
    assert str(NotFound()) == "not found"
    assert isinstance(NotFound("k"), KeyError)


def test_job_errors_keep_what_the_door_answers_with():
    refused = JobNotAccepted("broker down", "job-0123456789abcdef")
    assert refused.job_id == "job-0123456789abcdef" and is_transient(refused)
    failed = JobFailed("analyze: division by zero", {"stage": "analyze"})
    assert (failed.reason, failed.cause, str(failed)) == ("analyze: division by zero", {"stage": "analyze"},
                                                          "analyze: division by zero")
    assert JobFailed("x").cause == {}


class ConnectTimeout(Exception):
    """Named like httpx's, from a module outside the transient list."""


def _from_module(module: str, name: str) -> type:
    return type(name, (Exception,), {"__module__": module})


@pytest.mark.parametrize("exc, transient", [
    (TransientError("store down"), True),
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (_from_module("botocore.exceptions", "EndpointConnectionError")(), True),
    (_from_module("httpx", "ConnectTimeout")(), True),
    (_from_module("aiokafka.errors", "KafkaConnectionError")(), True),
    (_from_module("aiokafka.errors", "UnknownTopicOrPartitionError")(), False),  # no transient word
    (ConnectTimeout(), False),                                                   # not a client library
    (SourceError("ragged CSV"), False),
    (ValueError("bad"), False),
])
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_is_transient_follows_the_cause_chain():
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer) is True
    chained = RuntimeError("wrapped")
    chained.__cause__ = chained  # a cycle stops after ten links instead of looping
    assert is_transient(chained) is False

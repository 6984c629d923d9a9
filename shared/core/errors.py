"""Errors UDB raises on purpose.

Two families matter to delivery: `InputError` (the event or the data is wrong: answer 400 or
fail the job, never retry) and `TransientError` (a dependency is down: answer 5xx so the
broker retries with backoff). Any other exception is deterministic unless `is_transient` says
otherwise: it fails its job with the full cause and is answered 422 (`JobFailed`), not retried.
"""
from __future__ import annotations


class UDBError(Exception):
    """Base of every error UDB raises on purpose."""


class InputError(UDBError, ValueError):
    """Bad input: a hint, a file, an event. Retrying will not help."""


class ValidationError(InputError):
    """Several problems at once, keyed by field (CloudEvents SDK style)."""

    def __init__(self, message: str, problems: dict[str, str]):
        self.problems = dict(problems)
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(self.problems.items()))
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message

    def to_dict(self) -> dict:
        return {"error": self.message, "problems": self.problems}


class SourceError(InputError):
    """The source cannot be read as given (missing, empty, garbage, ragged, unsupported)."""


class NotFound(UDBError, KeyError):
    """A key, job or artifact that does not exist (for this tenant)."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "not found"


class PreconditionFailed(UDBError):
    """A conditional write lost: the object exists (If-None-Match) or changed (If-Match)."""


class TransientError(UDBError):
    """A dependency is unavailable; the same request may succeed later."""


class JobNotAccepted(TransientError):
    """The broker did not take a job's first event: the job was failed at once (it never existed
    for the pipeline) and the client may start it again after Retry-After."""

    def __init__(self, message: str, job_id: str):
        super().__init__(message)
        self.job_id = job_id


class JobFailed(UDBError):
    """A deterministic failure (a bug, or an error no retry can fix) that has already failed its
    job with the full cause. The HTTP door answers 422 with the reason: Knative's Kafka broker
    retries 5xx and 404, 408, 409, 429 only, so the event is dead-lettered at once instead of
    being delivered six more times for the same answer."""

    def __init__(self, reason: str, cause: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.cause = dict(cause or {})


class StartupError(UDBError):
    """A function cannot start: its configuration is invalid, or (UDB_STRICT_STARTUP) a required
    dependency is down. `lines` says each problem in a line of its own, for stderr."""

    def __init__(self, message: str, lines: list[str]):
        super().__init__(f"{message}: " + "; ".join(lines) if lines else message)
        self.message = message
        self.lines = list(lines)


# Exception types of the libraries UDB talks to dependencies through whose names say the
# dependency was not reached (in case one escapes the store's and the job events' own wrapping).
_TRANSIENT_MODULES = ("botocore", "urllib3", "httpx", "httpcore", "aiokafka", "kafka")
_TRANSIENT_WORDS = ("Connect", "Timeout", "TimedOut", "Unavailable", "NotReady", "Transport", "Network",
                    "Endpoint")


def is_transient(exc: BaseException | None) -> bool:
    """True when `exc` (or an exception it was raised from) says a dependency is unavailable:
    a TransientError, a connection or timeout error, or such an error of a client library."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (TransientError, ConnectionError, TimeoutError)):
            return True
        kind = type(exc)
        if kind.__module__.split(".")[0] in _TRANSIENT_MODULES and any(w in kind.__name__ for w in _TRANSIENT_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False

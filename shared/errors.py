"""Errors UDB raises on purpose.

Two families matter to delivery: `InputError` (the event or the data is wrong: answer 400 or
fail the job, never retry) and `TransientError` (a dependency is down: answer 5xx so the
broker retries with backoff).
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

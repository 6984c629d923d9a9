"""shared/analysis/evidentlyresult.py: JSON-safe values and the drift verdict, on known inputs."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import numpy as np
import pytest

from shared.analysis.evidentlyresult import drift_verdict, json_safe

pytestmark = pytest.mark.unit


def test_json_safe_known_values():
    value = {1: decimal.Decimal("2.50"), "when": dt.datetime(2026, 12, 6, 10, 0, 5), "day": dt.date(2026, 12, 6),
             "lag": dt.timedelta(minutes=1, seconds=30), "nan": float("nan"), "inf": float("-inf"),
             "id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "raw": b"\x00\xff",
             "n": np.int64(7), "x": np.float32(0.5), "arr": np.array([1, 2, 3]), "set": {3}, "t": (True, None)}
    assert json_safe(value) == {
        "1": 2.5, "when": "2026-12-06T10:00:05", "day": "2026-12-06", "lag": 90.0, "nan": None, "inf": None,
        "id": "12345678-1234-5678-1234-567812345678", "raw": "00ff", "n": 7, "x": 0.5, "arr": [1, 2, 3],
        "set": [3], "t": [True, None]}
    json.dumps(json_safe(value), allow_nan=False)  # strictly valid JSON


def _drift(column: str, method: str, score: float, threshold: float) -> dict:
    return {"config": {"type": "evidently:metric_v2:ValueDrift", "column": column, "method": method,
                       "threshold": threshold}, "value": score}


RESULT = {
    "metrics": [
        {"config": {"type": "evidently:metric_v2:DriftedColumnsCount", "drift_share": 0.5},
         "value": {"count": 2, "share": 2 / 3}},
        _drift("amount", "K-S p_value", 0.001, 0.05),       # p-value below the threshold: drifted
        _drift("region", "chi-square p_value", 0.40, 0.05),  # above: not drifted
        _drift("score", "Wasserstein distance (normed)", 0.08, 0.1),  # distance below: not by score...
    ],
    # ...but its Value Drift test failed, and a test's status wins over the score.
    "tests": [{"metric_config": {"params": {"type": "evidently:test_v2:ValueDrift", "column": "score"}},
               "status": "FAIL"}],
}


def test_drift_verdict_known_answer():
    assert drift_verdict(RESULT) == {
        "dataset_drift": True, "drifted_columns": ["amount", "score"], "share": 2 / 3, "drifted_count": 2,
        "threshold": 0.5,
        "columns": [
            {"column": "amount", "method": "K-S p_value", "score": 0.001, "threshold": 0.05, "drifted": True},
            {"column": "region", "method": "chi-square p_value", "score": 0.40, "threshold": 0.05, "drifted": False},
            {"column": "score", "method": "Wasserstein distance (normed)", "score": 0.08, "threshold": 0.1,
             "drifted": True}]}


def test_no_columns_is_no_drift():
    assert drift_verdict({}) == {"dataset_drift": False, "drifted_columns": [], "share": 0.0, "drifted_count": 0,
                                 "threshold": 0.5, "columns": []}

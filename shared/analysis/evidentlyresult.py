"""Reading Evidently's result dicts without importing Evidently: the drift verdict of a
DataDriftPreset run, and JSON-safe values. Used by the reports function (which renders
Evidently) and by analyze's summary (which states drift facts from a verdict)."""
from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from typing import Any


def json_safe(value: Any) -> Any:
    """Convert DuckDB/numpy/Python values into JSON-serialisable ones.

    Decimal -> float, date/time -> ISO string, NaN/inf -> None, UUID/bytes -> str,
    maps -> dicts with string keys, numpy scalars and arrays -> Python values.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    # numpy / pandas scalars and arrays, without importing them here.
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def drift_verdict(result: dict) -> dict:
    """Compact verdict from an evidently_drift() result dict.

    Returns {dataset_drift, drifted_columns, share, drifted_count, threshold, columns}
    where columns is [{column, method, score, threshold, drifted}]. A column is drifted
    when its Evidently "Value Drift" test failed; without tests the score is compared
    to the threshold (p-value methods drift below it, distances at or above it).
    """
    metrics = result.get("metrics", [])
    failed_tests: dict[str, bool] = {}
    for test in result.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith(":ValueDrift") and "column" in params:
            failed_tests[params["column"]] = test.get("status") == "FAIL"

    share, count, threshold = 0.0, 0, 0.5
    columns = []
    for metric in metrics:
        config = metric.get("config") or {}
        kind = config.get("type", "")
        value = metric.get("value")
        if kind.endswith(":DriftedColumnsCount") and isinstance(value, dict):
            share = float(value.get("share") or 0.0)
            count = int(value.get("count") or 0)
            threshold = float(config.get("drift_share", threshold))
        elif kind.endswith(":ValueDrift"):
            column = config.get("column")
            method = str(config.get("method", ""))
            limit = config.get("threshold")
            if column in failed_tests:
                drifted = failed_tests[column]
            elif value is None or limit is None:
                drifted = False
            elif "p_value" in method:
                drifted = value < limit
            else:
                drifted = value >= limit
            columns.append({"column": column, "method": method, "score": value, "threshold": limit, "drifted": drifted})
    drifted_columns = [c["column"] for c in columns if c["drifted"]]
    return {
        # Evidently's rule: the dataset drifts when the drifted share reaches drift_share.
        "dataset_drift": bool(columns) and share >= threshold,
        "drifted_columns": drifted_columns,
        "share": share,
        "drifted_count": count,
        "threshold": threshold,
        "columns": columns,
    }

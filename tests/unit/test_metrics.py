"""shared/observability/metrics.py: the Prometheus metrics contract (docs/metrics.md)."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.observability import metrics

pytestmark = pytest.mark.unit


def _families() -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}


def _value(family: str, sample: str, **labels) -> float | None:
    for s in _families()[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_exposition_names_every_documented_metric():
    names = set(_families())
    for name in ("udb_jobs", "udb_stage_duration_seconds", "udb_rows_synced", "udb_bytes_staged",
                 "udb_duckdb_write_duration_seconds", "udb_writer_lease_wait_seconds", "udb_kpi_duration_seconds",
                 "udb_artifact_bytes", "udb_artifacts_per_job", "udb_profile_duration_seconds",
                 "udb_dependency_up", "udb_http_requests", "udb_jobs_started", "udb_writer_queue_depth",
                 "udb_profile_coverage_ratio", "udb_report_duration_seconds", "udb_lineage_events"):
        assert name in names, name


def test_writer_queue_depth_starts_at_zero_for_both_states():
    for state in ("waiting_lease", "loading"):
        assert _value("udb_writer_queue_depth", "udb_writer_queue_depth", state=state) == 0.0


def test_a_counter_increment_shows_in_the_exposition():
    labels = {"function": "unit-mirror", "tenant": "mirror-t", "outcome": "completed"}
    before = _value("udb_jobs", "udb_jobs_total", **labels) or 0.0
    metrics.jobs_total.labels(**labels).inc()
    metrics.jobs_total.labels(**labels).inc(2)
    assert _value("udb_jobs", "udb_jobs_total", **labels) == before + 3


def test_a_histogram_observation_lands_in_its_buckets():
    labels = {"function": "unit-mirror", "stage": "mirror-stage"}
    metrics.stage_seconds.labels(**labels).observe(0.3)
    assert _value("udb_stage_duration_seconds", "udb_stage_duration_seconds_bucket", le="0.25", **labels) == 0.0
    assert _value("udb_stage_duration_seconds", "udb_stage_duration_seconds_bucket", le="0.5", **labels) == 1.0
    assert _value("udb_stage_duration_seconds", "udb_stage_duration_seconds_count", **labels) == 1.0
    assert _value("udb_stage_duration_seconds", "udb_stage_duration_seconds_sum", **labels) == pytest.approx(0.3)


def test_profile_coverage_buckets_end_at_one():
    metrics.profile_coverage.labels("mirror-profile").observe(0.5)
    buckets = [s.labels["le"] for s in _families()["udb_profile_coverage_ratio"].samples
               if s.name.endswith("_bucket") and s.labels["profile"] == "mirror-profile"]
    assert buckets == ["0.01", "0.05", "0.1", "0.25", "0.5", "0.75", "0.9", "0.99", "1.0", "+Inf"]

"""Prometheus metrics of every function (the contract is documented in docs/metrics.md)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

jobs_total = Counter("udb_jobs_total", "Jobs handled by a function, by outcome",
                     ["function", "tenant", "outcome"], registry=REGISTRY)
stage_seconds = Histogram("udb_stage_duration_seconds", "Time spent in one handler stage",
                          ["function", "stage"], registry=REGISTRY,
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
rows_synced = Counter("udb_rows_synced_total", "Rows staged by sync", ["tenant"], registry=REGISTRY)
bytes_staged = Counter("udb_bytes_staged_total", "Parquet bytes staged by sync", ["tenant"], registry=REGISTRY)
duckdb_write_seconds = Histogram("udb_duckdb_write_duration_seconds", "Writer load and upload time",
                                 ["tenant"], registry=REGISTRY)
lease_wait_seconds = Histogram("udb_writer_lease_wait_seconds", "Time waiting for the warehouse lease",
                               registry=REGISTRY)
kpi_seconds = Histogram("udb_kpi_duration_seconds", "KPI query latency", registry=REGISTRY,
                        buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
artifact_bytes = Counter("udb_artifact_bytes_total", "Bytes of artifacts written", ["tenant"], registry=REGISTRY)
artifacts_per_job = Histogram("udb_artifacts_per_job", "Artifacts written per job", registry=REGISTRY,
                              buckets=(1, 5, 10, 20, 50, 100))
profile_seconds = Histogram("udb_profile_duration_seconds", "Full-table profile time", registry=REGISTRY)
dependency_up = Gauge("udb_dependency_up", "1 when a required dependency answers", ["component"], registry=REGISTRY)
http_requests = Counter("udb_http_requests_total", "HTTP requests by function, path kind and status",
                        ["function", "route", "status"], registry=REGISTRY)
jobs_started = Counter("udb_jobs_started_total", "Events of a job a function started handling",
                       ["function", "tenant"], registry=REGISTRY)
# The writer serves one event at a time (containerConcurrency 1); this is what it holds right
# now: an event waiting for the tenant's lease, or one loading. The backlog in front of it is
# the writer Trigger's consumer-group lag on the broker topic (docs/metrics.md).
writer_queue_depth = Gauge("udb_writer_queue_depth", "Writer events in flight, by state (waiting_lease, loading)",
                           ["state"], registry=REGISTRY)
for _state in ("waiting_lease", "loading"):
    writer_queue_depth.labels(_state).set(0)
profile_coverage = Histogram("udb_profile_coverage_ratio", "Share of a table's rows a profile covered "
                             "(duckdb: the full-table profile, sampled: ydata-profiling and Evidently)",
                             ["profile"], registry=REGISTRY,
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0))
# The reports function (ydata-profiling, Evidently, PNG charts), one observation per report.
report_seconds = Histogram("udb_report_duration_seconds", "Time to render one report in its bounded child process, "
                           "by kind and outcome (ready, failed)", ["report", "outcome"], registry=REGISTRY,
                           buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600))
lineage_events = Counter("udb_lineage_events_total", "OpenLineage run events by type and result (sent, failed)",
                         ["event_type", "result"], registry=REGISTRY)


def exposition() -> bytes:
    return generate_latest(REGISTRY)

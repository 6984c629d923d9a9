"""Logs, Prometheus metrics, OpenTelemetry traces and OpenLineage events."""

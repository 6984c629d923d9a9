"""Every UDB setting, declared once.

Each field names its environment variable and its default; `Settings.from_env()` is the only
place that reads `os.environ` for UDB settings. Precedence: explicit keyword arguments to
`from_env(**overrides)` > environment > the default declared here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from shared.errors import ValidationError


def _setting(env: str, default, doc: str):
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    mode: str = _setting("UDB_MODE", "embedded", "embedded | stack | cluster")
    home: Path = _setting("UDB_HOME", Path(".udb"), "embedded data root (local object store lives here)")
    store: str = _setting("UDB_STORE", "local", "object store backend: local | s3")
    bucket: str = _setting("UDB_BUCKET", "udb", "bucket holding tenants/ and locks/")
    s3_endpoint: str = _setting("UDB_S3_ENDPOINT", "", "S3 endpoint URL (MinIO), empty for AWS")
    s3_access_key: str = _setting("UDB_S3_ACCESS_KEY", "", "S3 access key id")
    s3_secret_key: str = _setting("UDB_S3_SECRET_KEY", "", "S3 secret access key")
    s3_region: str = _setting("UDB_S3_REGION", "us-east-1", "S3 region")
    kafka_bootstrap: str = _setting("UDB_KAFKA_BOOTSTRAP", "", "Kafka bootstrap servers; empty disables job events on Kafka")
    job_events_topic: str = _setting("UDB_JOB_EVENTS_TOPIC", "udb.job-events", "Kafka topic for job-state changes")
    broker_url: str = _setting("K_SINK", "", "where functions send events they originate (SinkBinding's K_SINK)")
    namespace: str = _setting("UDB_NAMESPACE", "udb", "Knative namespace of the Broker")
    broker_name: str = _setting("UDB_BROKER_NAME", "udb", "name of the Broker")
    eventing_dir: Path = _setting("UDB_EVENTING_DIR", Path(__file__).resolve().parent.parent / "eventing",
                                  "folder of Knative Eventing YAML read for routes")
    profile_sample_rows: int = _setting("UDB_REPORT_SAMPLE_ROWS", 50_000,
                                        "row threshold above which ydata-profiling and Evidently see a sample")
    staging_part_bytes: int = _setting("UDB_STAGING_PART_BYTES", 64 * 1024 * 1024, "target size of one staged Parquet part")
    lease_seconds: int = _setting("UDB_LEASE_SECONDS", 120, "writer lease duration")
    lease_wait_seconds: int = _setting("UDB_LEASE_WAIT_SECONDS", 60, "how long the writer waits for a held lease")
    duckdb_memory_limit: str = _setting("UDB_DUCKDB_MEMORY_LIMIT", "1GB", "DuckDB memory_limit per connection")
    duckdb_threads: int = _setting("UDB_DUCKDB_THREADS", 2, "DuckDB threads per connection")
    secrets_backend: str = _setting("UDB_SECRETS", "local", "secret store: local (encrypted file under UDB_HOME) | kubernetes")
    secret_key: str = _setting("UDB_SECRET_KEY", "", "Fernet key of the local secret store; empty: a key file under UDB_HOME")
    faults: str = _setting("UDB_FAULTS", "", "test only: comma-separated crash points, e.g. writer.after_lease")
    strict_startup: bool = _setting("UDB_STRICT_STARTUP", False, "exit at start when a required dependency is down")
    log_level: str = _setting("UDB_LOG_LEVEL", "INFO", "log level")
    function: str = _setting("UDB_FUNCTION", "", "which function this process serves (stack/cluster)")

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values, problems = {}, {}
        for f in fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
                continue
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _convert(raw, type(f.default))
            except ValueError:
                problems[f.metadata["env"]] = f"expected {type(f.default).__name__}, found {raw!r}"
        settings = cls(**values)
        problems.update(settings._problems())
        if problems:
            raise ValidationError("invalid settings", problems)
        return settings

    def _problems(self) -> dict:
        problems = {}
        if self.mode not in ("embedded", "stack", "cluster"):
            problems["UDB_MODE"] = f"expected one of embedded, stack, cluster; found {self.mode!r}"
        if self.store not in ("local", "s3"):
            problems["UDB_STORE"] = f"expected one of local, s3; found {self.store!r}"
        if self.secrets_backend not in ("local", "kubernetes"):
            problems["UDB_SECRETS"] = f"expected one of local, kubernetes; found {self.secrets_backend!r}"
        if self.store == "s3" and not self.s3_endpoint and not self.s3_access_key:
            problems["UDB_S3_ENDPOINT"] = "the s3 store needs an endpoint or credentials"
        return problems

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(env var, default, meaning) for every setting: the README table is built from this."""
        return [(f.metadata["env"], str(f.default), f.metadata["doc"]) for f in fields(cls)]


def _convert(raw: str, kind: type):
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if kind is int:
        return int(raw)
    if issubclass(kind, Path):
        return Path(raw)
    return raw

"""Every UDB setting, declared once.

Each field names its environment variable and its default; `Settings.from_env()` is the only
place that reads `os.environ` for UDB settings. Precedence: explicit keyword arguments to
`from_env(**overrides)` > environment > the default declared here.

Settings are built once, at an entry point (`functions/*/main.py`, the front ends, devstack,
a child process's `__main__`), and passed down: nothing below an entry point reads the
environment (tests/unit/test_settings_passdown.py enforces it). A child process gets its
parent's Settings through `child_env` (as UDB_* variables) and builds them once in its main.

This module imports nothing above `shared.core`: the values it validates (the network
allowlist, the national-id patterns) are parsed here, and the security modules that use them
call the same parsers, so bad configuration fails at start with the same message.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from shared.core.errors import SourceError, ValidationError


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
    eventing_dir: Path = _setting("UDB_EVENTING_DIR", Path(__file__).resolve().parents[2] / "eventing",
                                  "folder of Knative Eventing YAML read for routes")
    profile_sample_rows: int = _setting("UDB_REPORT_SAMPLE_ROWS", 50_000,
                                        "row threshold above which ydata-profiling and Evidently see a sample")
    kpi_timeout_ms: int = _setting("UDB_KPI_TIMEOUT_MS", 10_000, "time limit of one KPI query (milliseconds)")
    kpi_max_rows: int = _setting("UDB_KPI_MAX_ROWS", 10_000, "row cap of one KPI result; more rows are cut and flagged")
    kpi_max_bytes: int = _setting("UDB_KPI_MAX_BYTES", 1024 * 1024, "byte cap of one KPI result (its rows as compact "
                                  "JSON); rows past it are cut and flagged")
    kpi_max_cell_chars: int = _setting("UDB_KPI_MAX_CELL_CHARS", 10_000, "longest text cell of a KPI result; "
                                       "longer ones are cut and counted")
    kpi_max_definitions: int = _setting("UDB_KPI_MAX_DEFINITIONS", 200, "KPI definitions one tenant may store")
    chart_png: bool = _setting("UDB_CHART_PNG", True, "render every KPI chart to PNG too (headless Chromium via kaleido)")
    chromium_path: str = _setting("UDB_CHROMIUM_PATH", "",
                                  "Chromium for PNG charts; empty: BROWSER_PATH, then chromium on PATH")
    browser_path: str = _setting("BROWSER_PATH", "", "Chromium for PNG charts when UDB_CHROMIUM_PATH is empty "
                                 "(the variable kaleido's own tooling reads)")
    # The reports function (functions/reports): every engine runs in a child process under these bounds.
    reports_max_columns: int = _setting("UDB_REPORTS_MAX_COLUMNS", 200, "ydata-profiling and Evidently see at most "
                                        "this many columns of a table (the first ones; the index says so); 0: all")
    reports_deadline_seconds: int = _setting("UDB_REPORTS_DEADLINE_SECONDS", 120, "a report still rendering after "
                                             "this many seconds is stopped and recorded as failed")
    reports_memory_mb: int = _setting("UDB_REPORTS_MEMORY_MB", 1536, "a report whose renderer (with its children) "
                                      "uses more resident memory than this is stopped and recorded as failed")
    reports_workers: int = _setting("UDB_REPORTS_WORKERS", 2, "reports of one job rendered at once (one process each)")
    reports_budget_seconds: int = _setting("UDB_REPORTS_BUDGET_SECONDS", 480, "all reports of one job: a report not "
                                           "started within this many seconds fails (fits the Trigger's 10 min timeout)")
    drift_cache: bool = _setting("UDB_DRIFT_CACHE", True,
                                 "cache each drift reference (sampled, PII-masked) under tenants/<t>/cache/")
    staging_part_bytes: int = _setting("UDB_STAGING_PART_BYTES", 64 * 1024 * 1024, "target size of one staged Parquet part")
    lease_seconds: int = _setting("UDB_LEASE_SECONDS", 10, "writer lease duration; renewed every third of it "
                                  "while a load runs, so a crashed writer's lease is free within it")
    lease_wait_seconds: int = _setting("UDB_LEASE_WAIT_SECONDS", 60, "how long the writer waits for a held lease")
    redrive_max: int = _setting("UDB_REDRIVE_MAX", 5, "how many times a job dead-lettered by an outage (no answer, "
                                "502/503/504, 408, 429) is resumed once its function is ready again; 0: never")
    redrive_max_age_seconds: int = _setting("UDB_REDRIVE_MAX_AGE_SECONDS", 3600,
                                            "how long such a job waits for its function before it fails")
    duckdb_memory_limit: str = _setting("UDB_DUCKDB_MEMORY_LIMIT", "1GB", "DuckDB memory_limit per connection")
    duckdb_threads: int = _setting("UDB_DUCKDB_THREADS", 2, "DuckDB threads per connection")
    # Bounds of one analysis (issue 23; docs/reliability.md "Bounded analysis"); 0 turns one off.
    analyze_memory_mb: int = _setting("UDB_ANALYZE_MEMORY_MB", 2048,
                                      "memory bound of one analysis: resident MB it adds to the process (and the "
                                      "children it starts); DuckDB's memory_limit is kept inside it; a breach "
                                      "fails the job at that step")
    analyze_deadline_s: int = _setting("UDB_ANALYZE_DEADLINE_S", 540,
                                       "deadline of one analysis in seconds, inside the analyze Triggers' delivery "
                                       "timeout (PT10M) so no analysis is redelivered while it still runs; "
                                       "a breach fails the job at that step")
    secrets_backend: str = _setting("UDB_SECRETS", "local", "secret store: local (encrypted file under UDB_HOME) | kubernetes")
    secrets_namespace: str = _setting("UDB_SECRETS_NAMESPACE", "", "namespace of the tenant Secrets (kubernetes store); "
                                      "empty: UDB_NAMESPACE")
    secret_key: str = _setting("UDB_SECRET_KEY", "", "Fernet key of the local secret store; empty: a key file under UDB_HOME")
    # Security (issue 8; docs/security.md). Limits: 0 turns one off.
    auth: str = _setting("UDB_AUTH", "auto", "authentication on HTTP entry points: on | off | auto "
                         "(auto: off in embedded mode, on in stack and cluster)")
    jwt_secret: str = _setting("UDB_JWT_SECRET", "", "HS256 key (>= 32 chars) for signed JWTs; empty: API keys only")
    broker_token: str = _setting("UDB_BROKER_TOKEN", "", "shared token the broker sends to functions and "
                                 "internal senders send to the broker; empty: network policy only")
    trust_network: bool = _setting("UDB_TRUST_NETWORK", True, "with no UDB_BROKER_TOKEN, take a call without "
                                   "credentials to a system door (POST /, POST /admin/prune) as UDB's own: only "
                                   "where the network admits nothing but the eventing data plane (a cluster-local "
                                   "Service); public Services set 0")
    auth_cache_seconds: int = _setting("UDB_AUTH_CACHE_SECONDS", 30, "how long a verified API key is cached "
                                       "(a revoked key stops working within this time)")
    link_ttl_seconds: int = _setting("UDB_LINK_TTL_SECONDS", 3600, "how long a signed report link "
                                     "(/s/<token>/artifact/<job>/...) opens after it is made; 0 turns links off")
    rate_limit: int = _setting("UDB_RATE_LIMIT", 1200, "HTTP requests per minute per tenant and process")
    rate_burst: int = _setting("UDB_RATE_BURST", 100, "requests a tenant may send at once above the rate")
    max_concurrent_jobs: int = _setting("UDB_MAX_CONCURRENT_JOBS", 16, "live (not completed/failed) jobs per tenant")
    live_job_seconds: int = _setting("UDB_LIVE_JOB_SECONDS", 3600, "a live job not updated for this long "
                                     "no longer counts against UDB_MAX_CONCURRENT_JOBS")
    max_body_bytes: int = _setting("UDB_MAX_BODY_BYTES", 4 * 1024 ** 2, "largest HTTP request body but uploads")
    # Before a body is read (shared/security/bodyguard.py, issue 16): slow senders, anonymous callers, JWT lifetime.
    body_timeout_seconds: int = _setting("UDB_BODY_TIMEOUT_SECONDS", 10, "time a request body may take beyond "
                                         "what its size needs at UDB_BODY_MIN_RATE; slower bodies get 408")
    body_min_rate: int = _setting("UDB_BODY_MIN_RATE", 1024 ** 2, "slowest sending rate (bytes a second) a "
                                  "request body is given time for")
    anon_body_readers: int = _setting("UDB_ANON_BODY_READERS", 2, "request bodies one address without "
                                      "credentials may be sending at once (more get 429 before being read)")
    anon_body_readers_total: int = _setting("UDB_ANON_BODY_READERS_TOTAL", 4, "request bodies all callers "
                                            "without credentials may be sending at once; keep it below THREADS")
    jwt_max_seconds: int = _setting("UDB_JWT_MAX_SECONDS", 24 * 3600, "longest lifetime (exp - iat) a JWT may "
                                    "have; longer tokens are refused")
    metrics_token: str = _setting("UDB_METRICS_TOKEN", "", "bearer token Prometheus sends to GET /metrics "
                                  "(the broker token opens it too); empty: only the broker token")
    max_uncompressed_bytes: int = _setting("UDB_MAX_UNCOMPRESSED_BYTES", 4 * 1024 ** 3,
                                           "largest inflated size of a zip (.xlsx) or gzip source")
    max_compression_ratio: int = _setting("UDB_MAX_COMPRESSION_RATIO", 200,
                                          "largest inflation ratio of a zip entry above 10 MiB")
    max_rows: int = _setting("UDB_MAX_ROWS", 100_000_000, "most rows one stream may have")
    max_columns: int = _setting("UDB_MAX_COLUMNS", 4096, "most columns one stream may have")
    max_cell_chars: int = _setting("UDB_MAX_CELL_CHARS", 1_000_000, "longest text value of one cell")
    max_json_depth: int = _setting("UDB_MAX_JSON_DEPTH", 20, "deepest nesting of a JSON source or request body")
    pii_national_ids: str = _setting("UDB_PII_NATIONAL_IDS", "", "national-id patterns PII masking finds in text "
                                     "and columns: a JSON object {name: regex} or one regex; empty: the defaults "
                                     "(us_ssn, uk_nino, it_codice_fiscale; docs/security.md)")
    s3_source_buckets: str = _setting("UDB_S3_SOURCE_BUCKETS", "", "comma-separated buckets an s3:// hint may read "
                                      "with UDB's own object-store keys; empty: any but UDB_BUCKET (never readable)")
    file_roots: str = _setting("UDB_FILE_ROOTS", "", "comma-separated folders that local-path hints may read; "
                               "empty: any path in embedded mode, none in stack and cluster")
    faults: str = _setting("UDB_FAULTS", "", "test only: comma-separated crash points, e.g. writer.after_lease")
    strict_startup: bool = _setting("UDB_STRICT_STARTUP", False, "exit at start when a required dependency is down")
    ready_cache_seconds: float = _setting("UDB_READY_CACHE_SECONDS", 5.0,
                                          "how old /readyz's dependency report may be (refreshed in the background)")
    log_level: str = _setting("UDB_LOG_LEVEL", "INFO", "level of the JSON-lines logs on stderr (the CLI: ERROR unless set)")
    function: str = _setting("UDB_FUNCTION", "", "which function this process serves (stack/cluster)")
    # Retention (POST /admin/prune on the artifacts function, daily from eventing/prune.yaml); 0 keeps forever.
    staging_retention_days: int = _setting("UDB_STAGING_RETENTION_DAYS", 2,
                                           "days after a job's last update its staged Parquet is deleted")
    artifact_retention_days: int = _setting("UDB_ARTIFACT_RETENTION_DAYS", 30,
                                            "days after a job's last update its artifacts are deleted")
    snapshot_retention_days: int = _setting("UDB_SNAPSHOT_RETENTION_DAYS", 7,
                                            "days a warehouse (lake) snapshot stays readable by time travel; "
                                            "each table's drift reference and the current snapshot are always kept")
    net_allowlist: str = _setting("UDB_NET_ALLOWLIST", "",
                                  "comma-separated CIDRs and host names that source connections may reach "
                                  "although private, loopback or link-local (empty: public addresses only)")
    max_download_bytes: int = _setting("UDB_MAX_DOWNLOAD_BYTES", 2 * 1024 ** 3,
                                       "largest file fetched from an HTTP or WebDAV source (2 GiB)")
    max_upload_bytes: int = _setting("UDB_MAX_UPLOAD_BYTES", 1024 ** 3, "largest file accepted by POST /uploads (1 GiB)")
    max_page_bytes: int = _setting("UDB_MAX_PAGE_BYTES", 64 * 1024 ** 2,
                                   "largest single response page of a REST/JSON API (64 MiB)")
    # OAuth for OneDrive/SharePoint (Microsoft identity platform v2) and Google Drive (docs/providers.md, "OAuth").
    oauth_redirect_url: str = _setting("UDB_OAUTH_REDIRECT_URL", "http://127.0.0.1:18085/oauth/callback",
                                       "the artifacts function's public URL + /oauth/callback, as registered "
                                       "with Microsoft and Google")
    ms_authority: str = _setting("UDB_OAUTH_MS_AUTHORITY", "https://login.microsoftonline.com/common/oauth2/v2.0",
                                 "Microsoft identity platform v2 base: <base>/authorize, /token, /devicecode")
    ms_client_id: str = _setting("UDB_OAUTH_MS_CLIENT_ID", "", "application (client) id of UDB's Entra app; "
                                 "empty: OneDrive/SharePoint links cannot be authorized")
    ms_client_secret: str = _setting("UDB_OAUTH_MS_CLIENT_SECRET", "", "client secret of a confidential (web) "
                                     "Entra app; empty: a public client (PKCE only)")
    ms_scopes: str = _setting("UDB_OAUTH_MS_SCOPES", "Files.Read.All offline_access",
                              "space-separated Microsoft Graph scopes requested")
    graph_url: str = _setting("UDB_GRAPH_URL", "https://graph.microsoft.com/v1.0", "Microsoft Graph API base URL")
    google_auth_url: str = _setting("UDB_OAUTH_GOOGLE_AUTH_URL", "https://accounts.google.com/o/oauth2/v2/auth",
                                    "Google authorization endpoint")
    google_token_url: str = _setting("UDB_OAUTH_GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token",
                                     "Google token endpoint")
    google_device_url: str = _setting("UDB_OAUTH_GOOGLE_DEVICE_URL", "https://oauth2.googleapis.com/device/code",
                                      "Google device authorization endpoint")
    google_client_id: str = _setting("UDB_OAUTH_GOOGLE_CLIENT_ID", "", "OAuth client id of UDB's Google Cloud "
                                     "project; empty: Google Drive links cannot be authorized")
    google_client_secret: str = _setting("UDB_OAUTH_GOOGLE_CLIENT_SECRET", "", "that client's secret")
    google_scopes: str = _setting("UDB_OAUTH_GOOGLE_SCOPES", "https://www.googleapis.com/auth/drive.readonly",
                                  "space-separated Google scopes requested")
    gdrive_url: str = _setting("UDB_GDRIVE_URL", "https://www.googleapis.com/drive/v3", "Google Drive API v3 base URL")
    # Observability (issue 7; docs/observability.md).
    otel_exporter: str = _setting("UDB_OTEL_EXPORTER", "none", "where trace spans go: none | otlp | file")
    otel_endpoint: str = _setting("UDB_OTEL_ENDPOINT", "", "OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces "
                                  "(empty: the OTEL_EXPORTER_OTLP_* environment, else localhost:4318)")
    otel_file: str = _setting("UDB_OTEL_FILE", "", "JSON-lines span file of this process (UDB_OTEL_EXPORTER=file)")
    lineage: str = _setting("UDB_LINEAGE", "none", "where OpenLineage run events go: none | http | file")
    lineage_url: str = _setting("UDB_LINEAGE_URL", "", "OpenLineage HTTP endpoint, e.g. http://marquez:5000/api/v1/lineage")
    lineage_file: str = _setting("UDB_LINEAGE_FILE", "", "JSON-lines file of OpenLineage run events (UDB_LINEAGE=file)")
    # The MCP server (`udb mcp`, docs/mcp.md).
    mcp_token: str = _setting("UDB_MCP_TOKEN", "", "API key or JWT the stdio MCP server acts with (empty: "
                              "with authentication off, a local admin of --tenant)")
    discover_url: str = _setting("UDB_DISCOVER_URL", "http://127.0.0.1:18081",
                                 "discover's HTTP API, for `udb mcp --stack` (POST /sources/discover_connect)")
    artifacts_url: str = _setting("UDB_ARTIFACTS_URL", "http://127.0.0.1:18085",
                                  "the artifacts function's HTTP API as users reach it: `udb mcp --stack` calls it "
                                  "(status, artifacts, KPIs) and signed report links point at it")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
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
        if self.auth not in ("on", "off", "auto"):
            problems["UDB_AUTH"] = f"expected one of on, off, auto; found {self.auth!r}"
        if self.jwt_secret and len(self.jwt_secret) < 32:
            problems["UDB_JWT_SECRET"] = f"expected at least 32 characters, found {len(self.jwt_secret)}"
        if self.store == "s3" and not self.s3_endpoint and not self.s3_access_key:
            problems["UDB_S3_ENDPOINT"] = "the s3 store needs an endpoint or credentials"
        if self.net_allowlist:
            try:
                parse_allowlist(self.net_allowlist)
            except SourceError as exc:
                problems["UDB_NET_ALLOWLIST"] = str(exc).split(": ", 1)[-1]
        if self.otel_exporter not in ("none", "otlp", "file"):
            problems["UDB_OTEL_EXPORTER"] = f"expected one of none, otlp, file; found {self.otel_exporter!r}"
        elif self.otel_exporter == "file" and not self.otel_file:
            problems["UDB_OTEL_FILE"] = "UDB_OTEL_EXPORTER=file needs a span file path"
        if self.lineage not in ("none", "http", "file"):
            problems["UDB_LINEAGE"] = f"expected one of none, http, file; found {self.lineage!r}"
        elif self.lineage == "http" and not self.lineage_url.startswith(("http://", "https://")):
            problems["UDB_LINEAGE_URL"] = f"UDB_LINEAGE=http needs an http(s) URL, found {self.lineage_url!r}"
        elif self.lineage == "file" and not self.lineage_file:
            problems["UDB_LINEAGE_FILE"] = "UDB_LINEAGE=file needs a file path"
        for env, url in (("UDB_OAUTH_REDIRECT_URL", self.oauth_redirect_url), ("UDB_OAUTH_MS_AUTHORITY", self.ms_authority),
                         ("UDB_GRAPH_URL", self.graph_url), ("UDB_OAUTH_GOOGLE_AUTH_URL", self.google_auth_url),
                         ("UDB_OAUTH_GOOGLE_TOKEN_URL", self.google_token_url),
                         ("UDB_OAUTH_GOOGLE_DEVICE_URL", self.google_device_url), ("UDB_GDRIVE_URL", self.gdrive_url)):
            if not url.startswith(("http://", "https://")):
                problems[env] = f"expected an http(s) URL, found {url!r}"
        if self.pii_national_ids:
            try:
                parse_national_ids(self.pii_national_ids)
            except ValueError as exc:
                problems["UDB_PII_NATIONAL_IDS"] = str(exc)
        for env, cap in (("UDB_KPI_MAX_BYTES", self.kpi_max_bytes), ("UDB_KPI_MAX_CELL_CHARS", self.kpi_max_cell_chars),
                         ("UDB_KPI_MAX_DEFINITIONS", self.kpi_max_definitions)):
            if cap < 1:
                problems[env] = f"expected a positive number, found {cap}"
        if self.link_ttl_seconds < 0:
            problems["UDB_LINK_TTL_SECONDS"] = f"expected 0 (no links) or more seconds, found {self.link_ttl_seconds}"
        for env, value in (("UDB_ANALYZE_MEMORY_MB", self.analyze_memory_mb),
                           ("UDB_ANALYZE_DEADLINE_S", self.analyze_deadline_s)):
            if value < 0:
                problems[env] = f"expected 0 (off) or more, found {value}"
        for env, days in (("UDB_STAGING_RETENTION_DAYS", self.staging_retention_days),
                          ("UDB_ARTIFACT_RETENTION_DAYS", self.artifact_retention_days),
                          ("UDB_SNAPSHOT_RETENTION_DAYS", self.snapshot_retention_days)):
            if days < 0:
                problems[env] = f"expected 0 (keep forever) or more days, found {days}"
        return problems

    def problems(self) -> dict[str, str]:
        """Every problem of these settings by variable (empty when valid): a function's start
        checks settings it was handed, which `dataclasses.replace` may have changed unchecked."""
        return self._problems()

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(env var, default, meaning) for every setting: the docs/settings.md table is generated from this."""
        return [(f.metadata["env"], str(f.default), f.metadata["doc"]) for f in fields(cls)]

    def as_env(self) -> dict[str, str]:
        """These settings as the environment variables `from_env` reads back to equal Settings
        (how a child process gets its parent's settings)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out


def child_env(settings: Settings | None = None, *, pythonpath: str | None = None,
              **extra: str) -> dict[str, str]:
    """The environment of a child process UDB starts: this process's environment (PATH, HOME
    and what third-party libraries read), `settings` as UDB_* variables so the child's
    `Settings.from_env()` equals them, `pythonpath` put first on PYTHONPATH, then `extra`."""
    env = dict(os.environ)
    if settings is not None:
        env.update(settings.as_env())
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def library_env(values: Mapping[str, str], *, force: bool = False) -> None:
    """Tell third-party libraries loaded in this process how to behave (no usage pings, offline
    model hubs, a headless plotting backend), through the environment they read. Only names
    UDB does not read itself; existing values are kept unless `force`."""
    for key, value in values.items():
        if key.startswith("UDB_"):
            raise ValueError(f"{key} is a UDB setting: pass Settings, do not set the environment")
        if force:
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)


# ---------------------------------------------------------------- values parsed here and in security

ALLOWLIST_SETTING = "UDB_NET_ALLOWLIST"


def _hostname_ok(name: str) -> bool:
    return bool(name) and all(part and len(part) < 64 and part.replace("-", "").replace("_", "").isalnum()
                              for part in name.split("."))


def parse_allowlist(allowlist: str | Iterable[str]) -> tuple[tuple, frozenset, tuple, frozenset]:
    """(networks, host names, wildcard suffixes, single addresses) of `UDB_NET_ALLOWLIST` text
    (or its entries); SourceError naming every entry that is not a CIDR, address or host name.
    shared.security.netguard.Guard is built from this."""
    entries = [e.strip() for e in (allowlist.split(",") if isinstance(allowlist, str) else allowlist)]
    networks: list = []
    hosts: set[str] = set()
    wildcards: list[str] = []
    exact: set = set()
    problems: list[str] = []
    for entry in filter(None, entries):
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            name = entry.lower().rstrip(".")
            if name.startswith("*.") and _hostname_ok(name[2:]):
                wildcards.append(name[1:])
            elif _hostname_ok(name):
                hosts.add(name)
            else:
                problems.append(entry)
            continue
        networks.append(net)
        if net.num_addresses == 1:
            exact.add(net.network_address)
    if problems:
        raise SourceError(f"{ALLOWLIST_SETTING}: not a CIDR, address or host name: {', '.join(problems)}")
    return tuple(networks), frozenset(hosts), tuple(wildcards), frozenset(exact)


# National ids, by name: the default of UDB_PII_NATIONAL_IDS. Each pattern is searched in any
# text (so it must not match ordinary numbers) and matched whole against column values.
DEFAULT_NATIONAL_IDS = {
    # US Social Security number, dashed (area not 000, 666 or 9xx; group not 00; serial not 0000).
    "us_ssn": r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b",
    # UK National Insurance number: two letters (not D, F, I, Q, U, V; second not O), six
    # digits, A-D; spaced or not.
    "uk_nino": r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
    # Italian codice fiscale.
    "it_codice_fiscale": r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b",
}


def parse_national_ids(raw: str) -> dict[str, str]:
    """The national-id patterns a UDB_PII_NATIONAL_IDS value names: empty -> the defaults; a
    JSON object {"name": "regex", ...} -> exactly those (`{}`: none); anything else -> that one
    regex, named "national_id". Raises ValueError for a value that does not compile."""
    text = (raw or "").strip()
    if not text:
        return dict(DEFAULT_NATIONAL_IDS)
    patterns: Any
    if text.startswith("{"):
        try:
            patterns = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object of name: regex ({exc})") from None
        if not isinstance(patterns, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in patterns.items()):
            raise ValueError("expected a JSON object of name: regex strings")
    else:
        patterns = {"national_id": text}
    for name, pattern in patterns.items():
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {name!r} does not compile: {exc}") from None
        if compiled.search(""):
            raise ValueError(f"pattern {name!r} matches the empty string")
    return patterns


def _convert(raw: str, kind: type):
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if kind is int:
        return int(raw)
    if kind is float:  # UDB_READY_CACHE_SECONDS: a string here broke /readyz's age comparison
        return float(raw)
    if issubclass(kind, Path):
        return Path(raw)
    return raw

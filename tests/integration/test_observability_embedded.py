"""Observability in one process (embedded mode): OpenLineage run events, log hygiene, traces.

Jobs run through `udb run`'s code path (`frontends.cli.run_hint`) with lineage and spans written
to files under the test's directory and every log line captured: a PostgreSQL table of people
(e-mail addresses) behind a DSN with a fresh password, a run without analysis, and two failing
runs (a wrong password: discovery fails; a header-only CSV: sync fails).
"""
from __future__ import annotations

import io
import json
import logging
import re
import threading
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from frontends import cli
from shared.observability import lineage, logs, metrics, telemetry
from shared.core.settings import Settings
from tests.conftest import REPO, write_sales

pytestmark = pytest.mark.integration
ROWS = 120
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def observed(tmp_path):
    """Settings writing lineage and spans to files, and a capture of every log line (UDB's
    JSON lines at DEBUG, and any other library's records)."""
    settings = Settings.from_env(env={}, home=tmp_path / "udb", eventing_dir=REPO / "eventing",
                                 profile_sample_rows=5_000, log_level="DEBUG", chart_png=False,
                                 net_allowlist="127.0.0.0/8,::1", lineage="file",
                                 lineage_file=str(tmp_path / "lineage.jsonl"), otel_exporter="file",
                                 otel_file=str(tmp_path / "spans.jsonl"))
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    udb_logger, root = logging.getLogger("udb"), logging.getLogger()
    udb_logger.addHandler(handler)
    root.addHandler(handler)
    old_root = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield settings, buffer
    finally:
        udb_logger.removeHandler(handler)
        root.removeHandler(handler)
        root.setLevel(old_root)


def run(settings, hint: str, tenant: str, capsys, analyze: bool = True) -> tuple[int, str, str]:
    code = cli.run_hint(settings, hint, tenant, analyze=analyze)
    out = capsys.readouterr()
    job_id = re.search(r"job (job-[0-9a-f]+)", out.out).group(1)
    return code, job_id, out.out + out.err


@pytest.fixture
def people(stack_services):
    """A PostgreSQL table of people with e-mail addresses, readable by a role with a fresh password."""
    tag = uuid.uuid4().hex[:10]
    secret, domain = f"Sekr1t-{uuid.uuid4().hex}", f"p{tag}.example.org"
    role, table = f"obs_e{tag}", f"people_e{tag}"
    admin = stack_services["postgres"]
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
        pg.execute(f"""CREATE TABLE {table} AS
            SELECT i AS person_id, 'person' || i || '@{domain}' AS email, (i % 7)::double precision AS score
            FROM generate_series(1, {ROWS}) AS s(i)""")
        pg.execute(f"GRANT SELECT ON {table} TO {role}")
    host = admin.rsplit("@", 1)[1].split("/")[0]
    yield {"hint": f"postgresql://{role}:{secret}@{host}/udb?table=public.{table}", "secret": secret,
           "domain": domain, "table": table, "host": host, "role": role}
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {table}")
        pg.execute(f"DROP ROLE IF EXISTS {role}")


def assert_run_event(event: dict, event_type: str, tenant: str, job_id: str) -> None:
    """The RunEvent fields of OpenLineage 2-0-2 this emitter promises."""
    assert event["eventType"] == event_type
    assert event["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    assert event["producer"].startswith("https://")
    assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    assert UUID_RE.match(event["run"]["runId"]) and event["run"]["runId"] == lineage.run_id(tenant, job_id)
    assert event["job"]["namespace"] == f"udb/{tenant}"


def test_a_postgres_job_emits_start_and_complete_and_logs_no_secret(observed, people, capsys):
    settings, captured = observed
    tenant = "obs-embedded"
    code, job_id, printed = run(settings, people["hint"], tenant, capsys)
    assert code == 0, printed

    events_ = lineage.read_events(settings.lineage_file)
    assert [e["eventType"] for e in events_] == ["START", "COMPLETE"]
    start, complete = events_
    for event in events_:
        assert_run_event(event, event["eventType"], tenant, job_id)
        assert event["inputs"] == [{"namespace": f"postgres://{people['host']}",
                                    "name": f"udb.public.{people['table']}", "facets": {}}]
    source_id = start["job"]["name"]
    assert source_id.startswith("udb-") and complete["job"]["name"] == source_id
    assert start["outputs"] == []
    assert complete["outputs"] == [{
        "namespace": f"duckdb://udb/{tenant}", "name": f"udb__{people['table']}", "facets": {},
        "outputFacets": {"outputStatistics": {"_producer": lineage.PRODUCER, "_schemaURL": lineage.OUTPUT_STATS_URL,
                                              "rowCount": ROWS}}}]
    assert start["eventTime"] < complete["eventTime"]

    # Nothing printed, logged, traced or sent to lineage shows the password or an address.
    text = captured.getvalue()
    assert f'"job": "{job_id}"' in text  # the capture did see the job
    for where, content in (("logs", text), ("output", printed), ("lineage", json.dumps(events_)),
                           ("spans", open(settings.otel_file).read())):
        assert people["secret"] not in content, f"the DSN password is in the {where}"
        assert people["domain"] not in content, f"an e-mail address is in the {where}"

    # One trace in one process: five handler spans in a chain (reports follows the completed job),
    # stages under their handler.
    spans = telemetry.read_spans(settings.otel_file)  # this test's file: this job's spans only
    handlers = [s for s in spans if s["kind"] == "CONSUMER"]
    assert [h["name"].split()[0] for h in handlers] == ["discover", "sync", "writer", "analyze", "reports"]
    assert len({s["trace_id"] for s in handlers}) == 1
    for parent, child in zip(handlers, handlers[1:]):
        assert child["parent_span_id"] == parent["span_id"]
    by_id = {h["span_id"]: h["name"].split()[0] for h in handlers}
    stage_parents = {s["name"]: by_id.get(s["parent_span_id"]) for s in spans if s["kind"] == "INTERNAL"
                     and s["trace_id"] == handlers[0]["trace_id"]}
    assert stage_parents == {"probe": "discover", "extract": "sync", "stage": "sync", "lease": "writer",
                             "load": "writer", "upload": "writer", "profile": "analyze", "kpi": "analyze",
                             "render": "analyze", "report": "reports"}
    # Log lines inside handlers carry the trace and the span they were written in.
    job_lines = [json.loads(line) for line in text.splitlines() if f'"job": "{job_id}"' in line]
    span_ids = {s["span_id"] for s in spans}
    assert job_lines and all(e["trace_id"] == handlers[0]["trace_id"] and e["span_id"] in span_ids
                             for e in job_lines)


def test_a_wrong_password_fails_discovery_with_start_and_fail_and_no_secret(observed, people, capsys):
    settings, captured = observed
    wrong = f"Wr0ng-{uuid.uuid4().hex}"
    hint = people["hint"].replace(people["secret"], wrong)
    code, job_id, printed = run(settings, hint, "obs-failed", capsys)
    assert code == 1

    events_ = lineage.read_events(settings.lineage_file)
    assert [e["eventType"] for e in events_] == ["START", "FAIL"]
    for event in events_:
        assert_run_event(event, event["eventType"], "obs-failed", job_id)
        assert event["job"]["name"] == "undiscovered"  # discovery never named the source
        assert event["inputs"][0]["name"] == f"udb.public.{people['table']}"
    message = events_[1]["run"]["facets"]["errorMessage"]
    assert message["programmingLanguage"] == "python" and message["message"].startswith("discover in discover: ")
    assert events_[0]["eventTime"] <= events_[1]["eventTime"]
    for where, content in (("logs", captured.getvalue()), ("output", printed), ("lineage", json.dumps(events_))):
        assert wrong not in content, f"the DSN password is in the {where}"


def test_a_sync_failure_emits_fail_under_the_source_name(observed, tmp_path, capsys):
    settings, _ = observed
    empty = tmp_path / "empty" / "orders.csv"
    empty.parent.mkdir()
    empty.write_text("order_id,amount\n")
    code, job_id, printed = run(settings, str(empty), "obs-empty", capsys)
    assert code == 1, printed
    events_ = lineage.read_events(settings.lineage_file)
    assert [e["eventType"] for e in events_] == ["START", "FAIL"]
    start, fail = events_
    assert start["job"]["name"] == fail["job"]["name"] != "undiscovered"
    assert start["inputs"] == [{"namespace": "file", "name": str(empty), "facets": {}}]
    assert "no rows" in fail["run"]["facets"]["errorMessage"]["message"]
    assert fail["outputs"] == []


def test_without_analysis_complete_is_sent_at_loaded(observed, tmp_path, capsys):
    settings, _ = observed
    path = write_sales(tmp_path / "shop" / "sales.csv", 300)
    code, job_id, printed = run(settings, str(path), "obs-loaded", capsys, analyze=False)
    assert code == 0, printed
    events_ = lineage.read_events(settings.lineage_file)
    assert [e["eventType"] for e in events_] == ["START", "COMPLETE"]
    assert events_[1]["outputs"][0]["name"] == "shop__sales"
    assert events_[1]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 300


class LineagePeer(BaseHTTPRequestHandler):
    """A test peer speaking OpenLineage's HTTP API (`POST /api/v1/lineage`, as Marquez serves)."""
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/api/v1/lineage" or self.headers["Content-Type"] != "application/json":
            self.send_response(404)
        else:
            LineagePeer.received.append(json.loads(body))
            self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_transport_posts_each_event_and_a_dead_endpoint_never_fails_the_job(tmp_path, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), LineagePeer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    LineagePeer.received = []
    path = write_sales(tmp_path / "web" / "sales.csv", 50)
    base = dict(env={}, home=tmp_path / "udb", eventing_dir=REPO / "eventing", log_level="WARNING", lineage="http")
    try:
        settings = Settings.from_env(**base, lineage_url=f"http://127.0.0.1:{server.server_port}/api/v1/lineage")
        code, job_id, _ = run(settings, str(path), "obs-http", capsys, analyze=False)
        assert code == 0
        assert [e["eventType"] for e in LineagePeer.received] == ["START", "COMPLETE"]
        assert {e["run"]["runId"] for e in LineagePeer.received} == {lineage.run_id("obs-http", job_id)}
    finally:
        server.shutdown()
        server.server_close()
    # The endpoint is gone now: the job still completes, the failures are counted.
    before = metrics.REGISTRY.get_sample_value("udb_lineage_events_total",
                                               {"event_type": "START", "result": "failed"}) or 0
    code, _, _ = run(settings, str(path), "obs-http", capsys, analyze=False)
    assert code == 0
    assert metrics.REGISTRY.get_sample_value("udb_lineage_events_total",
                                             {"event_type": "START", "result": "failed"}) == before + 1


def test_lineage_settings_are_checked():
    from shared.core.errors import ValidationError
    with pytest.raises(ValidationError) as err:
        Settings.from_env(env={"UDB_LINEAGE": "kafka", "UDB_OTEL_EXPORTER": "file"})
    assert set(err.value.problems) == {"UDB_LINEAGE", "UDB_OTEL_FILE"}
    with pytest.raises(ValidationError) as err:
        Settings.from_env(env={"UDB_LINEAGE": "http", "UDB_LINEAGE_URL": "marquez:5000"})
    assert "UDB_LINEAGE_URL" in err.value.problems


@pytest.mark.parametrize("hint, dataset", [
    ("postgresql://u:pw@db.example.com:5433/sales?table=public.orders&sslmode=require",
     {"namespace": "postgres://db.example.com:5433", "name": "sales.public.orders"}),
    ("postgresql://u@db/sales?table=orders", {"namespace": "postgres://db:5432", "name": "sales.public.orders"}),
    ("s3://bucket/raw/2025/sales.csv", {"namespace": "s3://bucket", "name": "raw/2025/sales.csv"}),
    ("https://user:tok@api.example.com/v1/items?api_key=SECRET", {"namespace": "https://api.example.com",
                                                                  "name": "/v1/items"}),
    ("webdav://127.0.0.1:18080/files/a.csv", {"namespace": "webdav://127.0.0.1:18080", "name": "/files/a.csv"}),
    ("file:///data/a.parquet", {"namespace": "file", "name": "/data/a.parquet"}),
    ("/data/a.csv", {"namespace": "file", "name": "/data/a.csv"}),
    ("upload://up-123/a.csv", {"namespace": "upload", "name": "up-123/a.csv"}),
])
def test_source_datasets_follow_openlineage_naming_without_credentials(hint, dataset):
    assert lineage.source_dataset(hint) == dataset


class OtlpPeer(BaseHTTPRequestHandler):
    """A test peer speaking OTLP/HTTP (`POST /v1/traces`, protobuf ExportTraceServiceRequest),
    as an OpenTelemetry Collector's otlp receiver does."""
    spans: list = []

    def do_POST(self):  # noqa: N802
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_response(415)
            self.end_headers()
            return
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    OtlpPeer.spans.append({"service": service, "name": span.name, "trace_id": span.trace_id.hex(),
                                           "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex()})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otlp_exporter_sends_the_job_trace_to_a_collector(tmp_path, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtlpPeer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    OtlpPeer.spans = []
    path = write_sales(tmp_path / "otlp" / "sales.csv", 40)
    try:
        settings = Settings.from_env(env={}, home=tmp_path / "udb", eventing_dir=REPO / "eventing",
                                     log_level="WARNING", otel_exporter="otlp",
                                     otel_endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces")
        code, job_id, _ = run(settings, str(path), "obs-otlp", capsys, analyze=False)
        assert code == 0
        assert telemetry.flush()
    finally:
        server.shutdown()
        server.server_close()
    handlers = [s for s in OtlpPeer.spans if " dev.udb." in s["name"]]
    assert [h["name"] for h in handlers] == ["discover dev.udb.discover.requested", "sync dev.udb.source.discovered",
                                             "writer dev.udb.sync.staged"]
    assert {s["service"] for s in OtlpPeer.spans} == {"udb-embedded"}
    assert len({s["trace_id"] for s in OtlpPeer.spans}) == 1
    assert handlers[1]["parent"] == handlers[0]["span_id"] and handlers[2]["parent"] == handlers[1]["span_id"]
    stages = {s["name"] for s in OtlpPeer.spans if s not in handlers and s["parent"] in {h["span_id"] for h in handlers}}
    assert stages == {"probe", "extract", "stage", "lease", "load", "upload"}

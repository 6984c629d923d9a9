"""shared/observability/lineage.py: the run events UDB emits are OpenLineage's own model.

Each emitted event is rebuilt from its JSON with the OpenLineage Python client's generated
classes (whose validators check the run id, the event time, the producer and schema URLs) and
serialised again by the client's Serde: the round trip must give back the same JSON, with the
known field values of a known job document. No services, no network.
"""
from __future__ import annotations

import json

import pytest
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
from openlineage.client.generated.output_statistics_output_dataset import (
    OutputStatisticsOutputDatasetFacet,
)
from openlineage.client.serde import Serde

from shared.core.settings import Settings
from shared.observability import lineage

pytestmark = pytest.mark.unit

RUN_ID = "f7d52905-14d9-591a-80c6-837ed838c957"  # uuid5 of RUN_NAMESPACE and "acme/job-0123456789abcdef"
DOC = {"tenant": "acme", "job_id": "job-0123456789abcdef", "source_id": "udb-0a1b2c3d",
       "hint": "postgresql://reader:s3cret@db.example.com:5433/sales?table=orders",
       "created_at": "2026-12-06T10:00:00+00:00", "updated_at": "2026-12-06T10:00:05.250000+00:00",
       "tables": {"udb__orders": {"rows": 1200}, "udb__regions": {"rows": 0}},
       "error": {"stage": "sync", "function": "sync", "reason": "connection refused"}}


def rebuild(event: dict) -> RunEvent:
    """The client's RunEvent for an emitted event's JSON (its validators run on the way)."""
    def facet(name: str, body: dict):
        kinds = {"errorMessage": ErrorMessageRunFacet, "outputStatistics": OutputStatisticsOutputDatasetFacet}
        fields = {k: v for k, v in body.items() if not k.startswith("_")}
        built = kinds[name](**fields, producer=body["_producer"])
        assert built._schemaURL == body["_schemaURL"], f"{name}: the client's schema is {built._schemaURL}"
        return built

    def facets(body: dict | None) -> dict | None:
        return None if body is None else {name: facet(name, value) for name, value in body.items()}

    return RunEvent(
        eventType=RunState(event["eventType"]), eventTime=event["eventTime"], producer=event["producer"],
        run=Run(runId=event["run"]["runId"], facets=facets(event["run"]["facets"])),
        job=Job(namespace=event["job"]["namespace"], name=event["job"]["name"], facets=event["job"]["facets"]),
        inputs=[InputDataset(namespace=d["namespace"], name=d["name"], facets=d["facets"],
                             inputFacets=facets(d.get("inputFacets"))) for d in event["inputs"]],
        outputs=[OutputDataset(namespace=d["namespace"], name=d["name"], facets=d["facets"],
                               outputFacets=facets(d.get("outputFacets"))) for d in event["outputs"]])


@pytest.mark.parametrize("event_type", ["START", "COMPLETE", "FAIL"])
def test_emitted_events_round_trip_through_the_client_model(event_type):
    event = lineage.run_event(event_type, DOC)
    rebuilt = rebuild(json.loads(json.dumps(event)))
    assert rebuilt.schemaURL == event["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    assert Serde.to_dict(rebuilt) == event


def test_complete_event_has_the_known_fields():
    assert lineage.run_event("COMPLETE", DOC) == {
        "eventType": "COMPLETE",
        "eventTime": "2026-12-06T10:00:05.250000+00:00",
        "run": {"runId": RUN_ID, "facets": {}},
        "job": {"namespace": "udb/acme", "name": "udb-0a1b2c3d", "facets": {}},
        # No user name, no password, no query string but the table: OpenLineage's postgres naming.
        "inputs": [{"namespace": "postgres://db.example.com:5433", "name": "sales.public.orders", "facets": {}}],
        "outputs": [
            {"namespace": "duckdb://udb/acme", "name": "udb__orders", "facets": {},
             "outputFacets": {"outputStatistics": {"_producer": "https://udb.dev/udb/0.1.0",
                                                   "_schemaURL": lineage.OUTPUT_STATS_URL, "rowCount": 1200}}},
            {"namespace": "duckdb://udb/acme", "name": "udb__regions", "facets": {},
             "outputFacets": {"outputStatistics": {"_producer": "https://udb.dev/udb/0.1.0",
                                                   "_schemaURL": lineage.OUTPUT_STATS_URL, "rowCount": 0}}}],
        "producer": "https://udb.dev/udb/0.1.0",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    }


def test_fail_event_carries_the_reason_in_the_client_error_facet():
    event = lineage.run_event("FAIL", DOC)
    assert event["outputs"] == [] and event["run"]["runId"] == RUN_ID
    assert event["run"]["facets"] == {"errorMessage": {
        "_producer": "https://udb.dev/udb/0.1.0", "_schemaURL": lineage.ERROR_FACET_URL,
        "message": "sync in sync: connection refused", "programmingLanguage": "python"}}
    assert lineage.ERROR_FACET_URL == ErrorMessageRunFacet._get_schema()
    assert lineage.OUTPUT_STATS_URL == OutputStatisticsOutputDatasetFacet._get_schema()


def test_the_client_model_refuses_what_the_spec_refuses():
    # The event time must be a date-time (the client's validator), the run id a UUID.
    with pytest.raises(ValueError, match="has to contain time"):
        lineage.run_event("START", {**DOC, "updated_at": "2026-12-06"})
    with pytest.raises(ValueError):
        rebuild({**lineage.run_event("START", DOC), "run": {"runId": "job-0123456789abcdef", "facets": {}}})


def test_a_job_failing_before_it_started_sends_start_then_fail_to_the_file(tmp_path):
    settings = Settings.from_env(env={}, lineage="file", lineage_file=str(tmp_path / "lineage.jsonl"))
    doc = {**DOC, "state": "failed", "source_id": None, "hint": "s3://raw/2026/sales.csv",
           "history": [{"state": "discovering", "at": DOC["created_at"]},
                       {"state": "failed", "at": DOC["updated_at"]}]}
    sent = lineage.Lineage(settings).job_changed(doc)
    written = lineage.read_events(tmp_path / "lineage.jsonl")
    assert written == sent
    assert [(e["eventType"], e["eventTime"], e["job"]["name"]) for e in written] == [
        ("START", "2026-12-06T10:00:00+00:00", "undiscovered"),
        ("FAIL", "2026-12-06T10:00:05.250000+00:00", "undiscovered")]
    assert [e["inputs"] for e in written] == [[{"namespace": "s3://raw", "name": "2026/sales.csv", "facets": {}}]] * 2
    for event in written:
        assert Serde.to_dict(rebuild(event)) == event

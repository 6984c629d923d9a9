import pytest

pytestmark = pytest.mark.unit

import json

import jsonschema
from cloudevents.http import CloudEvent

from shared.core import events
from shared.core.errors import InputError, ValidationError
from shared.core.events import (DISCOVER_REQUESTED, EVENT_TYPES, JOB_FAILED, SCHEMA_DIR, TRACEPARENT_RE,
                           check_event, child_traceparent, event_data, flag, make_event, schema_problems,
                           trace_id_of)

JOB = "job-0123456789abcdef"
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def raw_event(attrs: dict, data) -> CloudEvent:
    base = {"type": DISCOVER_REQUESTED, "source": "/test", "tenant": "acme", "jobid": JOB}
    base.update(attrs)
    return CloudEvent({k: v for k, v in base.items() if v is not None}, data)


# --- make_event -------------------------------------------------------------------------------

def test_make_event_attributes():
    e = make_event(DISCOVER_REQUESTED, {"hint": "sales.csv"}, tenant="acme", job_id=JOB, function="udb-api")
    a = e.get_attributes()
    assert a["type"] == DISCOVER_REQUESTED
    assert a["source"] == "/udb/udb-api"
    assert a["subject"] == JOB
    assert a["tenant"] == "acme"
    assert a["jobid"] == JOB
    assert a["partitionkey"] == "acme"
    assert a["datacontenttype"] == "application/json"
    assert TRACEPARENT_RE.match(a["traceparent"])
    assert "autosync" not in a and "autoanalyze" not in a
    assert event_data(e) == {"hint": "sales.csv"}


def test_make_event_ids_are_unique():
    ids = {make_event(JOB_FAILED, {"stage": "sync", "function": "f", "reason": "r"},
                      tenant="acme", job_id=JOB, function="f")["id"] for _ in range(5)}
    assert len(ids) == 5


def test_make_event_continues_the_parent_trace():
    e = make_event(DISCOVER_REQUESTED, {"hint": "x"}, tenant="acme", job_id=JOB, function="f", traceparent=PARENT)
    tp = e["traceparent"]
    version, trace_id, span_id, flags = tp.split("-")
    assert (version, flags) == ("00", "01")
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of(tp) == trace_id_of(PARENT)
    assert span_id != "00f067aa0ba902b7"
    assert len(span_id) == 16


def test_make_event_without_parent_starts_a_new_trace():
    a = make_event(DISCOVER_REQUESTED, {"hint": "x"}, tenant="acme", job_id=JOB, function="f")
    b = make_event(DISCOVER_REQUESTED, {"hint": "x"}, tenant="acme", job_id=JOB, function="f")
    assert trace_id_of(a["traceparent"]) != trace_id_of(b["traceparent"])


def test_child_traceparent_of_garbage_starts_a_new_trace():
    tp = child_traceparent("not-a-traceparent")
    assert TRACEPARENT_RE.match(tp)
    assert trace_id_of("not-a-traceparent") is None
    assert trace_id_of(None) is None


def test_make_event_flags_become_string_extensions():
    e = make_event(DISCOVER_REQUESTED, {"hint": "x", "autosync": True}, tenant="acme", job_id=JOB, function="f",
                   flags={"autosync": True, "autoanalyze": False, "unrelated": True})
    a = e.get_attributes()
    assert a["autosync"] == "true"
    assert a["autoanalyze"] == "false"
    assert "unrelated" not in a


def test_make_event_checks_what_it_builds():
    with pytest.raises(ValidationError) as info:
        make_event(DISCOVER_REQUESTED, {"hint": ""}, tenant="Acme", job_id="job-1", function="f")
    assert set(info.value.problems) == {"tenant", "jobid", "data.hint"}


# --- check_event ------------------------------------------------------------------------------

def test_check_event_accepts_a_valid_event():
    check_event(raw_event({"partitionkey": "acme", "traceparent": PARENT}, {"hint": "s3://bucket/x.csv"}))


def test_check_event_reports_all_problems_at_once():
    e = raw_event({"tenant": "Bad Tenant", "jobid": "job-xyz"}, {"hint": "", "autosync": "yes"})
    with pytest.raises(ValidationError) as info:
        check_event(e)
    problems = info.value.problems
    assert set(problems) == {"tenant", "jobid", "data.hint", "data.autosync"}
    assert "'Bad Tenant'" in problems["tenant"]
    assert "'job-xyz'" in problems["jobid"]
    message = str(info.value)
    for key in problems:
        assert f"{key}:" in message
    assert info.value.to_dict() == {"error": f"invalid {DISCOVER_REQUESTED}", "problems": problems}


def test_check_event_missing_tenant_and_jobid():
    e = raw_event({"tenant": None, "jobid": None}, {"hint": "x"})
    with pytest.raises(ValidationError) as info:
        check_event(e)
    assert set(info.value.problems) == {"tenant", "jobid"}


def test_check_event_rejects_trailing_newlines():
    e = raw_event({"tenant": "acme\n", "partitionkey": "acme\n", "jobid": JOB + "\n",
                   "traceparent": PARENT + "\n"}, {"hint": "x"})
    with pytest.raises(ValidationError) as info:
        check_event(e)
    assert set(info.value.problems) == {"tenant", "jobid", "traceparent"}


def test_check_event_partitionkey_and_traceparent():
    e = raw_event({"partitionkey": "beta", "traceparent": "00-xyz"}, {"hint": "x"})
    with pytest.raises(ValidationError) as info:
        check_event(e)
    assert set(info.value.problems) == {"partitionkey", "traceparent"}


def test_check_event_nested_data_paths():
    data = {"source": {"id": "s", "short": "s", "provider": "files", "hint": "h", "confidence": 2,
                       "streams": [{"name": "n", "format": "csv", "location": "/x",
                                    "columns": [{"name": "a", "type": ""}]}]},
            "candidates": [], "autosync": True, "autoanalyze": True}
    e = raw_event({"type": "dev.udb.source.discovered"}, data)
    with pytest.raises(ValidationError) as info:
        check_event(e)
    assert set(info.value.problems) == {"data.source.confidence", "data.source.streams[0].columns[0].type"}


def test_check_event_json_bytes_data():
    check_event(raw_event({}, json.dumps({"hint": "x"}).encode()))
    with pytest.raises(ValidationError) as info:
        check_event(raw_event({}, b"{not json"))
    assert set(info.value.problems) == {"data"}


def test_check_event_without_data():
    with pytest.raises(ValidationError) as info:
        check_event(raw_event({}, None))
    assert set(info.value.problems) == {"data"}


def test_unknown_event_type_is_reported():
    with pytest.raises(ValidationError) as info:
        check_event(raw_event({"type": "dev.udb.nope", "tenant": "X"}, {"hint": "x"}))
    assert set(info.value.problems) == {"type", "tenant"}
    assert "dev.udb.nope" in info.value.problems["type"]
    assert schema_problems("dev.udb.nope", {}) == {"type": info.value.problems["type"]}


def test_several_problems_at_the_same_path_are_all_reported():
    # A missing required property and an unexpected one are both reported at `data`.
    problems = schema_problems(DISCOVER_REQUESTED, {"extra": 1})
    assert set(problems) == {"data"}
    assert "'hint' is a required property" in problems["data"]
    assert "'extra' was unexpected" in problems["data"]


# --- schemas ----------------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_has_a_valid_2020_12_schema(event_type):
    path = SCHEMA_DIR / f"{event_type}.json"
    assert path.is_file()
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == event_type
    assert schema["type"] == "object"


def test_schema_files_are_exactly_the_event_types_and_job():
    names = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))
    assert names == sorted([*EVENT_TYPES, "job"])


def test_job_schema_is_valid():
    jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMA_DIR / "job.json").read_text()))


def test_nine_event_types():
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES)) == 9
    assert all(t.startswith("dev.udb.") for t in EVENT_TYPES)


# --- errors and flags -------------------------------------------------------------------------

def test_validation_error_is_a_value_error():
    err = ValidationError("invalid x", {"b": "two", "a": "one"})
    assert isinstance(err, ValueError)
    assert isinstance(err, InputError)
    assert str(err) == "invalid x: a: one; b: two"
    assert ValidationError("plain", {}).args[0] == "plain"
    with pytest.raises(ValueError):
        check_event(raw_event({"tenant": "X"}, {"hint": "x"}))


def test_flag_reads_routing_flags():
    e = make_event(DISCOVER_REQUESTED, {"hint": "x"}, tenant="acme", job_id=JOB, function="f",
                   flags={"autosync": False})
    assert flag(e, "autosync") is False
    assert flag(e, "autoanalyze") is True  # absent: the default
    assert flag(e, "autoanalyze", default=False) is False
    e2 = make_event(DISCOVER_REQUESTED, {"hint": "x"}, tenant="acme", job_id=JOB, function="f",
                    flags={"autosync": True, "autoanalyze": True})
    assert flag(e2, "autosync") is True and flag(e2, "autoanalyze", default=False) is True
    assert flag(raw_event({"autosync": "TRUE"}, {"hint": "x"}), "autosync") is True
    assert flag(raw_event({"autosync": "1"}, {"hint": "x"}), "autosync") is False


def test_routing_flags_and_stage_of():
    assert events.ROUTING_FLAGS == ("autosync", "autoanalyze")
    assert events.STAGE_OF[events.SYNC_STAGED] == "load"
    assert events.STAGE_OF[events.DISCOVER_REQUESTED] == "discover"
    assert events.ANALYSIS_COMPLETED not in events.STAGE_OF and JOB_FAILED not in events.STAGE_OF

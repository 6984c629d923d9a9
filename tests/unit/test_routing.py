import pytest

pytestmark = pytest.mark.unit

from pathlib import Path

from shared.core.errors import ValidationError
from shared.core.routing import Delivery, Trigger, load_routes, parse_duration

REPO = Path(__file__).resolve().parents[2]
EVENTING = REPO / "eventing"


def trig(**kw) -> Trigger:
    return Trigger(name="t", broker="udb", subscriber="svc", **kw)


# --- filter.attributes ------------------------------------------------------------------------

def test_attributes_exact_match_on_every_listed_attribute():
    t = trig(attributes={"type": "dev.udb.sync.staged", "tenant": "acme"})
    assert t.matches({"type": "dev.udb.sync.staged", "tenant": "acme", "other": "x"})
    assert not t.matches({"type": "dev.udb.sync.staged", "tenant": "beta"})
    assert not t.matches({"type": "dev.udb.sync.staged"})
    assert not t.matches({"type": "dev.udb.sync.staged.x", "tenant": "acme"})  # exact, not prefix


def test_attributes_empty_value_means_present():
    t = trig(attributes={"type": "dev.udb.job.failed", "jobid": ""})
    assert t.matches({"type": "dev.udb.job.failed", "jobid": "job-0123456789abcdef"})
    assert t.matches({"type": "dev.udb.job.failed", "jobid": ""})
    assert not t.matches({"type": "dev.udb.job.failed"})
    assert not t.matches({"type": "dev.udb.job.failed", "jobid": None})  # None = absent


def test_no_filter_matches_everything():
    assert trig().matches({"type": "anything"})
    assert trig().matches({})


def test_attribute_values_are_compared_as_strings():
    t = trig(attributes={"retries": "3"})
    assert t.matches({"retries": 3})


# --- filters (the newer dialect) --------------------------------------------------------------

def test_exact():
    t = trig(filters=({"exact": {"type": "dev.udb.source.discovered", "autosync": "true"}},))
    assert t.matches({"type": "dev.udb.source.discovered", "autosync": "true"})
    assert not t.matches({"type": "dev.udb.source.discovered", "autosync": "false"})
    assert not t.matches({"type": "dev.udb.source.discovered"})


def test_prefix():
    t = trig(filters=({"prefix": {"type": "dev.udb.sync."}},))
    assert t.matches({"type": "dev.udb.sync.staged"})
    assert t.matches({"type": "dev.udb.sync.requested"})
    assert not t.matches({"type": "dev.udb.warehouse.loaded"})
    assert not t.matches({})


def test_suffix():
    t = trig(filters=({"suffix": {"type": ".failed"}},))
    assert t.matches({"type": "dev.udb.job.failed"})
    assert not t.matches({"type": "dev.udb.job.failed.not"})
    assert not t.matches({"source": "x.failed"})


def test_all():
    t = trig(filters=({"all": [{"prefix": {"type": "dev.udb."}}, {"exact": {"tenant": "acme"}}]},))
    assert t.matches({"type": "dev.udb.x", "tenant": "acme"})
    assert not t.matches({"type": "dev.udb.x", "tenant": "beta"})
    assert not t.matches({"type": "com.other", "tenant": "acme"})
    assert trig(filters=({"all": []},)).matches({"type": "x"})


def test_any():
    t = trig(filters=({"any": [{"exact": {"type": "a"}}, {"suffix": {"type": ".b"}}]},))
    assert t.matches({"type": "a"})
    assert t.matches({"type": "x.b"})
    assert not t.matches({"type": "c"})
    assert not trig(filters=({"any": []},)).matches({"type": "x"})


def test_not_nested():
    t = trig(filters=({"not": {"any": [{"prefix": {"type": "dev.udb.sync."}},
                                       {"all": [{"suffix": {"type": ".failed"}},
                                                {"not": {"exact": {"tenant": "acme"}}}]}]}},))
    assert not t.matches({"type": "dev.udb.sync.staged", "tenant": "acme"})
    assert not t.matches({"type": "dev.udb.job.failed", "tenant": "beta"})
    assert t.matches({"type": "dev.udb.job.failed", "tenant": "acme"})
    assert t.matches({"type": "dev.udb.warehouse.loaded", "tenant": "beta"})


def test_several_filters_are_anded():
    t = trig(filters=({"prefix": {"type": "dev.udb."}}, {"exact": {"autoanalyze": "true"}}))
    assert t.matches({"type": "dev.udb.warehouse.loaded", "autoanalyze": "true"})
    assert not t.matches({"type": "dev.udb.warehouse.loaded", "autoanalyze": "false"})


def test_filters_take_precedence_over_filter_attributes():
    t = trig(attributes={"type": "never"}, filters=({"exact": {"type": "dev.udb.x"}},))
    assert t.matches({"type": "dev.udb.x"})
    assert not t.matches({"type": "never"})


def test_unknown_dialect_raises_validation_error():
    t = trig(filters=({"cesql": "type = 'x'"},))
    with pytest.raises(ValidationError) as info:
        t.matches({"type": "x"})
    assert "filters" in info.value.problems
    assert "cesql" in info.value.problems["filters"]


def test_unknown_dialect_nested_raises_validation_error():
    t = trig(filters=({"not": {"regex": {"type": ".*"}}},))
    with pytest.raises(ValidationError):
        t.matches({"type": "x"})


def test_two_dialects_in_one_entry_raise_validation_error():
    t = trig(filters=({"exact": {"type": "x"}, "prefix": {"type": "x"}},))
    with pytest.raises(ValidationError) as info:
        t.matches({"type": "x"})
    assert "exact" in info.value.problems["filters"] and "prefix" in info.value.problems["filters"]


# --- the real routing table -------------------------------------------------------------------

@pytest.fixture(scope="module")
def routes():
    return load_routes(EVENTING)


def subscribers(routes, **attrs):
    return [t.subscriber for t in routes.match(attrs)]


def base_attrs(event_type, **extra):
    return {"type": event_type, "source": "/udb/test", "tenant": "acme",
            "jobid": "job-0123456789abcdef", "partitionkey": "acme", **extra}


def test_topic_name(routes):
    assert routes.topic == "knative-broker-udb-udb"
    assert routes.broker == "udb" and routes.namespace == "udb"


def test_discover_requested_reaches_discover(routes):
    assert subscribers(routes, **base_attrs("dev.udb.discover.requested")) == ["udb-discover"]


def test_source_discovered_reaches_sync_only_with_autosync(routes):
    assert subscribers(routes, **base_attrs("dev.udb.source.discovered", autosync="true")) == ["udb-sync"]
    assert subscribers(routes, **base_attrs("dev.udb.source.discovered", autosync="false")) == []
    assert subscribers(routes, **base_attrs("dev.udb.source.discovered")) == []


def test_sync_requested_reaches_sync(routes):
    assert subscribers(routes, **base_attrs("dev.udb.sync.requested")) == ["udb-sync"]


def test_sync_staged_reaches_the_writer_in_order(routes):
    matched = routes.match(base_attrs("dev.udb.sync.staged", autoanalyze="true"))
    assert [t.subscriber for t in matched] == ["udb-writer"]
    writer = matched[0]
    assert writer.ordered is True
    assert writer.name == "writer-on-sync-staged"
    assert writer.delivery == Delivery(retry=3, backoff_policy="exponential", backoff_delay=1.0,
                                       dead_letter_sink="udb-dead-letters", timeout=600.0)


def test_only_the_writer_is_ordered(routes):
    assert [t.name for t in routes.triggers if t.ordered] == ["writer-on-sync-staged"]


def test_warehouse_loaded_reaches_analyze_only_with_autoanalyze(routes):
    assert subscribers(routes, **base_attrs("dev.udb.warehouse.loaded", autoanalyze="true")) == ["udb-analyze"]
    assert subscribers(routes, **base_attrs("dev.udb.warehouse.loaded", autoanalyze="false")) == []
    assert subscribers(routes, **base_attrs("dev.udb.warehouse.loaded")) == []


def test_analyze_requested_reaches_analyze(routes):
    assert subscribers(routes, **base_attrs("dev.udb.analyze.requested")) == ["udb-analyze"]


def test_analysis_completed_reaches_reports_with_its_own_delivery(routes):
    assert subscribers(routes, **base_attrs("dev.udb.analysis.completed")) == ["udb-reports"]
    reports = next(t for t in routes.triggers if t.subscriber == "udb-reports")
    # Its own whole delivery block: retries, backoff and the dead-letter sink (a failure there is
    # dead-lettered and marks the reports failed, never the job).
    assert reports.delivery == Delivery(retry=3, backoff_policy="exponential", backoff_delay=1.0,
                                        dead_letter_sink="udb-dead-letters", timeout=600.0)


@pytest.mark.parametrize("event_type", ["dev.udb.reports.rendered", "dev.udb.job.failed", "com.example.other"])
def test_terminal_and_foreign_events_reach_nobody(routes, event_type):
    assert subscribers(routes, **base_attrs(event_type, autosync="true", autoanalyze="true")) == []


def test_broker_delivery_defaults(routes):
    assert routes.delivery == Delivery(retry=5, backoff_policy="exponential", backoff_delay=0.5,
                                       dead_letter_sink="udb-dead-letters")
    # Triggers without their own delivery inherit the broker's.
    discover = next(t for t in routes.triggers if t.subscriber == "udb-discover")
    assert discover.delivery == routes.delivery


def test_seven_triggers(routes):
    assert sorted(t.name for t in routes.triggers) == [
        "analyze-on-analyze-requested", "analyze-on-warehouse-loaded", "discover-on-discover-requested",
        "reports-on-analysis-completed", "sync-on-source-discovered", "sync-on-sync-requested",
        "writer-on-sync-staged"]


# --- Delivery and durations -------------------------------------------------------------------

def test_exponential_delay():
    d = Delivery(retry=5, backoff_policy="exponential", backoff_delay=0.5)
    assert [d.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_linear_delay():
    d = Delivery(retry=3, backoff_policy="linear", backoff_delay=0.2)
    assert [d.delay(n) for n in (1, 2, 3)] == pytest.approx([0.2, 0.4, 0.6])
    assert Delivery(backoff_policy="linear", backoff_delay=2.0).delay(5) == 10.0


def test_default_delivery():
    d = Delivery()
    assert (d.retry, d.backoff_policy, d.backoff_delay, d.dead_letter_sink) == (0, "exponential", 0.2, None)
    assert d.delay(1) == 0.4


@pytest.mark.parametrize("text,seconds", [("PT0.5S", 0.5), ("PT1M", 60.0), ("PT1S", 1.0), ("PT2H", 7200.0),
                                          ("PT1H2M3S", 3723.0), ("PT1.5M", 90.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "0.5", "P1D", "PT", "PT-1S", "PT1X", "pt1s", "1S", None])
def test_parse_duration_bad(bad):
    with pytest.raises(ValidationError) as info:
        parse_duration(bad)
    assert "backoffDelay" in info.value.problems


# --- routes come from YAML only ---------------------------------------------------------------

BROKER = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: udb, namespace: lab}
spec:
  delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT3S, deadLetterSink: {uri: "http://dlq.example"}}
"""

TRIGGERS = """\
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: alerts-on-failure, namespace: lab}
spec:
  broker: udb
  filters:
    - suffix: {type: .failed}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: my-alerts}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: on-another-broker, namespace: lab}
spec:
  broker: elsewhere
  filter: {attributes: {type: dev.udb.job.failed}}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: not-ours}
"""


def test_routes_come_from_yaml_only(tmp_path):
    (tmp_path / "broker.yaml").write_text(BROKER)
    (tmp_path / "triggers.yaml").write_text(TRIGGERS)
    (tmp_path / "ignored.yml").write_text(TRIGGERS.replace("my-alerts", "yml-is-not-read"))
    routes = load_routes(tmp_path)
    assert routes.topic == "knative-broker-lab-udb"
    assert [t.name for t in routes.triggers] == ["alerts-on-failure"]
    assert subscribers(routes, **base_attrs("dev.udb.job.failed")) == ["my-alerts"]
    # The built-in pipeline routes are gone: nothing is hard-coded.
    assert subscribers(routes, **base_attrs("dev.udb.discover.requested")) == []
    assert subscribers(routes, **base_attrs("dev.udb.sync.staged")) == []
    assert routes.delivery == Delivery(retry=2, backoff_policy="linear", backoff_delay=3.0,
                                       dead_letter_sink="http://dlq.example")
    assert routes.triggers[0].delivery == routes.delivery
    assert routes.triggers[0].delivery.delay(2) == 6.0


def test_missing_broker_raises(tmp_path):
    (tmp_path / "triggers.yaml").write_text(TRIGGERS)
    with pytest.raises(ValidationError) as info:
        load_routes(tmp_path)
    assert "eventing" in info.value.problems


def test_other_broker_name(tmp_path):
    (tmp_path / "broker.yaml").write_text(BROKER.replace("name: udb", "name: elsewhere"))
    (tmp_path / "triggers.yaml").write_text(TRIGGERS)
    routes = load_routes(tmp_path, broker="elsewhere")
    assert subscribers(routes, **base_attrs("dev.udb.job.failed")) == ["not-ours"]
    assert routes.topic == "knative-broker-lab-elsewhere"


# --- effective delivery: a Trigger's `delivery` replaces the Broker's --------------------------

def test_every_trigger_effective_delivery_retries_and_dead_letters(routes):
    """Knative's broker spec: "delivery: Delivery contains the delivery options for event senders"
    on the Trigger overrides the Broker's whole (knative/eventing#6277, a field-by-field merge,
    was closed): every Trigger here must reach the dead-letter sink after retries."""
    effective = {t.name: t.delivery for t in routes.triggers}
    broker = Delivery(retry=5, backoff_policy="exponential", backoff_delay=0.5, dead_letter_sink="udb-dead-letters")
    assert routes.delivery == broker
    assert effective == {
        "discover-on-discover-requested": broker, "sync-on-source-discovered": broker,
        "sync-on-sync-requested": broker,
        "writer-on-sync-staged": Delivery(3, "exponential", 1.0, "udb-dead-letters", 600.0),
        "analyze-on-warehouse-loaded": Delivery(3, "exponential", 1.0, "udb-dead-letters", 600.0),
        "analyze-on-analyze-requested": Delivery(3, "exponential", 1.0, "udb-dead-letters", 600.0),
        "reports-on-analysis-completed": Delivery(3, "exponential", 1.0, "udb-dead-letters", 600.0),
    }


def test_a_trigger_delivery_is_not_merged_with_the_brokers(tmp_path):
    (tmp_path / "r.yaml").write_text("""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: b, namespace: t}
spec:
  delivery: {retry: 5, backoffPolicy: linear, backoffDelay: PT2S,
             deadLetterSink: {ref: {kind: KafkaSink, name: dls}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: only-timeout, namespace: t}
spec:
  broker: b
  subscriber: {ref: {kind: Service, name: s}}
  delivery: {timeout: PT30S}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: none, namespace: t}
spec:
  broker: b
  subscriber: {ref: {kind: Service, name: s}}
""")
    from shared.core.routing import load_routes

    routes = load_routes(tmp_path, "b")
    by_name = {t.name: t.delivery for t in routes.triggers}
    # Only a timeout: no retry, the data plane's default backoff, and no dead-letter sink at all.
    assert by_name["only-timeout"] == Delivery(retry=0, backoff_policy="exponential", backoff_delay=0.2,
                                               dead_letter_sink=None, timeout=30.0)
    assert by_name["none"] == Delivery(5, "linear", 2.0, "dls")  # no delivery: the Broker's, whole

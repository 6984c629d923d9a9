"""Knative Triggers read from `eventing/*.yaml`, and their filters evaluated.

The embedded dispatcher and the stack's local broker both route with `Routes.match`; no other
code knows who receives what. Filter semantics follow Knative Eventing: `spec.filter.attributes`
is an exact match on every listed attribute (an empty value means "present"), and
`spec.filters` (the newer dialect) takes precedence when both are set, with `exact`, `prefix`,
`suffix`, `all`, `any` and `not`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from shared.core.errors import ValidationError

ORDERED_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"
_DURATION_RE = re.compile(r"^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


@dataclass(frozen=True)
class Delivery:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.2
    dead_letter_sink: str | None = None
    timeout: float | None = None  # delivery.timeout (seconds per attempt); None: the data plane's default

    def delay(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based), Knative's formula."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * attempt
        return self.backoff_delay * (2 ** attempt)


@dataclass(frozen=True)
class Trigger:
    name: str
    broker: str
    subscriber: str  # name of the Knative Service (e.g. udb-sync)
    attributes: dict = field(default_factory=dict)
    filters: tuple = ()
    delivery: Delivery = Delivery()
    ordered: bool = False

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        attrs = {k: str(v) for k, v in attrs.items() if v is not None}
        if self.filters:
            return all(_eval(expr, attrs) for expr in self.filters)
        return all((k in attrs) if v == "" else attrs.get(k) == _text(v) for k, v in self.attributes.items())


def _text(value) -> str:
    # An unquoted YAML `true` is a bool; CloudEvent attributes are strings ("true").
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class KafkaSource:
    name: str
    topics: tuple
    group: str
    subscriber: str
    delivery: Delivery = Delivery()
    ordered: bool = True

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        return True


@dataclass(frozen=True)
class PingSource:
    """A PingSource: `data` posted to a Service (+ `uri`) on a cron `schedule` (UTC)."""
    name: str
    schedule: str
    subscriber: str
    uri: str = ""
    data: str = ""
    content_type: str = "application/json"

    def next_fire(self, after: float) -> float:
        """The first whole minute strictly after `after` (epoch seconds) the schedule names."""
        import datetime as dt

        fields = self.schedule.split()
        if len(fields) != 5:
            raise ValidationError("invalid PingSource", {"schedule": f"expected 5 cron fields, found {self.schedule!r}"})
        allowed = [_cron_field(f, lo, hi) for f, (lo, hi) in
                   zip(fields, ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6)), strict=True)]
        t = dt.datetime.fromtimestamp(after, dt.timezone.utc).replace(second=0, microsecond=0)
        for _ in range(366 * 24 * 60):
            t += dt.timedelta(minutes=1)
            if (t.minute in allowed[0] and t.hour in allowed[1] and t.day in allowed[2]
                    and t.month in allowed[3] and (t.isoweekday() % 7) in allowed[4]):
                return t.timestamp()
        raise ValidationError("invalid PingSource", {"schedule": f"{self.schedule!r} never fires"})


def _cron_field(text: str, lo: int, hi: int) -> set:
    """One cron field: `*`, `*/n`, `a`, `a-b`, `a-b/n`, and lists of those."""
    values: set[int] = set()
    for part in text.split(","):
        body, _, step = part.partition("/")
        first, last = (lo, hi) if body == "*" else (int(body.split("-")[0]), int(body.split("-")[-1]))
        values.update(range(first, last + 1, int(step) if step else 1))
    return values


def _eval(expr: dict, attrs: dict) -> bool:
    if len(expr) != 1:
        raise ValidationError("invalid filter", {"filters": f"expected one dialect per entry, found {sorted(expr)}"})
    (dialect, arg), = expr.items()
    if dialect == "exact":
        return all(attrs.get(k) == _text(v) for k, v in arg.items())
    if dialect == "prefix":
        return all(k in attrs and attrs[k].startswith(_text(v)) for k, v in arg.items())
    if dialect == "suffix":
        return all(k in attrs and attrs[k].endswith(_text(v)) for k, v in arg.items())
    if dialect == "all":
        return all(_eval(e, attrs) for e in arg)
    if dialect == "any":
        return any(_eval(e, attrs) for e in arg)
    if dialect == "not":
        return not _eval(arg, attrs)
    raise ValidationError("invalid filter", {"filters": f"unsupported dialect {dialect!r}; "
                                                        "expected exact, prefix, suffix, all, any, not"})


def parse_duration(text: str) -> float:
    match = _DURATION_RE.match(text or "")
    if not match or not any(match.groups()):
        raise ValidationError("invalid delivery", {"backoffDelay": f"expected an ISO-8601 duration like PT0.5S, found {text!r}"})
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


def _delivery(spec: dict | None, default: Delivery) -> Delivery:
    """The effective delivery: `spec` when set, whole, else `default` (the Broker's).

    Knative's broker spec: a Trigger's `delivery` *replaces* the Broker's; it is not merged field
    by field (the merge proposal, knative/eventing#6277, was closed). A Trigger whose delivery
    sets only `timeout` has no retries and no dead-letter sink. Unset fields take the data
    plane's defaults (no retry, exponential policy), never the Broker's values."""
    if not spec:
        return default
    sink = spec.get("deadLetterSink") or {}
    base = Delivery()
    return Delivery(
        retry=int(spec.get("retry", 0)),
        backoff_policy=spec.get("backoffPolicy", base.backoff_policy),
        backoff_delay=parse_duration(spec["backoffDelay"]) if "backoffDelay" in spec else base.backoff_delay,
        dead_letter_sink=(sink.get("ref") or {}).get("name") or sink.get("uri"),
        timeout=parse_duration(spec["timeout"]) if "timeout" in spec else None,
    )


@dataclass
class Routes:
    broker: str
    namespace: str
    triggers: list[Trigger]
    delivery: Delivery
    sinks: dict = field(default_factory=dict)  # KafkaSink name -> topic
    sources: list = field(default_factory=list)  # KafkaSources: (Trigger-like delivery, topics, group)
    pings: list = field(default_factory=list)  # PingSources (schedules posting to a Service)

    def match(self, attrs: Mapping[str, Any]) -> list[Trigger]:
        return [t for t in self.triggers if t.matches(attrs)]

    @property
    def topic(self) -> str:
        return f"knative-broker-{self.namespace}-{self.broker}"


def load_routes(eventing_dir: Path, broker: str = "udb") -> Routes:
    docs: list[dict] = []
    for path in sorted(Path(eventing_dir).glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    brokers = [d for d in docs if d.get("kind") == "Broker" and d["metadata"]["name"] == broker]
    if not brokers:
        raise ValidationError("no broker", {"eventing": f"no Broker named {broker!r} in {eventing_dir}"})
    broker_doc = brokers[0]
    default = _delivery((broker_doc.get("spec") or {}).get("delivery"), Delivery())
    triggers = []
    for doc in docs:
        if doc.get("kind") != "Trigger" or doc["spec"].get("broker") != broker:
            continue
        spec, meta = doc["spec"], doc["metadata"]
        triggers.append(Trigger(
            name=meta["name"],
            broker=broker,
            subscriber=spec["subscriber"]["ref"]["name"],
            attributes=dict((spec.get("filter") or {}).get("attributes") or {}),
            filters=tuple(spec.get("filters") or ()),
            delivery=_delivery(spec.get("delivery"), default),
            ordered=(meta.get("annotations") or {}).get(ORDERED_ANNOTATION) == "ordered",
        ))
    sinks = {d["metadata"]["name"]: d["spec"]["topic"] for d in docs if d.get("kind") == "KafkaSink"}
    sources = []
    for doc in docs:
        if doc.get("kind") != "KafkaSource":
            continue
        spec = doc["spec"]
        # A KafkaSource has no filter: every record of its topics goes to its sink.
        delivery = _delivery(spec.get("delivery"), Delivery(retry=default.retry, backoff_policy=default.backoff_policy,
                                                             backoff_delay=default.backoff_delay))
        sources.append(KafkaSource(name=doc["metadata"]["name"], topics=tuple(spec["topics"]),
                                   group=spec.get("consumerGroup") or f"knative-source-{doc['metadata']['name']}",
                                   subscriber=spec["sink"]["ref"]["name"], delivery=delivery))
    pings = [PingSource(name=d["metadata"]["name"], schedule=d["spec"]["schedule"],
                        subscriber=d["spec"]["sink"]["ref"]["name"], uri=d["spec"]["sink"].get("uri", ""),
                        data=d["spec"].get("data", ""), content_type=d["spec"].get("contentType", "application/json"))
             for d in docs if d.get("kind") == "PingSource"]
    return Routes(broker=broker, namespace=broker_doc["metadata"].get("namespace", "default"),
                  triggers=triggers, delivery=default, sinks=sinks, sources=sources, pings=pings)

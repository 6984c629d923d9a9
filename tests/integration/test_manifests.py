"""knative/ and eventing/ as a cluster would take them, checked with Knative's own code.

The validator (tests/knative-validator, Go) decodes every manifest strictly and runs Knative
Serving's, Eventing's and the Kafka broker's SetDefaults and Validate(apis.WithinCreate) on it;
it renders the kustomize base and both overlays with kustomize's library, so every patch is
checked in the objects it produces. It is built once and cached under
.cache/knative-validator/<hash of go.mod, go.sum and *.go>/.

Then what Knative cannot know: the writer's scale and concurrency, probes, the routing table
against the functions' code, and the settings against the ConfigMap and docs/settings.md.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from shared.core import events
from shared.core.routing import load_routes
from shared.core.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VALIDATOR_SRC = REPO / "tests" / "knative-validator"
CACHE = REPO / ".cache" / "knative-validator"
KNATIVE, EVENTING = REPO / "knative", REPO / "eventing"
# Created out of band, never by `kubectl apply -k` (docs/deploy.md "Secrets"): validated as files.
OUT_OF_BAND = sorted((REPO / "knative" / "secrets").glob("*.yaml"))
KUSTOMIZATIONS = [KNATIVE / "base", KNATIVE / "overlays" / "dev", KNATIVE / "overlays" / "prod"]
FUNCTIONS = ("discover", "sync", "writer", "analyze", "artifacts", "reports")
# The public doors tenants use (udb-<f>-api); the function Services themselves are cluster-local.
PUBLIC_APIS = ("discover", "artifacts")
CLUSTER_LOCAL = "networking.knative.dev/visibility"
SCALE_TO_ZERO = ("discover", "sync", "analyze", "artifacts", "reports")
TERMINAL = (events.REPORTS_RENDERED, events.JOB_FAILED)
# Settings a cluster sets without the ConfigMap: K_SINK is injected by the SinkBinding.
INJECTED = {"K_SINK"}


def validator_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted([VALIDATOR_SRC / "go.mod", VALIDATOR_SRC / "go.sum", *VALIDATOR_SRC.glob("*.go")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def go_env() -> dict:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    # The Go checksum database has no entry for eventing-kafka-broker's tags; go.sum pins its hash.
    env["GONOSUMDB"] = "knative.dev/eventing-kafka-broker"
    return env


@pytest.fixture(scope="session")
def validator() -> Path:
    """The validator binary, built on first use (about a minute cold, with module downloads)."""
    binary = CACHE / validator_hash() / "knative-validator"
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Knative validator needs Go (1.24 or later) on PATH")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f".knative-validator.{os.getpid()}")
    result = subprocess.run([go, "build", "-o", str(partial), "."], cwd=VALIDATOR_SRC, env=go_env(),
                            capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        pytest.fail(f"building the Knative validator failed:\n{result.stderr[-4000:]}")
    partial.replace(binary)
    for stale in CACHE.iterdir():
        if stale.is_dir() and stale != binary.parent:
            shutil.rmtree(stale, ignore_errors=True)
    return binary


# The CloudEvents extensions UDB's events carry (shared/core/events.make_event, W3C trace context): a
# Trigger filtering on any other attribute name matches nothing.
EXTENSIONS = ("tenant", "jobid", "partitionkey", "traceparent", "tracestate", *events.ROUTING_FLAGS)
PREVIOUS_RELEASE = REPO / "tests" / "data" / "previous-release"  # 0.1.0's renders, kept as they were


def validator_flags(root: Path = REPO) -> list[str]:
    flags = [f"-extension={name}" for name in EXTENSIONS]
    return flags + [f"-external={p}" for p in sorted((root / "knative" / "secrets").glob("*.yaml"))]


def run_validator(binary: Path, *paths: Path | str, cwd: Path = REPO, flags: list[str] | None = None) -> tuple[int, list[dict]]:
    flags = validator_flags(cwd) if flags is None else flags
    result = subprocess.run([str(binary), "-json", *flags, *map(str, paths)], cwd=cwd, capture_output=True,
                            text=True, timeout=120)
    findings = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, findings


def render(binary: Path, directory: Path) -> list[dict]:
    result = subprocess.run([str(binary), "render", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def raw_manifests() -> list[Path]:
    """Every manifest file that is a complete object (overlay patches are checked rendered)."""
    return sorted(p for p in [*(KNATIVE / "base").glob("*.yaml"), *EVENTING.glob("*.yaml"), *OUT_OF_BAND]
                  if p.name != "kustomization.yaml")


# --- the validator passes on every manifest ----------------------------------------------------

def test_every_manifest_and_every_rendered_overlay_passes(validator):
    rc, findings = run_validator(validator, *(p.relative_to(REPO) for p in [*raw_manifests(), *KUSTOMIZATIONS]))
    problems = [f for f in findings if f["level"] != "ok"]
    assert problems == [] and rc == 0
    rendered = {(f["kind"], f["name"]) for f in findings if "(kustomize)" in f["source"]}
    for function in FUNCTIONS:
        assert ("serving.knative.dev/v1 Service", f"udb-{function}") in rendered
    for function in PUBLIC_APIS:
        assert ("serving.knative.dev/v1 Service", f"udb-{function}-api") in rendered
    for trigger in load_routes(EVENTING).triggers:
        assert ("eventing.knative.dev/v1 Trigger", trigger.name) in rendered
    # Every raw file and every rendered kustomization produced objects, all checked.
    sources = {f["source"].split("#")[0] for f in findings}
    assert sources == {str(p.relative_to(REPO)) for p in raw_manifests()} | {
        f"{d.relative_to(REPO)} (kustomize)" for d in KUSTOMIZATIONS}
    assert len(findings) == sum(len(list(yaml.safe_load_all(p.read_text()))) for p in raw_manifests()) + sum(
        len(render(validator, d)) for d in KUSTOMIZATIONS)


def kustomization_files(directory: Path) -> set[str]:
    doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = set(doc.get("resources") or [])
    listed |= {p["path"] for p in doc.get("patches") or [] if "path" in p}
    return listed


@pytest.mark.parametrize("directory", [*KUSTOMIZATIONS, EVENTING], ids=lambda d: str(d.relative_to(REPO)))
def test_every_yaml_file_is_part_of_its_kustomization(directory):
    files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    listed = kustomization_files(directory)
    assert files <= listed, f"{directory.relative_to(REPO)}: not in kustomization.yaml: {sorted(files - listed)}"
    assert all((directory / entry).exists() for entry in listed)


# --- and fails on broken copies -----------------------------------------------------------------

def _doc(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(service: dict) -> dict:
    return service["spec"]["template"]["spec"]["containers"][0]


def _no_subscriber(docs):
    del _doc(docs, "Trigger", "writer-on-sync-staged")["spec"]["subscriber"]


def _negative_concurrency(docs):
    _doc(docs, "Service", "udb-writer")["spec"]["template"]["spec"]["containerConcurrency"] = -1


def _unknown_service_field(docs):
    _container(_doc(docs, "Service", "udb-analyze"))["readinesProbe"] = {"httpGet": {"path": "/readyz"}}


def _unknown_trigger_field(docs):
    _doc(docs, "Trigger", "sync-on-sync-requested")["spec"]["filterz"] = {"attributes": {"type": "x"}}


def _writer_max_scale_two(docs):
    _doc(docs, "Service", "udb-writer")["spec"]["template"]["metadata"]["annotations"][
        "autoscaling.knative.dev/max-scale"] = "two"


def _analyze_timeout_too_long(docs):
    _doc(docs, "Service", "udb-analyze")["spec"]["template"]["spec"]["timeoutSeconds"] = 900


def _min_above_max(docs):
    _doc(docs, "Service", "udb-sync")["spec"]["template"]["metadata"]["annotations"][
        "autoscaling.knative.dev/min-scale"] = "50"


def _bad_backoff_policy(docs):
    _doc(docs, "Broker", "udb")["spec"]["delivery"]["backoffPolicy"] = "quadratic"


def _bad_delivery_order(docs):
    _doc(docs, "Trigger", "writer-on-sync-staged")["metadata"]["annotations"][
        "kafka.eventing.knative.dev/delivery.order"] = "sorted"


def _bad_filter_dialect(docs):
    _doc(docs, "Trigger", "analyze-on-warehouse-loaded")["spec"]["filters"] = [{"regex": {"type": ".*"}}]


def _bad_schedule(docs):
    _doc(docs, "PingSource", "udb-prune")["spec"]["schedule"] = "every night"


def _kafka_sink_without_topic(docs):
    del _doc(docs, "KafkaSink", "udb-job-events")["spec"]["topic"]


def _broker_config_not_a_configmap(docs):
    _doc(docs, "Broker", "udb")["spec"]["config"]["kind"] = "Secret"


def _configmap_typo(docs):
    doc = _doc(docs, "ConfigMap", "udb-config")
    doc["datas"] = doc.pop("data")


def _bad_policy_type(docs):
    _doc(docs, "NetworkPolicy", "udb-default-deny")["spec"]["policyTypes"] = ["Inbound"]


def _except_outside_cidr(docs):
    egress = _doc(docs, "NetworkPolicy", "udb-egress-sources")["spec"]["egress"][0]["to"][0]["ipBlock"]
    egress["cidr"] = "10.0.0.0/8"


def _role_without_verbs(docs):
    _doc(docs, "Role", "udb-tenant-secrets")["rules"][0]["verbs"] = []


def _unknown_kind(docs):
    docs.append({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "udb"}})


BROKEN = {
    # case: (file relative to the repo, mutation, the object that must fail, words its error has)
    "trigger-without-subscriber": ("eventing/triggers.yaml", _no_subscriber, "writer-on-sync-staged", "subscriber"),
    "container-concurrency-minus-one": ("knative/base/services.yaml", _negative_concurrency, "udb-writer",
                                        "containerConcurrency"),
    "unknown-field-in-service": ("knative/base/services.yaml", _unknown_service_field, "udb-analyze",
                                 'unknown field "spec.template.spec.containers[0].readinesProbe"'),
    "unknown-field-in-trigger": ("eventing/triggers.yaml", _unknown_trigger_field, "sync-on-sync-requested",
                                 'unknown field "spec.filterz"'),
    "writer-max-scale-two": ("knative/base/services.yaml", _writer_max_scale_two, "udb-writer", "max-scale"),
    "analyze-timeout-900": ("knative/base/services.yaml", _analyze_timeout_too_long, "udb-analyze", "timeoutSeconds"),
    "min-scale-above-max-scale": ("knative/base/services.yaml", _min_above_max, "udb-sync", "min-scale"),
    "backoff-policy-quadratic": ("eventing/broker.yaml", _bad_backoff_policy, "udb", "backoffPolicy"),
    "delivery-order-sorted": ("eventing/triggers.yaml", _bad_delivery_order, "writer-on-sync-staged", "delivery.order"),
    "filter-dialect-regex": ("eventing/triggers.yaml", _bad_filter_dialect, "analyze-on-warehouse-loaded",
                             'unknown field "spec.filters[0].regex"'),
    "ping-schedule": ("eventing/prune.yaml", _bad_schedule, "udb-prune", "schedule"),
    "kafka-sink-without-topic": ("eventing/broker.yaml", _kafka_sink_without_topic, "udb-job-events", "topic"),
    "kafka-broker-config-secret": ("eventing/broker.yaml", _broker_config_not_a_configmap, "udb", "ConfigMap"),
    "configmap-unknown-field": ("knative/base/config.yaml", _configmap_typo, "udb-config", 'unknown field "datas"'),
    "networkpolicy-type": ("knative/base/networkpolicies.yaml", _bad_policy_type, "udb-default-deny", "policyTypes"),
    "networkpolicy-except-outside-cidr": ("knative/base/networkpolicies.yaml", _except_outside_cidr,
                                          "udb-egress-sources", "is not a CIDR inside"),
    "role-without-verbs": ("knative/base/rbac.yaml", _role_without_verbs, "udb-tenant-secrets", "verbs"),
    "unknown-kind": ("knative/base/rbac.yaml", _unknown_kind, "w", "no schema known for example.dev/v1 Widget"),
}


@pytest.fixture
def tree_copy(tmp_path) -> Path:
    """knative/ and eventing/ copied, so a broken copy renders through the real kustomizations."""
    shutil.copytree(KNATIVE, tmp_path / "knative")
    shutil.copytree(EVENTING, tmp_path / "eventing")
    return tmp_path


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_copy_fails(validator, tree_copy, case):
    relative, mutate, name, words = BROKEN[case]
    path = tree_copy / relative
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    mutate(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    # The raw file, and every overlay it reaches through the base.
    for target in (path, tree_copy / "knative" / "overlays" / "dev", tree_copy / "knative" / "overlays" / "prod"):
        rc, findings = run_validator(validator, target.relative_to(tree_copy), cwd=tree_copy)
        assert rc == 1, f"{case}: {target.name} passed"
        failed = [f for f in findings if f["level"] == "error"]
        assert [f["name"] for f in failed] == [name], failed
        assert words in failed[0]["message"], failed[0]["message"]


def test_broken_overlay_patch_fails(validator, tree_copy):
    patch = tree_copy / "knative" / "overlays" / "prod" / "resources-writer.yaml"
    ops = yaml.safe_load(patch.read_text())
    ops.append({"op": "add", "path": "/spec/template/metadata/annotations/autoscaling.knative.dev~1max-scale",
                "value": "two"})
    patch.write_text(yaml.safe_dump(ops))
    rc, findings = run_validator(validator, "knative/overlays/prod", "knative/overlays/dev", cwd=tree_copy)
    assert rc == 1
    assert [(f["source"].split("#")[0], f["name"]) for f in findings if f["level"] == "error"] == [
        ("knative/overlays/prod (kustomize)", "udb-writer")]


def test_patch_that_no_longer_applies_fails(validator, tree_copy):
    services = tree_copy / "knative" / "base" / "services.yaml"
    docs = list(yaml.safe_load_all(services.read_text()))
    env = _container(_doc(docs, "Service", "udb-writer"))["env"]
    env.insert(0, env.pop(2))  # UDB_DUCKDB_MEMORY_LIMIT moves: the overlay's index-2 patch is now wrong
    services.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    rc, findings = run_validator(validator, "knative/overlays/dev", cwd=tree_copy)
    assert rc == 1 and len(findings) == 1
    assert "kustomize build" in findings[0]["message"] and "testing value" in findings[0]["message"]


def test_unknown_field_in_a_yaml_with_two_documents_names_the_right_one(validator, tmp_path):
    (tmp_path / "two.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: udb}\n---\n"
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b, namespace: udb}\nautomount: false\n")
    rc, findings = run_validator(validator, tmp_path / "two.yaml")
    assert rc == 1
    assert [(f["name"], f["level"]) for f in findings] == [("a", "ok"), ("b", "error")]


# --- what Knative cannot know: the shape UDB needs ---------------------------------------------

@pytest.fixture(scope="session")
def rendered(validator) -> dict[str, list[dict]]:
    return {d.name: render(validator, d) for d in KUSTOMIZATIONS}


def services_of(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"].removeprefix("udb-"): d for d in docs
            if d["kind"] == "Service" and d["apiVersion"].startswith("serving.knative.dev/")}


@pytest.mark.parametrize("overlay", ["base", "dev", "prod"])
def test_services_scale_probe_and_limits(rendered, overlay):
    services = services_of(rendered[overlay])
    assert sorted(services) == sorted([*FUNCTIONS, *(f"{f}-api" for f in PUBLIC_APIS)])
    for name, service in services.items():
        function = name.removesuffix("-api")
        template = service["spec"]["template"]
        annotations, spec = template["metadata"]["annotations"], template["spec"]
        container = _container(service)
        assert template["metadata"]["labels"] == {"app.kubernetes.io/part-of": "udb",
                                                  "app.kubernetes.io/component": function}
        # Event receivers are cluster-local; the public doors refuse calls without credentials.
        public = name.endswith("-api")
        assert (service["metadata"]["labels"].get(CLUSTER_LOCAL) == "cluster-local") is not public, name
        assert ({"name": "UDB_TRUST_NETWORK", "value": "0"} in container["env"]) is public, name
        assert container["image"].startswith(f"ghcr.io/udb/udb-{function}:")
        assert {"name": "UDB_FUNCTION", "value": function} in container["env"]
        assert container["envFrom"] == [{"configMapRef": {"name": "udb-config"}},
                                        {"secretRef": {"name": "udb-object-store"}}]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # /startupz checks afresh until the pod starts (up to 2 min); /readyz is served cached.
        assert container["startupProbe"] == {"httpGet": {"path": "/startupz"}, "periodSeconds": 2,
                                             "timeoutSeconds": 5, "failureThreshold": 60}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert 0 < spec["timeoutSeconds"] <= 600
        # gunicorn threads beyond the routed concurrency keep /healthz answering during a request.
        threads = int(next(e["value"] for e in container["env"] if e["name"] == "THREADS"))
        assert threads > spec["containerConcurrency"] or spec["containerConcurrency"] == 0
        if function == "writer":
            assert annotations["autoscaling.knative.dev/min-scale"] == "1"
            assert annotations["autoscaling.knative.dev/max-scale"] == "1"
            assert spec["containerConcurrency"] == 1
        else:
            assert annotations["autoscaling.knative.dev/min-scale"] == "0"
            assert 1 <= int(annotations["autoscaling.knative.dev/max-scale"]) <= 20
    assert services["analyze"]["spec"]["template"]["spec"]["timeoutSeconds"] == 600
    assert services["reports"]["spec"]["template"]["spec"]["timeoutSeconds"] == 600


@pytest.mark.parametrize("overlay", ["base", "dev", "prod"])
def test_duckdb_memory_fits_the_container(rendered, overlay):
    units = {"Mi": 2 ** 20, "Gi": 2 ** 30, "MB": 10 ** 6, "GB": 10 ** 9}

    def size(text: str) -> int:
        number, unit = re.fullmatch(r"(\d+)([A-Za-z]+)", text).groups()
        return int(number) * units[unit]

    config = _doc(rendered[overlay], "ConfigMap", "udb-config")["data"]
    for function, service in services_of(rendered[overlay]).items():
        container = _container(service)
        env = {e["name"]: e["value"] for e in container["env"]}
        limit = size(env.get("UDB_DUCKDB_MEMORY_LIMIT", config["UDB_DUCKDB_MEMORY_LIMIT"]))
        assert limit <= 0.75 * size(container["resources"]["limits"]["memory"]), function


def test_overlays_differ_where_they_should(rendered):
    dev, prod = rendered["dev"], rendered["prod"]
    assert _doc(dev, "ConfigMap", "udb-config")["data"]["UDB_LOG_LEVEL"] == "DEBUG"
    assert _doc(prod, "ConfigMap", "udb-config")["data"]["UDB_LOG_LEVEL"] == "INFO"
    assert _doc(prod, "ConfigMap", "udb-kafka-broker-config")["data"]["default.topic.replication.factor"] == "3"
    assert all(_container(s)["image"].endswith(":dev") for s in services_of(dev).values())
    # prod runs the images `just images` tags: the project's version.
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert all(_container(s)["image"].endswith(f":{version}") for s in services_of(prod).values())
    for name in ("udb-dead-letters", "udb-job-events"):
        assert _doc(prod, "KafkaSink", name)["spec"]["replicationFactor"] == 3
    # The public doors get the same patches as the function Services they share an image with.
    for overlay in (dev, prod):
        for function in PUBLIC_APIS:
            internal, public = _doc(overlay, "Service", f"udb-{function}"), _doc(overlay, "Service", f"udb-{function}-api")
            assert _container(public)["resources"] == _container(internal)["resources"]
            assert public["spec"]["template"]["metadata"]["annotations"] == internal["spec"]["template"]["metadata"]["annotations"]


def test_writer_trigger_is_ordered_and_secrets_are_reachable(rendered):
    docs = rendered["base"]
    writer = _doc(docs, "Trigger", "writer-on-sync-staged")
    assert writer["metadata"]["annotations"]["kafka.eventing.knative.dev/delivery.order"] == "ordered"
    broker = _doc(docs, "Broker", "udb")
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    assert broker["spec"]["delivery"]["backoffPolicy"] == "exponential"
    assert broker["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] == "udb-dead-letters"
    assert _doc(docs, "KafkaSink", "udb-job-events")["spec"]["topic"] == Settings().job_events_topic
    # The kubernetes secret store: get/create/patch on Secrets, for the functions that use secrets.
    # Granted only in the namespace that holds nothing but tenant Secrets (RBAC cannot filter by
    # label nor name Secrets created later), never in `udb`.
    role = _doc(docs, "Role", "udb-tenant-secrets")
    assert role["metadata"]["namespace"] == "udb-tenant-secrets"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]}]
    binding = _doc(docs, "RoleBinding", "udb-functions-tenant-secrets")
    assert binding["metadata"]["namespace"] == "udb-tenant-secrets"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "udb-functions", "namespace": "udb"}]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"} == {"udb", "udb-tenant-secrets"}
    assert [d for d in docs if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["namespace"] == "udb"] == []
    assert _doc(docs, "ConfigMap", "udb-config")["data"]["UDB_SECRETS_NAMESPACE"] == "udb-tenant-secrets"
    # No Secret is applied: `kubectl apply -k` must never reset the keys a cluster holds.
    for overlay in KUSTOMIZATIONS:
        assert [d["metadata"]["name"] for d in rendered[overlay.name] if d["kind"] == "Secret"] == []
    accounts = {f: s["spec"]["template"]["spec"]["serviceAccountName"] for f, s in services_of(docs).items()}
    assert accounts == {"discover": "udb-functions", "sync": "udb-functions", "artifacts": "udb-functions",
                        "writer": "udb-no-api", "analyze": "udb-no-api", "reports": "udb-no-api",
                        "discover-api": "udb-functions", "artifacts-api": "udb-functions"}
    assert _doc(docs, "ServiceAccount", "udb-no-api")["automountServiceAccountToken"] is False
    assert _doc(docs, "ConfigMap", "udb-config")["data"]["UDB_SECRETS"] == "kubernetes"


def test_network_policies_deny_by_default_and_allow_what_is_needed(rendered):
    policies = {d["metadata"]["name"]: d["spec"] for d in rendered["base"] if d["kind"] == "NetworkPolicy"}
    deny = policies["udb-default-deny"]
    assert deny == {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "udb"}},
                    "policyTypes": ["Ingress", "Egress"]}
    ingress_from = [peer for rule in policies["udb-ingress-from-knative"]["ingress"] for peer in rule["from"]]
    # Each peer is named pods of a namespace, never a whole namespace.
    admitted = {}
    for peer in ingress_from:
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        selector = peer["podSelector"]
        apps = selector["matchExpressions"][0]["values"] if "matchExpressions" in selector else [
            selector["matchLabels"]["app"]]
        admitted[namespace] = sorted(apps)
    assert admitted == {"knative-serving": ["activator", "autoscaler"],
                        "kourier-system": ["3scale-kourier-gateway"],
                        "knative-eventing": ["kafka-broker-dispatcher", "kafka-source-dispatcher",
                                             "pingsource-mt-adapter"]}
    data_ports = sorted(r["ports"][0]["port"] for r in policies["udb-egress-data"]["egress"])
    assert data_ports == [5432, 9000, 9092]  # PostgreSQL, MinIO, Kafka
    sources = policies["udb-egress-sources"]["podSelector"]["matchExpressions"][0]["values"]
    senders = policies["udb-egress-broker"]["podSelector"]["matchExpressions"][0]["values"]
    assert senders == ["discover", "artifacts"]  # the functions K_SINK is injected into
    assert policies["udb-egress-broker"]["egress"][0]["to"][0]["podSelector"] == {
        "matchLabels": {"app": "kafka-broker-receiver"}}
    assert sources == ["discover", "sync"]
    # The redrive sweep probes /readyz of other functions through Knative's gateway: artifacts only.
    readiness = policies["udb-egress-readiness"]
    assert readiness["podSelector"]["matchExpressions"][0]["values"] == ["artifacts"]
    assert {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for rule in readiness["egress"] for p in rule["to"]} == {"kourier-system", "knative-serving"}
    # Only discover and sync reach arbitrary addresses.
    for name, spec in policies.items():
        for rule in spec.get("egress", []):
            if any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in rule["to"]) and not rule.get("ports"):
                assert name == "udb-egress-sources"


def test_prune_schedule_reaches_the_prune_endpoint(rendered):
    from functions.artifacts.routes import ROUTES

    ping = _doc(rendered["base"], "PingSource", "udb-prune")
    assert ping["spec"]["sink"]["ref"]["name"] == "udb-artifacts" and ping["spec"]["sink"]["uri"] == "/admin/prune"
    # A PingSource sends no credential: its sink is cluster-local and trusts the network; the
    # public door to the same code does not.
    internal, public = _doc(rendered["base"], "Service", "udb-artifacts"), _doc(rendered["base"], "Service", "udb-artifacts-api")
    assert internal["metadata"]["labels"][CLUSTER_LOCAL] == "cluster-local"
    assert CLUSTER_LOCAL not in public["metadata"]["labels"]
    assert {"name": "UDB_TRUST_NETWORK", "value": "0"} in _container(public)["env"]
    assert "UDB_TRUST_NETWORK" not in {e["name"] for e in _container(internal)["env"]}
    assert ("POST", "/admin/prune") in {(m, p) for m, p, _ in ROUTES}
    assert json.loads(ping["spec"]["data"]) == {"dry_run": False}


def test_redrive_schedule_reaches_the_redrive_endpoint(rendered):
    from functions.artifacts.routes import ROUTES
    from shared.security.auth import SYSTEM_ROUTES

    ping = _doc(rendered["base"], "PingSource", "udb-redrive")
    assert ping["spec"]["schedule"] == "* * * * *"  # every minute: a job waits at most ~1 min once its function is back
    assert ping["spec"]["sink"]["ref"]["name"] == "udb-artifacts" and ping["spec"]["sink"]["uri"] == "/admin/redrive"
    assert ("POST", "/admin/redrive") in {(m, p) for m, p, _ in ROUTES} and ("POST", "/admin/redrive") in SYSTEM_ROUTES


def test_schedules_tick_reaches_the_tick_endpoint(rendered):
    from functions.artifacts.routes import ROUTES
    from shared.security.auth import SYSTEM_ROUTES

    ping = _doc(rendered["base"], "PingSource", "udb-schedules")
    assert ping["spec"]["schedule"] == "* * * * *"  # one tick a minute: the finest slot a cron names
    assert ping["spec"]["sink"]["ref"]["name"] == "udb-artifacts"
    assert ping["spec"]["sink"]["uri"] == "/admin/schedules/tick"
    assert ("POST", "/admin/schedules/tick") in {(m, p) for m, p, _ in ROUTES}
    assert ("POST", "/admin/schedules/tick") in SYSTEM_ROUTES


# --- consistency: the routing table, the code and the settings ---------------------------------

def emitted_event_types() -> dict[str, set[str]]:
    """Event types each module emits: `*.emit(events.X, ...)` and `events.make_event(events.X, ...)`."""
    constants = {name: value for name, value in vars(events).items() if isinstance(value, str)
                 and value in events.EVENT_TYPES}
    found: dict[str, set[str]] = {}
    for path in sorted([*(REPO / "functions").rglob("*.py"), *(REPO / "shared").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("emit", "make_event") and node.args):
                continue
            first = node.args[0]
            if isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name) and first.value.id == "events":
                found.setdefault(constants[first.attr], set()).add(str(path.relative_to(REPO)))
    return found


def test_every_emitted_event_type_has_a_trigger():
    routes = load_routes(EVENTING)
    emitted = emitted_event_types()
    # The scan sees the pipeline: each function's reply, the client's request, the failure.
    assert {events.SOURCE_DISCOVERED, events.SYNC_STAGED, events.WAREHOUSE_LOADED, events.ANALYSIS_COMPLETED,
            events.JOB_FAILED} <= set(emitted)
    for event_type in set(emitted) - set(TERMINAL):
        flags = {flag: "true" for flag in events.ROUTING_FLAGS}
        matched = routes.match({"type": event_type, "tenant": "acme", **flags})
        assert matched, f"{event_type} (emitted by {sorted(emitted[event_type])}) reaches no Trigger"
    for event_type in TERMINAL:
        assert routes.match({"type": event_type, "tenant": "acme"}) == []


def test_every_trigger_filters_a_known_event_type():
    for trigger in load_routes(EVENTING).triggers:
        types = {trigger.attributes.get("type")} if not trigger.filters else set(
            re.findall(r"dev\.udb\.[a-z]+\.[a-z]+", json.dumps(trigger.filters)))
        assert types and types <= set(events.EVENT_TYPES), trigger.name


def test_every_subscriber_and_sink_is_an_existing_service():
    services = {d["metadata"]["name"] for p in (KNATIVE / "base").glob("*.yaml")
                for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "Service"
                and d["apiVersion"].startswith("serving.knative.dev/")}
    assert services == {f"udb-{f}" for f in FUNCTIONS} | {f"udb-{f}-api" for f in PUBLIC_APIS}
    for trigger in load_routes(EVENTING).triggers:
        # The broker delivers without a credential: only to cluster-local function Services.
        assert trigger.subscriber in services and not trigger.subscriber.endswith("-api"), trigger.name
    labels = {d["metadata"]["name"]: d["metadata"]["labels"] for p in (KNATIVE / "base").glob("*.yaml")
              for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "Service"
              and d["apiVersion"].startswith("serving.knative.dev/")}
    refs = []
    for path in EVENTING.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] in ("Kustomization", "Trigger"):
                continue
            spec = doc.get("spec") or {}
            for ref in (spec.get("sink", {}).get("ref"), spec.get("subject")):
                if ref and ref.get("kind") == "Service" and "name" in ref:
                    refs.append((doc["metadata"]["name"], ref["name"]))
                elif ref and ref.get("kind") == "Service":  # a label selector: it must match something
                    matched = [n for n, have in labels.items() if _selects(ref["selector"], have)]
                    assert matched, doc["metadata"]["name"]
                    refs.extend((doc["metadata"]["name"], n) for n in matched)
    assert refs and all(name in services for _, name in refs), refs
    # Sources deliver without a credential too: sinks are cluster-local; the SinkBinding (which
    # only injects K_SINK) covers both discover Services.
    sinks = {name for source, name in refs if source != "udb-events-to-broker"}
    assert sinks and all(labels[name].get(CLUSTER_LOCAL) == "cluster-local" for name in sinks), sinks
    # The functions that originate events (discover_connect, the OAuth callback) get K_SINK.
    assert sorted(n for s, n in refs if s == "udb-events-to-broker") == [
        "udb-artifacts", "udb-artifacts-api", "udb-discover", "udb-discover-api"]


def _selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists) on `labels`."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        have, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and have not in expr["values"]) or (op == "NotIn" and have in expr["values"]) \
                or (op == "Exists" and expr["key"] not in labels):
            return False
    return True


def configured_settings() -> set[str]:
    """Every variable the base manifests set: ConfigMap, Secret template, container env."""
    names = set(INJECTED)
    for path in [*(KNATIVE / "base").glob("*.yaml"), *OUT_OF_BAND]:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "udb-config":
                names |= set(doc["data"])
            elif doc["kind"] == "Secret":
                names |= set(doc.get("stringData") or {})
            elif doc["kind"] == "Service" and doc["apiVersion"].startswith("serving.knative.dev/"):
                names |= {e["name"] for e in _container(doc)["env"]}
    return names


def documented_settings() -> set[str]:
    text = (REPO / "docs" / "settings.md").read_text()
    table = text.split("<!-- settings:begin", 1)[1].split("<!-- settings:end", 1)[0]
    return {name for line in table.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}


def test_every_setting_is_configured_or_documented():
    declared = {env for env, _, _ in Settings.documented()}
    configured, documented = configured_settings(), documented_settings()
    missing = sorted(declared - configured - documented)
    assert missing == [], f"set these in knative/base/config.yaml or list them in docs/settings.md's table: {missing}"
    # And nothing configured or documented that the code does not read (a typo is a silent default).
    runtime_only = {"THREADS"}  # functions-framework's gunicorn threads
    assert sorted(configured - declared - runtime_only) == []
    assert sorted(documented - declared) == []


def test_configmap_values_are_valid_settings():
    config = _doc(list(yaml.safe_load_all((KNATIVE / "base" / "config.yaml").read_text())), "ConfigMap", "udb-config")
    secret = {"UDB_S3_ACCESS_KEY": "x", "UDB_S3_SECRET_KEY": "y"}
    settings = Settings.from_env(env={**config["data"], **secret})
    assert settings.mode == "cluster" and settings.store == "s3" and settings.secrets_backend == "kubernetes"
    for overlay in ("dev", "prod"):
        patch = next(d for d in yaml.safe_load_all((KNATIVE / "overlays" / overlay / "config.yaml").read_text())
                     if d["metadata"]["name"] == "udb-config")
        Settings.from_env(env={**config["data"], **patch["data"], **secret})


# --- what a cluster enforces only at reconcile time (issue 19) ---------------------------------

def _filter_key_typo(docs):
    _doc(docs, "Trigger", "sync-on-source-discovered")["spec"]["filters"][0]["exact"]["autosnyc"] = \
        _doc(docs, "Trigger", "sync-on-source-discovered")["spec"]["filters"][0]["exact"].pop("autosync")


def _broker_class_lowercase(docs):
    _doc(docs, "Broker", "udb")["metadata"]["annotations"]["eventing.knative.dev/broker.class"] = "kafka"


def _trigger_missing_service(docs):
    _doc(docs, "Trigger", "analyze-on-analyze-requested")["spec"]["subscriber"]["ref"]["name"] = "udb-analyse"


def _delivery_order_typo(docs):
    _doc(docs, "Trigger", "writer-on-sync-staged")["metadata"]["annotations"][
        "kafka.eventing.knative.dev/delivery.order"] = "orderd"


def _requests_above_limits(docs):
    _container(_doc(docs, "Service", "udb-sync"))["resources"]["requests"]["memory"] = "64Gi"


def _missing_secret(docs):
    _container(_doc(docs, "Service", "udb-writer"))["envFrom"][1]["secretRef"]["name"] = "udb-objectstore"


def _trigger_delivery_without_dead_letter_sink(docs):
    del _doc(docs, "Trigger", "analyze-on-warehouse-loaded")["spec"]["delivery"]["deadLetterSink"]


def _missing_service_account(docs):
    _doc(docs, "Service", "udb-analyze")["spec"]["template"]["spec"]["serviceAccountName"] = "udb-no-apis"


def _missing_broker(docs):
    _doc(docs, "Trigger", "discover-on-discover-requested")["spec"]["broker"] = "udb2"


def _missing_dead_letter_sink(docs):
    _doc(docs, "Broker", "udb")["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] = "udb-deadletters"


def _exec_probe(docs):
    _container(_doc(docs, "Service", "udb-artifacts"))["startupProbe"] = {"exec": {"command": ["true"]}}


RECONCILE_TIME = {
    # case: (file, mutation, the object that must fail, words its error has)
    "filter-key-lowercase-typo": ("eventing/triggers.yaml", _filter_key_typo, "sync-on-source-discovered",
                                  'spec.filters[0].exact.autosnyc: "autosnyc" is neither a CloudEvents attribute'),
    "broker-class-kafka": ("eventing/broker.yaml", _broker_class_lowercase, "udb",
                           'eventing.knative.dev/broker.class is "kafka": the Kafka broker reconciles only "Kafka"'),
    "trigger-names-a-missing-service": ("eventing/triggers.yaml", _trigger_missing_service,
                                        "analyze-on-analyze-requested",
                                        "spec.subscriber.ref: Service udb/udb-analyse does not exist"),
    "delivery-order-typo": ("eventing/triggers.yaml", _delivery_order_typo, "writer-on-sync-staged",
                            'delivery.order value: "orderd"'),
    "requests-above-limits": ("knative/base/services.yaml", _requests_above_limits, "udb-sync",
                              "resources.requests.memory: 64Gi is above the limit"),
    "missing-secret": ("knative/base/services.yaml", _missing_secret, "udb-writer",
                       "envFrom[1].secretRef: Secret udb/udb-objectstore does not exist"),
    "trigger-delivery-without-dead-letter-sink": (
        "eventing/triggers.yaml", _trigger_delivery_without_dead_letter_sink, "analyze-on-warehouse-loaded",
        "effective delivery has no deadLetterSink: spec.delivery (it replaces the Broker's, not merged) has none"),
    "missing-service-account": ("knative/base/services.yaml", _missing_service_account, "udb-analyze",
                                "serviceAccountName: ServiceAccount udb/udb-no-apis does not exist"),
    "trigger-names-a-missing-broker": ("eventing/triggers.yaml", _missing_broker, "discover-on-discover-requested",
                                       "spec.broker: Broker udb/udb2 does not exist"),
    "missing-dead-letter-sink": ("eventing/broker.yaml", _missing_dead_letter_sink, "udb",
                                 "spec.delivery.deadLetterSink.ref: KafkaSink udb/udb-deadletters does not exist"),
    "exec-startup-probe": ("knative/base/services.yaml", _exec_probe, "udb-artifacts",
                           "startupProbe: exec probes are not run by Knative's queue-proxy"),
}


@pytest.mark.parametrize("case", sorted(RECONCILE_TIME))
def test_broken_copy_fails_what_a_cluster_checks_at_reconcile_time(validator, tree_copy, case):
    relative, mutate, name, words = RECONCILE_TIME[case]
    path = tree_copy / relative
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    mutate(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    # The objects applied together, where every reference must resolve. The overlays replace the
    # Services' resources, so a base resources change shows in the base's render only.
    directories = ["knative/base"] + ([] if case == "requests-above-limits" else
                                      ["knative/overlays/dev", "knative/overlays/prod"])
    for directory in directories:
        rc, findings = run_validator(validator, directory, cwd=tree_copy)
        failed = [f for f in findings if f["level"] == "error"]
        assert rc == 1 and [f["name"] for f in failed] == [name], (case, directory, failed)
        assert words in failed[0]["message"], failed[0]["message"]


def test_the_secret_created_out_of_band_is_what_the_services_reference(validator):
    # Without the out-of-band Secret, every Service's secretRef is unresolved: the reference check
    # is what catches a Secret missing from a cluster's install steps.
    rc, findings = run_validator(validator, "knative/overlays/dev",
                                 flags=[f"-extension={name}" for name in EXTENSIONS])
    failed = {f["name"]: f["message"] for f in findings if f["level"] == "error"}
    assert rc == 1 and sorted(failed) == sorted(f"udb-{s}" for s in [*FUNCTIONS, *(f"{f}-api" for f in PUBLIC_APIS)])
    assert all("envFrom[1].secretRef: Secret udb/udb-object-store does not exist" in m for m in failed.values())


@pytest.mark.parametrize("overlay", ["base", "dev", "prod"])
def test_the_render_is_a_valid_update_of_the_previous_release(validator, overlay):
    """Knative's webhooks validate an apply over existing objects WithinUpdate (immutable fields):
    the current render against 0.1.0's. Declaring the KafkaSinks' topics (issue 19) changes two
    immutable fields where 0.1.0 left them unset (base, dev): the upgrade recreates those two
    sinks (docs/deploy.md "Upgrading"), which -recreate states; prod declared them already."""
    directory = "knative/base" if overlay == "base" else f"knative/overlays/{overlay}"
    previous = [f"-previous={PREVIOUS_RELEASE / f'{overlay}.yaml'}"]
    rc, findings = run_validator(validator, directory, flags=validator_flags() + previous)
    failed = sorted((f["name"], f["message"]) for f in findings if f["level"] == "error")
    if overlay == "prod":
        assert (rc, failed) == (0, [])
        return
    assert rc == 1 and failed == [
        (sink, "Immutable field updated: spec.numPartitions, spec.replicationFactor")
        for sink in ("udb-dead-letters", "udb-job-events")]
    recreate = ["-recreate=KafkaSink/udb-dead-letters", "-recreate=KafkaSink/udb-job-events"]
    rc, findings = run_validator(validator, directory, flags=validator_flags() + previous + recreate)
    assert rc == 0 and [f for f in findings if f["level"] != "ok"] == []
    assert len(findings) == len(render(validator, REPO / directory))


def test_a_changed_immutable_field_fails_the_update_check(validator, tree_copy):
    path = tree_copy / "eventing" / "broker.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    _doc(docs, "KafkaSink", "udb-job-events")["spec"]["topic"] = "udb.job-events-v2"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    rc, findings = run_validator(validator, "knative/overlays/prod", cwd=tree_copy,
                                 flags=validator_flags(tree_copy) + [f"-previous={PREVIOUS_RELEASE / 'prod.yaml'}"])
    failed = [(f["name"], f["message"]) for f in findings if f["level"] == "error"]
    assert rc == 1 and failed == [("udb-job-events", "Immutable field updated: spec.topic")]

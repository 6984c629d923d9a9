"""The dashboard and the collector example stay in step with the metrics contract."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import REPO
from tests.observability import contract

pytestmark = pytest.mark.unit
DASHBOARD = REPO / "observability" / "grafana-dashboard.json"
COLLECTOR = REPO / "observability" / "otel-collector.yaml"


def test_the_dashboard_charts_every_contract_metric_and_nothing_else():
    dashboard = json.loads(DASHBOARD.read_text())
    names = {row["name"] for row in contract()}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"} and panel["targets"], panel["title"]
        for target in panel["targets"]:
            for metric in re.findall(r"\budb_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", metric)
                assert base in names, f"{panel['title']}: {metric} is not in docs/metrics.md"
                used.add(base)
    assert used == names, f"not charted: {sorted(names - used)}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "tenant", "function"}


def test_the_collector_pipelines_use_only_defined_components():
    config = yaml.safe_load(COLLECTOR.read_text())
    pipelines = config["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}: {kind[:-1]} {component} is not defined"
        assert pipeline["processors"][-1] == "batch" and pipeline["processors"][0] == "memory_limiter", name
    assert pipelines["traces"]["receivers"] == ["otlp"] and pipelines["traces"]["exporters"] == ["otlp/traces"]
    assert "prometheus" in pipelines["metrics"]["exporters"] and "prometheus" in pipelines["metrics"]["receivers"]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    # The endpoint the functions are told to use is the collector's OTLP/HTTP traces path.
    assert "UDB_OTEL_ENDPOINT: http://otel-collector.observability.svc:4318/v1/traces" in COLLECTOR.read_text()

"""Metric names are a contract: every vocelio_* series that the Helm chart's
dashboard, alerts and HPA reference is exposed by a running gateway or by the
operator."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, service
from vocelio_contract.config import GatewayConfig, RateTier, TierMatch
from vocelio_operator.kube.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vocelio-gateway"
NAME = re.compile(r"\b(vocelio_[a-z_]+)")


def referenced_names(helm: Path) -> set[str]:
    names: set[str] = set()
    dashboard = json.loads((CHART / "dashboards" / "vocelio-gateway.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names.update(NAME.findall(target["expr"]))
    rendered = subprocess.run(
        [str(helm), "template", "vg", str(CHART), "--set", "image.tag=0.1.0",
         "--set", "monitoring.prometheusRule=true"], capture_output=True, text=True, check=True).stdout
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "PrometheusRule":
            for rule in doc["spec"]["groups"][0]["rules"]:
                names.update(NAME.findall(rule["expr"]))
        if doc and doc["kind"] == "HorizontalPodAutoscaler":
            for metric in doc["spec"]["metrics"]:
                if metric["type"] == "Pods":
                    names.add(metric["pods"]["metric"]["name"])
    return names


def exposed(text: str) -> set[str]:
    out: set[str] = set()
    for family in text_string_to_metric_families(text):
        out.update(sample.name for sample in family.samples)
        out.add(family.name)
    return out


async def test_every_metric_the_chart_references_is_exposed(upstream_factory: UpstreamFactory,
                                                            gateway_factory: GatewayFactory, helm_binary: Path) -> None:
    up = await upstream_factory()
    tiers = [RateTier(name="anonymous", requests=10, window_s=60, key_by="ip", match=TierMatch(kind="anonymous"))]
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=tiers))
    await gw.get("/api/v1/svc/x")
    names = exposed((await gw.get("/metrics"))[2].decode())
    names |= exposed(generate_latest(OperatorMetrics().registry).decode())
    referenced = referenced_names(helm_binary)
    assert len(referenced) >= 8
    missing = sorted(n for n in referenced if n not in names)
    assert missing == [], f"referenced by the chart but not exposed: {missing}"

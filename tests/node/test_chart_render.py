"""What the real node taught the chart, kept as render checks that run
everywhere (no node needed): probes that pass the proxy's own Host check, and
an HPA that can scale down on a cluster without a custom-metrics adapter."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import binary
from tests.node.test_chart_on_node import CHART


def render(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(binary("helm")), "template", "vg", str(CHART), "--kube-version", "1.37.0",
                          "--set", "image.tag=0.1.0", *args], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def proxy_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-proxy"))
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("hosts", [["api.example.com"], ["a.example.com", "b.example.com"]])
def test_with_trusted_hosts_every_proxy_probe_presents_a_trusted_host(hosts: list[str]) -> None:
    container = proxy_container(render("--set-json", f"proxy.trustedHosts={json.dumps(hosts)}"))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        headers = container[probe]["httpGet"].get("httpHeaders", [])
        assert {"name": "Host", "value": hosts[0]} in headers, probe


def test_without_trusted_hosts_the_probes_send_the_kubelets_default_host() -> None:
    container = proxy_container(render())
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert "httpHeaders" not in container[probe]["httpGet"]


def test_the_default_hpa_scales_on_cpu_only() -> None:
    hpa = next(d for d in render() if d["kind"] == "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


def test_the_in_flight_metric_is_added_when_asked_for() -> None:
    hpa = next(d for d in render("--set", "autoscaling.targetInFlightPerPod=40")
               if d["kind"] == "HorizontalPodAutoscaler")
    pods = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods[0]["pods"]["metric"]["name"] == "vocelio_requests_in_flight"

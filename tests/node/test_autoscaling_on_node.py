"""Autoscaling on the real node: metrics-server (built from its Go module)
serves the pods' real CPU from the kubelet, and the chart's HPA scales the
proxy Deployment up under load and back down after it, on a cluster with no
custom-metrics adapter. That is the chart's default (CPU only): an HPA with a
custom metric that nothing serves never scales down, which is also shown.
With Prometheus and prometheus-adapter serving the README's adapter rule, the
proxy's `vocelio_requests_in_flight` scales it through custom.metrics.k8s.io."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import ROOT
from tests.harness.node import RealNode
from tests.harness.waiting import poll
from tests.node.test_chart_on_node import CHART, Release, install, record_figure, serves

# Cold runs build the images and start the node inside the first test's time.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def metrics(node: RealNode) -> RealNode:
    node.start_metrics_server()
    return node


def shorten_scale_down(node: RealNode, release: Release) -> None:
    """The chart's scale-down window is 5 minutes (what users get); the tests shorten it on the object, after
    every helm install or upgrade (which restores the chart's), so scale-down fits the test's budget. The
    metrics and targets stay the chart's."""
    node.kubectl("patch", "hpa", f"{release.fullname}-proxy", "-n", release.namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"behavior": {"scaleDown": {
                     "stabilizationWindowSeconds": 15,
                     "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}}}))


def hpa(node: RealNode, release: Release) -> dict[str, Any]:
    out = node.kubectl("get", "hpa", f"{release.fullname}-proxy", "-n", release.namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def replicas(node: RealNode, release: Release) -> int:
    return int(hpa(node, release)["status"].get("desiredReplicas", 0))


@pytest.fixture(scope="module")
def scaled(metrics: RealNode, backends: None) -> Release:
    release = Release("gw-hpa", "vg-hpa", "localhost")
    # Development values (a CPU-only HPA, like the chart's default), one to three proxies, a small CPU
    # request so that load on two shared cores drives utilisation well past the target.
    install(metrics, release, "development", "--set", "redis.inChart=false",
            "--set", "autoscaling.minReplicas=1", "--set", "autoscaling.maxReplicas=3",
            "--set", "autoscaling.targetCPUUtilizationPercentage=50",
            "--set", "proxy.resources.requests.cpu=50m", "--set", "proxy.resources.limits.cpu=1")
    shorten_scale_down(metrics, release)
    return release


def test_the_default_hpa_uses_cpu_only_and_so_needs_no_adapter() -> None:
    values = (CHART / "values.yaml").read_text()
    assert "targetInFlightPerPod: 0" in values


def test_the_hpa_scales_the_proxy_up_under_load_and_back_down_after(metrics: RealNode, scaled: Release) -> None:
    node = metrics
    poll("the HPA reading CPU from metrics-server", lambda: any(
        m.get("resource", {}).get("current", {}).get("averageUtilization") is not None
        for m in hpa(node, scaled)["status"].get("currentMetrics") or []), 120, interval=2)
    assert replicas(node, scaled) == 1
    poll("the echo route on the autoscaled proxy", lambda: serves(node, scaled, "/echo/warm"), 180, interval=1)
    host, port = scaled.service_address(node)
    wrk = shutil.which("wrk")
    assert wrk, "wrk is missing (make system-deps installs it)"
    started = time.monotonic()
    load = subprocess.Popen([wrk, "-t2", "-c32", "-d240s", f"http://{host}:{port}/echo/load"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll("the HPA scaling up", lambda: replicas(node, scaled) > 1, 200, interval=2)
        record_figure("HPA scale-up after load starts (s)", time.monotonic() - started)
    finally:
        load.terminate()
        load.wait(timeout=10)
    stopped = time.monotonic()
    poll("the HPA scaling back down", lambda: replicas(node, scaled) == 1, 240, interval=2)
    record_figure("HPA scale-down after load stops, 15 s window (s)", time.monotonic() - stopped)
    conditions = {c["type"]: c["status"] for c in hpa(node, scaled)["status"]["conditions"]}
    assert conditions["ScalingActive"] == "True"


def test_a_custom_metric_that_nothing_serves_blocks_scale_down(metrics: RealNode, scaled: Release) -> None:
    """Why the Pods metric is opt-in: with it and no adapter, an HPA that wants fewer pods refuses
    (ScalingActive=False on the missing metric) and the proxy never scales down."""
    node = metrics
    deployment = f"deployment/{scaled.fullname}-proxy"
    node.helm("upgrade", scaled.name, str(CHART), "-n", scaled.namespace, "--reuse-values",
              "--set", "autoscaling.targetInFlightPerPod=5")
    shorten_scale_down(node, scaled)
    node.kubectl("scale", deployment, "-n", scaled.namespace, "--replicas=2")

    def refuses() -> bool:
        conditions = {c["type"]: c for c in hpa(node, scaled)["status"].get("conditions", [])}
        active = conditions.get("ScalingActive", {})
        return bool(active.get("status") == "False" and active.get("reason") == "FailedGetPodsMetric")

    try:
        poll("the HPA refusing to scale down on the missing custom metric", refuses, 120, interval=2)
        assert int(json.loads(node.kubectl("get", deployment, "-n", scaled.namespace, "-o", "json").stdout)
                   ["spec"]["replicas"]) == 2
    finally:
        node.helm("upgrade", scaled.name, str(CHART), "-n", scaled.namespace, "--reuse-values",
                  "--set", "autoscaling.targetInFlightPerPod=0")
        shorten_scale_down(node, scaled)
    # CPU only again: the same HPA scales the idle proxy down (its scale-down window was shortened above).
    poll("the CPU-only HPA scaling down", lambda: replicas(node, scaled) == 1, 180, interval=2)


def readme_adapter_rules() -> str:
    """The prometheus-adapter rule exactly as the README documents it (values of the prometheus-adapter Helm
    chart, `rules.custom`), as the adapter's own configuration file (`rules:` list)."""
    text = (ROOT / "README.md").read_text()
    for block in text.split("```yaml")[1:]:
        body = block.split("```", 1)[0]
        if "seriesQuery" in body and "vocelio_requests_in_flight" in body:
            rules = yaml.safe_load(body)["rules"]
            return yaml.safe_dump({"rules": rules["custom"] if isinstance(rules, dict) else rules})
    raise AssertionError("the README no longer documents a prometheus-adapter rule for vocelio_requests_in_flight")


@pytest.fixture(scope="module")
def custom_metrics(metrics: RealNode) -> RealNode:
    metrics.start_custom_metrics(readme_adapter_rules())
    return metrics


def pods_metric(node: RealNode, release: Release) -> float | None:
    for metric in hpa(node, release)["status"].get("currentMetrics") or []:
        if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "vocelio_requests_in_flight":
            value = metric["pods"]["current"]["averageValue"]
            return float(value[:-1]) / 1000 if value.endswith("m") else float(value)
    return None


def test_in_flight_requests_scale_the_proxy_through_prometheus_adapter(custom_metrics: RealNode,
                                                                       backends: None) -> None:
    node = custom_metrics
    release = Release("gw-inflight", "vg-inflight", "localhost")
    install(node, release, "development", "--set", "redis.inChart=false",
            "--set", "autoscaling.minReplicas=1", "--set", "autoscaling.maxReplicas=3",
            "--set", "autoscaling.targetInFlightPerPod=4", "--set", "autoscaling.targetCPUUtilizationPercentage=90",
            "--set", "proxy.resources.requests.cpu=200m", "--set", "proxy.resources.limits.cpu=1")
    shorten_scale_down(node, release)
    poll("the echo route on the in-flight proxy", lambda: serves(node, release, "/echo/warm"), 180, interval=1)
    poll("the in-flight metric through custom.metrics.k8s.io", lambda: pods_metric(node, release) is not None,
         180, interval=2)
    host, port = release.service_address(node)
    wrk = shutil.which("wrk")
    assert wrk, "wrk is missing (make system-deps installs it)"
    started = time.monotonic()
    # Slow answers keep ~16 requests in flight on one proxy while its CPU stays low: the custom metric,
    # not the CPU, has to be what scales it.
    load = subprocess.Popen([wrk, "-t2", "-c16", "-d300s", "--timeout", "10s",
                             f"http://{host}:{port}/echo/slow?delay_ms=2000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll("the HPA scaling up on in-flight requests", lambda: replicas(node, release) > 1, 240, interval=2)
        record_figure("HPA scale-up on in-flight requests after load starts (s)", time.monotonic() - started)
        seen = pods_metric(node, release)
        assert seen is not None
        assert seen > 4
    finally:
        load.terminate()
        load.wait(timeout=10)
    stopped = time.monotonic()
    poll("the HPA scaling back down", lambda: replicas(node, release) == 1, 300, interval=2)
    record_figure("HPA scale-down on in-flight requests after load stops (s)", time.monotonic() - stopped)

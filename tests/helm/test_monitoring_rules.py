"""The chart's monitoring objects as rendered by `helm template`: both the proxy
and the operator are scraped with the configured labels and interval; the
PrometheusRule passes `promtool check rules`, and `promtool test rules` proves
the alerts on input series (the 5xx alert fires at 0.2 req/s of errors and not
on healthy traffic); every alert has a standard severity, a summary, a
description and a runbook that exists in the repository; the dashboard has
datasource, namespace and pod variables."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import BIN_DIR, ROOT

CHART = ROOT / "charts" / "vocelio-gateway"
RUNBOOKS = ROOT / "docs" / "runbooks"
MONITORING = ("--set", "monitoring.serviceMonitor=true", "--set", "monitoring.prometheusRule=true",
              "--set", "monitoring.grafanaDashboard=true")


def render(*extra: str, values: str = "production") -> list[dict[str, Any]]:
    done = subprocess.run([str(BIN_DIR / "helm"), "template", "vg", str(CHART), "-f",
                           str(CHART / f"values-{values}.yaml"), "--namespace", "vg",
                           "--set", "image.tag=0.1.0", *MONITORING, *extra],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def rule_file(tmp_path: Path, *extra: str) -> Path:
    (rule,) = [d for d in render(*extra) if d["kind"] == "PrometheusRule"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def alerts(*extra: str) -> list[dict[str, Any]]:
    (rule,) = [d for d in render(*extra) if d["kind"] == "PrometheusRule"]
    return [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("values", ["production", "staging", "development"])
def test_the_rendered_rules_pass_promtool_check_rules(tmp_path: Path, values: str) -> None:
    (rule,) = [d for d in render(values=values) if d["kind"] == "PrometheusRule"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_standard_severity_annotations_and_a_runbook_in_the_repository() -> None:
    found = alerts("--set", "monitoring.alertLabels.team=platform")
    assert len(found) >= 8
    for alert in found:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert alert["labels"]["team"] == "platform"
        annotations = alert["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        assert annotations["runbook_url"].endswith(f"/docs/runbooks/{name}.md"), name
        runbook = (RUNBOOKS / f"{name}.md").read_text()
        for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert section in runbook, (name, section)
    assert {a["alert"] for a in found} == {p.stem for p in RUNBOOKS.glob("Vocelio*.md")}
    assert "clamp_min" not in json.dumps(found)


def test_the_5xx_alert_fires_at_a_low_rate_outage_and_not_on_healthy_traffic(tmp_path: Path) -> None:
    rules = rule_file(tmp_path)
    series = 'vocelio_requests_total{{namespace="vg", pod="p1", service="svc", method="GET", code="{code}", ' \
             'code_class="{cls}"}}'
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {   # An outage at 0.2 req/s (12 errors a minute, nothing else): fires, critical.
                "interval": "1m",
                "input_series": [
                    {"series": series.format(code="503", cls="5xx"), "values": "0+12x30"},
                    {"series": series.format(code="200", cls="2xx"), "values": "0+0x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "15m", "alertname": "VocelioHigh5xxRatio", "exp_alerts": [{
                        "exp_labels": {"severity": "critical", "namespace": "vg"},
                        "exp_annotations": {
                            "summary": "More than 5% of gateway responses are 5xx",
                            "description": "100% of the responses of the gateway in namespace vg were 5xx over "
                                           "the last 5 minutes.",
                            "runbook_url": "https://github.com/vocelio/gateway/blob/main/docs/runbooks/"
                                           "VocelioHigh5xxRatio.md"}}]},
                    {"eval_time": "3m", "alertname": "VocelioHigh5xxRatio", "exp_alerts": []},  # `for: 5m`
                ],
            },
            {   # Healthy traffic: 100 req/s with 1% errors, and no traffic at all: silent.
                "interval": "1m",
                "input_series": [
                    {"series": series.format(code="200", cls="2xx"), "values": "0+5940x30"},
                    {"series": series.format(code="500", cls="5xx"), "values": "0+60x30"},
                    {"series": series.format(code="200", cls="2xx").replace('pod="p1"', 'pod="p2"'),
                     "values": "0x30"},  # an idle pod beside them
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "VocelioHigh5xxRatio", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "VocelioService5xxRatio", "exp_alerts": []},
                ],
            },
            {   # A breaker held open and no healthy endpoint: both alerts, with the service.
                "interval": "1m",
                "input_series": [
                    {"series": 'vocelio_circuit_breaker_state{namespace="vg", pod="p1", service="svc"}',
                     "values": "2x10"},
                    {"series": 'vocelio_endpoints{namespace="vg", pod="p1", service="svc"}', "values": "3x10"},
                    {"series": 'vocelio_endpoints_healthy{namespace="vg", pod="p1", service="svc"}',
                     "values": "0x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "VocelioCircuitBreakerOpen", "exp_alerts": [{
                        "exp_labels": {"severity": "warning", "namespace": "vg", "service": "svc"},
                        "exp_annotations": {
                            "summary": "Circuit breaker open for svc",
                            "description": "At least one proxy has kept the circuit breaker of service svc open "
                                           "for 2 minutes: its requests fail fast with 503.",
                            "runbook_url": "https://github.com/vocelio/gateway/blob/main/docs/runbooks/"
                                           "VocelioCircuitBreakerOpen.md"}}]},
                    {"eval_time": "5m", "alertname": "VocelioNoHealthyEndpoints", "exp_alerts": [{
                        "exp_labels": {"severity": "critical", "namespace": "vg", "service": "svc"},
                        "exp_annotations": {
                            "summary": "Service svc has no healthy endpoint",
                            "description": "No proxy sees a healthy endpoint for service svc: its requests are "
                                           "answered 503.",
                            "runbook_url": "https://github.com/vocelio/gateway/blob/main/docs/runbooks/"
                                           "VocelioNoHealthyEndpoints.md"}}]},
                ],
            },
            {   # Another release's namespace is not this release's business.
                "interval": "1m",
                "input_series": [{"series": series.format(code="503", cls="5xx").replace('"vg"', '"other"'),
                                  "values": "0+12x30"}],
                "alert_rule_test": [{"eval_time": "15m", "alertname": "VocelioHigh5xxRatio", "exp_alerts": []}],
            },
        ],
    }
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = promtool("test", "rules", str(test_file), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_proxy_and_the_operator_are_scraped_with_the_labels_and_interval() -> None:
    docs = render("--set", "monitoring.labels.release=kps", "--set", "monitoring.interval=15s",
                  "--set", "monitoring.scrapeTimeout=10s", "--set", "monitoring.ruleLabels.release=kps",
                  "--set", "monitoring.ruleInterval=1m")
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")}
    assert set(monitors) == {"vg-vocelio-gateway-proxy", "vg-vocelio-gateway-operator"}
    operator = monitors["vg-vocelio-gateway-operator"]
    assert operator["kind"] == "PodMonitor"
    assert operator["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for monitor in monitors.values():
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["interval"] == "15s"
        assert endpoint["scrapeTimeout"] == "10s"
        assert endpoint["path"] == "/metrics"
        assert monitor["metadata"]["labels"]["release"] == "kps"
        assert monitor["metadata"]["namespace"] == "vg"
    assert operator["spec"]["podMetricsEndpoints"][0]["port"] in ports
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == "vg"
    assert [g["interval"] for g in rule["spec"]["groups"]] == ["1m"]
    docs = render("--set", "proxy.admin.enabled=false")
    (service_monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert service_monitor["spec"]["endpoints"][0]["interval"] == "30s"
    assert "scrapeTimeout" not in service_monitor["spec"]["endpoints"][0]


@pytest.mark.parametrize("setting", ["monitoring.interval=often", "monitoring.alerts.errorRatio=2",
                                     "monitoring.runbookBaseUrl=docs", "monitoring.labels.release=null",
                                     "monitoring.ruleInterval=sometimes"])
def test_bad_monitoring_values_are_refused_by_the_schema(setting: str) -> None:
    done = subprocess.run([str(BIN_DIR / "helm"), "template", "vg", str(CHART),
                           "--set", "image.tag=0.1.0", "--set", setting], capture_output=True, text=True, timeout=180)
    assert done.returncode != 0, setting


def test_the_dashboard_has_datasource_namespace_and_pod_variables_used_by_every_panel() -> None:
    docs = render("--set", "monitoring.dashboardAnnotations.grafana_folder=Gateways")
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "Gateways"
    dashboard = json.loads(config_map["data"]["vocelio-gateway.json"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "namespace" in variables
    assert variables["pod"]["includeAll"] is True
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], panel["title"]
            assert "clamp_min" not in target["expr"]

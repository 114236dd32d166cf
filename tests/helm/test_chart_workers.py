"""`proxy.workers` in the chart: the proxy settings carry it, the container's CPU and
memory requests and limits are workers x the per-worker `proxy.resources`, the probes
go to the supervisor on the admin port, and a value the chart cannot honour (no admin
listener, a quantity it cannot multiply, auto, zero) is refused with a message naming it.
One worker renders exactly what the chart rendered before the setting existed."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.helm.chart_support import CHART, docs_of, helm, template


def proxy_objects(*sets: str) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = docs_of(template(*[a for s in sets for a in ("--set", s)]))
    deployment = next(d for d in docs if d["kind"] == "Deployment"
                      and d["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy")
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-proxy-settings"))
    return deployment["spec"]["template"]["spec"]["containers"][0], yaml.safe_load(settings["data"]["settings.yaml"])


def test_several_workers_multiply_the_per_worker_resources_and_reach_the_settings() -> None:
    container, settings = proxy_objects("proxy.workers=3", "proxy.resources.requests.cpu=0.5",
                                        "proxy.resources.limits.cpu=1", "proxy.resources.requests.memory=100Mi")
    assert settings["workers"] == 3
    assert container["resources"] == {"requests": {"cpu": "1500m", "memory": "300Mi"},
                                      "limits": {"cpu": "3000m", "memory": "1536Mi"}}


def test_several_workers_probe_the_supervisor_on_the_admin_port() -> None:
    container, _ = proxy_objects("proxy.workers=2", "proxy.trustedHosts[0]=api.example.com")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "admin", probe
        assert "httpHeaders" not in container[probe]["httpGet"]  # the admin listener checks no Host


def test_one_worker_renders_as_before() -> None:
    container, settings = proxy_objects("proxy.trustedHosts[0]=api.example.com")
    assert "workers" not in settings
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert container["readinessProbe"]["httpGet"]["httpHeaders"] == [{"name": "Host", "value": "api.example.com"}]


@pytest.mark.parametrize(("setting", "message"), [
    ("proxy.admin.enabled=false", "proxy.workers > 1 needs proxy.admin.enabled"),
    ("proxy.resources.requests.cpu=0.25m", "proxy.resources.requests.cpu: 0.25m cannot be multiplied"),
])
def test_several_workers_refuse_what_the_chart_cannot_honour(setting: str, message: str) -> None:
    result = helm("template", "vg", str(CHART), "--set", "proxy.workers=2", "--set", setting,
                  check=False)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("value", ["0", "auto", "65"])
def test_the_schema_refuses_a_worker_count_out_of_range(value: str) -> None:
    result = helm("template", "vg", str(CHART), "--set", f"proxy.workers={value}", check=False)
    assert result.returncode != 0
    assert "workers" in result.stderr

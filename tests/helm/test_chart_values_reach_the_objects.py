"""The values users reach for first reach the rendered objects, and the schema refuses bad ones
with a message naming the value."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helm.chart_support import CHART, docs_of, helm, template

DIGEST = "sha256:" + "ab" * 32


def render(*sets: str) -> list[dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    return docs_of(template(*args))


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["labels"]["app.kubernetes.io/component"] == component)


def pod(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(docs, component)["spec"]["template"]["spec"]
    return spec


def test_name_overrides_rename_every_object_and_keep_selectors_consistent() -> None:
    docs = render("fullnameOverride=edge")
    names = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "Service", "ServiceAccount")}
    assert names == {"edge-operator", "edge-proxy"}
    svc = next(d for d in docs if d["kind"] == "Service")
    labels = deployment(docs, "proxy")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    docs = render("nameOverride=gw")
    assert deployment(docs, "proxy")["metadata"]["name"] == "vg-gw-proxy"
    assert deployment(docs, "proxy")["metadata"]["labels"]["app.kubernetes.io/name"] == "gw"


def test_images_are_per_component_with_digest_and_fall_back_to_the_shared_block() -> None:
    docs = render("image.repository=mirror.example/v", "operator.image.digest=" + DIGEST,
                  "proxy.image.repository=other.example/proxy", "proxy.image.tag=9.9.9",
                  "proxy.image.pullPolicy=Always")
    op = pod(docs, "operator")["containers"][0]
    px = pod(docs, "proxy")["containers"][0]
    assert op["image"] == f"mirror.example/v/gateway-operator:0.1.0@{DIGEST}"
    assert op["imagePullPolicy"] == "IfNotPresent"
    assert px["image"] == "other.example/proxy:9.9.9"
    assert px["imagePullPolicy"] == "Always"


def test_pull_secrets_from_both_spellings_are_merged_once() -> None:
    docs = render("imagePullSecrets[0]=a", "imagePullSecrets[1].name=b", "image.pullSecrets[0]=a")
    for component in ("operator", "proxy"):
        assert pod(docs, component)["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]


def test_service_accounts_take_annotations_or_an_existing_name_and_rbac_follows() -> None:
    docs = render("proxy.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/p",
                  "operator.serviceAccount.create=false", "operator.serviceAccount.name=platform-op")
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert set(accounts) == {"vg-vocelio-gateway-proxy"}
    assert accounts["vg-vocelio-gateway-proxy"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/p"}
    assert pod(docs, "operator")["serviceAccountName"] == "platform-op"
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    operator = [s for d in bindings if "-operator-" in d["metadata"]["name"] for s in d["subjects"]]
    proxy = [s for d in bindings if "-proxy" in d["metadata"]["name"] for s in d["subjects"]]
    assert operator
    assert {s["name"] for s in operator} == {"platform-op"}
    # With the default configSource (api) the proxy reads its ConfigMaps under its own account.
    assert {s["name"] for s in proxy} == {"vg-vocelio-gateway-proxy"}
    assert len(operator) + len(proxy) == sum(len(d["subjects"]) for d in bindings)


def test_scheduling_and_extras_reach_the_pod() -> None:
    docs = render("proxy.nodeSelector.pool=edge", "proxy.tolerations[0].key=edge",
                  "proxy.tolerations[0].operator=Exists", "proxy.priorityClassName=gateway-critical",
                  "proxy.podLabels.team=platform", "proxy.podLabels.app\\.kubernetes\\.io/component=hijack",
                  "proxy.extraEnv[0].name=X", "proxy.extraEnv[0].value=one",
                  "proxy.envFrom[0].secretRef.name=extra", "proxy.extraVolumes[0].name=certs",
                  "proxy.extraVolumes[0].secret.secretName=certs", "proxy.extraVolumeMounts[0].name=certs",
                  "proxy.extraVolumeMounts[0].mountPath=/certs", "proxy.podSecurityContext.runAsUser=20000",
                  "proxy.securityContext.runAsUser=20000")
    spec = pod(docs, "proxy")
    container = spec["containers"][0]
    assert spec["nodeSelector"] == {"pool": "edge"}
    assert spec["tolerations"] == [{"key": "edge", "operator": "Exists"}]
    assert spec["priorityClassName"] == "gateway-critical"
    labels = deployment(docs, "proxy")["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "platform"
    assert labels["app.kubernetes.io/component"] == "proxy"
    assert {"name": "X", "value": "one"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": "extra"}}]
    assert {"name": "certs", "secret": {"secretName": "certs"}} in spec["volumes"]
    assert {"name": "certs", "mountPath": "/certs"} in container["volumeMounts"]
    # Overrides merge over the hardened defaults, key by key.
    assert spec["securityContext"]["runAsUser"] == 20000
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] == 20000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_topology_spread_overrides_replace_the_default_spread() -> None:
    default = pod(render(), "proxy")["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in default} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    custom = pod(render("proxy.topologySpreadConstraints[0].maxSkew=2",
                        "proxy.topologySpreadConstraints[0].topologyKey=zone",
                        "proxy.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule"), "proxy")
    assert custom["topologySpreadConstraints"] == [
        {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]


def test_the_service_takes_load_balancer_settings_only_where_kubernetes_allows_them() -> None:
    lb = ["service.type=LoadBalancer", "service.loadBalancerClass=service.k8s.aws/nlb",
          "service.externalTrafficPolicy=Local", "service.annotations.a=b",
          "service.loadBalancerSourceRanges[0]=10.0.0.0/8"]
    svc = next(d for d in render(*lb) if d["kind"] == "Service")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert svc["metadata"]["annotations"] == {"a": "b"}
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    cluster_ip = next(d for d in render("service.loadBalancerClass=x.io/y", "service.externalTrafficPolicy=Local")
                      if d["kind"] == "Service")
    assert "loadBalancerClass" not in cluster_ip["spec"]
    assert "externalTrafficPolicy" not in cluster_ip["spec"]


@pytest.mark.parametrize("values", [None, "values-production.yaml", "values-staging.yaml", "values-development.yaml"])
def test_pods_request_cpu_and_memory_and_limit_memory_but_not_cpu(values: str | None) -> None:
    docs = docs_of(template(*(["-f", str(CHART / values)] if values else [])))
    for component in ("operator", "proxy"):
        resources = pod(docs, component)["containers"][0]["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"}
        assert set(resources["limits"]) == {"memory"}, (component, resources)


@pytest.mark.parametrize(("setting", "message"), [
    ("proxy.image.digest=sha256:short", "digest"),
    ("operator.image.tag=latest", "tag"),
    ("service.externalTrafficPolicy=Nearest", "externalTrafficPolicy"),
    ("service.loadBalancerClass=nlb", "loadBalancerClass"),
    ("proxy.resources.limits.memory=null", "memory"),
    ("proxy.extraEnv[0].value=one", "name"),
    ("nameOverride=Bad_Name", "nameOverride"),
    ("operator.serviceAccount.automount=true", "automount"),
    ("imagePullSecrets[0].secret=a", "imagePullSecrets"),
])
def test_the_schema_refuses_bad_first_reach_values(setting: str, message: str) -> None:
    result = helm("template", "vg", str(CHART), "--set", "image.tag=0.1.0", "--set", setting, check=False)
    assert result.returncode != 0, setting
    assert message in result.stderr, result.stderr

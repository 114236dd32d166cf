"""The chart's `tls` values reach the objects: the proxy settings load and name
the Secrets, the Service gains 443, the NetworkPolicy admits it, Secrets are
mounted (volume source) or readable by name only (api source: a Role with
resourceNames, no ClusterRole), and the schema refuses what cannot work."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.helm.chart_support import CHART, docs_of, helm, template
from vocelio_proxy.settings import ProxySettings

SECRETS = ["api-example-com-tls", "wildcard-example-com-tls"]


def render(*sets: str) -> list[dict[str, Any]]:
    args = ["--set", "tls.enabled=true", "--set", "tls.secrets={" + ",".join(SECRETS) + "}"]
    return docs_of(template(*args, *[a for s in sets for a in ("--set", s)]))


def one(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix))


def settings_of(docs: list[dict[str, Any]]) -> ProxySettings:
    data = yaml.safe_load(one(docs, "ConfigMap", "proxy-settings")["data"]["settings.yaml"])
    return ProxySettings(**data)


def test_the_volume_source_mounts_each_secret_and_the_settings_load() -> None:
    docs = render("tls.redirect.enabled=true", "service.type=LoadBalancer", "tls.nodePort=30443")
    settings = settings_of(docs)
    assert settings.tls.enabled
    assert settings.tls.source == "files"
    assert [(c.name, str(c.dir)) for c in settings.tls.certificates] == [
        (s, f"/etc/vocelio/tls/{s}") for s in SECRETS]
    assert settings.tls.redirect.enabled
    pod = one(docs, "Deployment", "proxy")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in container["ports"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for secret in SECRETS:
        volume = volumes[mounts[f"/etc/vocelio/tls/{secret}"]]
        assert volume["secret"]["secretName"] == secret
        assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}
    service = one(docs, "Service", "proxy")
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert https == {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP", "nodePort": 30443}
    assert not [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("proxy-tls")]
    # Private keys only ever in Secrets: no ConfigMap holds PEM material.
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        assert "PRIVATE KEY" not in yaml.safe_dump(cm)


def test_the_api_source_reads_only_the_named_secrets_through_a_role() -> None:
    docs = render("tls.source=api", "proxy.configSource=volume", "networkPolicy.enabled=true")
    settings = settings_of(docs)
    assert [c.secret for c in settings.tls.certificates] == [f"vg/{s}" for s in SECRETS]
    role = one(docs, "Role", "proxy-tls")
    assert role["metadata"]["namespace"] == "vg"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": SECRETS,
                              "verbs": ["get", "list", "watch"]}]
    binding = one(docs, "RoleBinding", "proxy-tls")
    assert binding["subjects"][0]["name"].endswith("proxy")
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            for rule in doc["rules"]:
                assert "secrets" not in rule.get("resources", []) or "proxy" not in doc["metadata"]["name"]
    pod = one(docs, "Deployment", "proxy")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert not [v for v in pod["volumes"] if "secret" in v and v["secret"]["secretName"] in SECRETS]
    policy = one(docs, "NetworkPolicy", "proxy")
    assert {"port": "https"} in policy["spec"]["ingress"][0]["ports"]


def test_without_tls_nothing_changes() -> None:
    docs = docs_of(template())
    service = one(docs, "Service", "proxy")
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert not settings_of(docs).tls.enabled


@pytest.mark.parametrize(("setting", "message"), [
    ("tls.enabled=true", "minItems"),
    ("tls.source=files", "tls/source"),
    ("tls.minVersion=TLSv1.1", "tls/minVersion"),
    ("tls.hsts.preload=true", "includeSubDomains"),
])
def test_the_schema_refuses_tls_values_that_cannot_work(setting: str, message: str) -> None:
    sets = ["--set", setting]
    if setting == "tls.hsts.preload=true":
        sets += ["--set", "tls.hsts.includeSubDomains=false"]
    result = helm("template", "vg", str(CHART), "--set", "image.tag=0.1.0", *sets, check=False)
    assert result.returncode != 0
    assert message in result.stderr

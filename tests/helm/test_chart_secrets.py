"""Secrets stay secrets and the operator reads them only where keys may live:
the chart takes Secret names, never credentials (a plain credential in values
fails the render), the proxy reads what the chart mounts, the rendered and the
installed release carry no credential, and the operator's ServiceAccount can
read Secrets in the release namespace and `tenancy.apiKeys.namespaces` only,
which is enough to publish an allowed tenant's key (docs/multi-tenancy.md)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import Kube, KubeError
from tests.harness.stack import BIN, http_json, install_crds, poll, start_process
from tests.helm.test_chart import CHART, ENVIRONMENTS, helm, render, service_account_kubeconfig
from vocelio_contract.apikeys import mint_key, secret_manifest
from vocelio_proxy.settings import ProxySettings

#: Credentials made up per run: whatever the chart renders must never contain them.
HMAC_SECRET = f"hmac-{secrets.token_hex(16)}"
REDIS_PASSWORD = f"redis-{secrets.token_hex(16)}"
ISSUER = "https://auth.tenancy.test"
CREDENTIAL_VALUES = [
    "--set", f"proxy.auth.issuers[0].issuer={ISSUER}", "--set", "proxy.auth.issuers[0].algorithms={HS256}",
    "--set", f"credentials.jwtIssuerSecrets[0].issuer={ISSUER}",
    "--set", "credentials.jwtIssuerSecrets[0].secretName=gw-jwt-hmac",
    "--set", "credentials.jwtIssuerSecrets[0].secretKey=hmac",
    "--set", "credentials.redisPassword.secretName=gw-redis", "--set", "credentials.redisPassword.secretKey=password",
    "--set", "redis.url=redis://redis.vocelio.svc:6379/0",
]


def settings_yaml(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("proxy-settings"))
    return dict(yaml.safe_load(cm["data"]["settings.yaml"]))


def proxy_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-proxy"))
    return dict(dep["spec"]["template"]["spec"])


@pytest.mark.parametrize(("setting", "message"), [
    (f"proxy.auth.issuers[0].secret={HMAC_SECRET}", "plain `secret`"),
    (f"proxy.auth.issuers[0].secret_file=/{HMAC_SECRET}", "credentials.jwtIssuerSecrets"),
    (f"redis.url=redis://:{REDIS_PASSWORD}@redis:6379/0", "redis.url carries credentials"),
    (f"redis.url=redis://default:{REDIS_PASSWORD}@redis:6379/0", "redis.url carries credentials"),
])
def test_a_credential_in_values_fails_the_render_without_echoing_it(setting: str, message: str) -> None:
    result = helm("template", "vg", str(CHART), "--set", "image.tag=0.1.0",
                  "--set", f"proxy.auth.issuers[0].issuer={ISSUER}", "--set", setting, check=False)
    assert result.returncode != 0, result.stderr
    assert message in result.stderr, result.stderr
    assert HMAC_SECRET not in result.stdout + result.stderr
    assert REDIS_PASSWORD not in result.stdout + result.stderr


def test_an_issuer_secret_for_an_unknown_issuer_is_refused() -> None:
    result = helm("template", "vg", str(CHART), "--set", "image.tag=0.1.0",
                  "--set", "credentials.jwtIssuerSecrets[0].issuer=https://nobody",
                  "--set", "credentials.jwtIssuerSecrets[0].secretName=x",
                  "--set", "credentials.jwtIssuerSecrets[0].secretKey=k", check=False)
    assert result.returncode != 0
    assert "is not in proxy.auth.issuers" in result.stderr


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_credentials_reach_the_proxy_only_through_secrets(env: str) -> None:
    docs = render(env, *CREDENTIAL_VALUES)
    issuer = settings_yaml(docs)["auth"]["issuers"][0]
    assert "secret" not in issuer
    assert issuer["secret_file"] == "/etc/vocelio/credentials/jwt-0/hmac"
    pod = proxy_pod(docs)
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/vocelio/credentials/jwt-0")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "gw-jwt-hmac"
    assert volume["secret"]["items"] == [
        {"key": "hmac", "path": "hmac"}]
    env_vars = {e["name"]: e for e in container["env"]}
    assert env_vars["VOCELIO_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "gw-redis", "key": "password"}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert "password" not in json.dumps(doc.get("data") or {}).lower(), doc["metadata"]["name"]
    # Every env value in the release is free of credentials: any URL with a user part is a Secret reference.
    for doc in docs:
        for spec in _pod_specs(doc):
            for c in spec["containers"]:
                for e in c.get("env") or []:
                    assert "@" not in str(e.get("value", "")), (doc["metadata"]["name"], e["name"])


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        return [doc["spec"]["template"]["spec"]]
    return []


def test_the_proxy_reads_the_issuer_secret_and_the_redis_password_the_chart_mounts(tmp_path: Path) -> None:
    settings = settings_yaml(render("production", *CREDENTIAL_VALUES))
    # Stand in for the kubelet: the Secret's key at the path the chart mounts it.
    mounted = tmp_path / "jwt-0" / "hmac"
    mounted.parent.mkdir()
    mounted.write_text(HMAC_SECRET + "\n")
    settings["auth"]["issuers"][0]["secret_file"] = str(mounted)
    loaded = ProxySettings(**settings, redis_password=REDIS_PASSWORD)
    assert loaded.auth.issuers[0].secret == HMAC_SECRET
    assert loaded.redis_password == REDIS_PASSWORD
    assert HMAC_SECRET not in repr(loaded)
    assert REDIS_PASSWORD not in repr(loaded)


def test_the_operator_gets_the_tenancy_policy_and_production_restricts_claims() -> None:
    def tenancy(env: str) -> dict[str, Any]:
        docs = render(env)
        dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))
        env_vars = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        return dict(json.loads(env_vars["VOCELIO_OPERATOR_TENANCY"]))

    from vocelio_operator.translation.tenancy.policy import TenancySettings

    prod, dev = TenancySettings(**tenancy("production")), TenancySettings(**tenancy("development"))
    assert prod.prefix_claims.restricted
    assert not prod.static_endpoints.enabled
    assert not dev.prefix_claims.restricted
    assert dev.static_endpoints.enabled
    assert "169.254.169.254/32" in prod.static_endpoints.deny_cidrs


def test_secrets_are_readable_only_through_namespaced_roles() -> None:
    docs = render("production", "--set", "tenancy.apiKeys.namespaces={team-a,team-b}")
    cluster_rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
    assert not any("secrets" in r["resources"] for r in cluster_rules)
    key_roles = {d["metadata"]["namespace"] for d in docs if d["kind"] == "Role"
                 and any("secrets" in r["resources"] and "list" in r["verbs"] for r in d["rules"])}
    assert key_roles == {"vg", "team-a", "team-b"}


RELEASE_NS, TENANT, OTHER = "vg-sec", "sec-tenant", "sec-other"
RELEASE = "gw-sec"
PREFIX = f"{RELEASE}-vocelio-gateway"
SA = f"system:serviceaccount:{RELEASE_NS}:{PREFIX}-operator"
TENANCY = {"apiKeys": {"namespaces": [TENANT],
                       "allowances": [{"namespaces": [TENANT], "tenants": ["sec"], "roles": ["reader"]}]}}


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, kube: Kube) -> Iterator[str]:
    install_crds(control_plane, kube)
    for ns in (RELEASE_NS, TENANT, OTHER):
        try:
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        except KubeError as exc:
            if exc.status != 409:
                raise
    for name, key, value in (("gw-jwt-hmac", "hmac", HMAC_SECRET), ("gw-redis", "password", REDIS_PASSWORD)):
        kube.create(f"/api/v1/namespaces/{RELEASE_NS}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode()}})
    helm("install", RELEASE, str(CHART), "-n", RELEASE_NS, "-f", str(CHART / "values-production.yaml"),
         "--set", "image.tag=0.1.0", "--set", f"tenancy.apiKeys.namespaces={{{TENANT}}}", *CREDENTIAL_VALUES,
         cp=control_plane)
    try:
        yield RELEASE_NS
    finally:
        helm("uninstall", RELEASE, "-n", RELEASE_NS, cp=control_plane, check=False)
        for ns in (TENANT, OTHER, RELEASE_NS):
            kube.delete(f"/api/v1/namespaces/{ns}")


def can_i(cp: ControlPlane, *args: str) -> str:
    return cp.kubectl("auth", "can-i", *args, f"--as={SA}", check=False).stdout.strip()


def test_the_operator_cannot_read_secrets_outside_the_allowed_namespaces(control_plane: ControlPlane,
                                                                          release: str) -> None:
    for verb in ("get", "list", "watch"):
        assert can_i(control_plane, verb, "secrets", "-n", RELEASE_NS) == "yes"
        assert can_i(control_plane, verb, "secrets", "-n", TENANT) == "yes"
        assert can_i(control_plane, verb, "secrets", "-n", OTHER) == "no"
        assert can_i(control_plane, verb, "secrets", "-n", "kube-system") == "no"
        assert can_i(control_plane, verb, "secrets", "--all-namespaces") == "no"
    assert can_i(control_plane, "list", "referencegrants.gateway.networking.k8s.io", "--all-namespaces") == "yes"
    assert can_i(control_plane, "create", "secrets", "-n", TENANT) == "no"


def test_the_installed_release_holds_no_credential(control_plane: ControlPlane, release: str) -> None:
    manifest = helm("get", "manifest", RELEASE, "-n", RELEASE_NS, cp=control_plane).stdout
    values = helm("get", "values", RELEASE, "-n", RELEASE_NS, "--all", cp=control_plane).stdout
    configmaps = control_plane.kubectl("get", "configmaps", "-n", RELEASE_NS, "-o", "yaml").stdout
    for text in (manifest, values, configmaps):
        assert HMAC_SECRET not in text
        assert REDIS_PASSWORD not in text
    assert "gw-jwt-hmac" in manifest
    assert "gw-redis" in manifest


def test_the_operator_publishes_an_allowed_tenant_key_with_only_the_releases_rbac(
        control_plane: ControlPlane, kube: Kube, release: str, tmp_path: Path) -> None:
    kubeconfig = service_account_kubeconfig(control_plane, RELEASE_NS, f"{PREFIX}-operator", tmp_path / "sa.kubeconfig")
    _, allowed = mint_key(name="tenant", tenant="sec", roles=["reader"])
    _, elsewhere = mint_key(name="elsewhere", tenant="sec", roles=["reader"])
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest(allowed, TENANT)))
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest(elsewhere, OTHER)))
    liveness = free_port()
    proc = start_process(control_plane, "operator-helm-secrets", [
        str(BIN / "vocelio-gateway"), "operator", "--config-namespace", RELEASE_NS, "--config-name",
        f"{PREFIX}-config", "--liveness-port", str(liveness), "--metrics-port", "0"],
        env={"KUBECONFIG": str(kubeconfig), "VOCELIO_OPERATOR_API_KEYS_SECRET": f"{PREFIX}-api-keys",
             "VOCELIO_OPERATOR_PEERING": PREFIX, "VOCELIO_OPERATOR_TENANCY": json.dumps(TENANCY)})
    try:
        def published() -> set[str]:
            secret = kube.get(f"/api/v1/namespaces/{RELEASE_NS}/secrets/{PREFIX}-api-keys")
            return {r["id"] for r in json.loads(base64.b64decode(secret["data"]["keys.json"]))}

        assert allowed.id in poll("the tenant's key published", published, 60)
        assert elsewhere.id not in published()
        assert http_json(f"http://127.0.0.1:{liveness}/healthz")[0] == 200
        log = proc.tail()
        assert "forbidden" not in log.lower(), log
        assert "cannot read API-key Secrets" not in log, log
    finally:
        proc.stop()

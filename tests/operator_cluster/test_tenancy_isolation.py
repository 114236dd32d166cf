"""Tenant isolation on the real control plane: an admin namespace (the
gateway's), two tenants and an attacker, with the operator running as its real
CLI under an admin-owned tenancy policy. Each attack (a reference into another
namespace, a prefix or host outside the namespace's rules, a backend at loopback,
link-local or metadata addresses, an API key with a tenant, role or tier the
namespace is not allowed, a key id that shadows another) is refused with its
condition and Event and leaves nothing in what the proxies read (the config
ConfigMap, the keys Secret, a proxy's routes); grants and allowances switch it
on. The tests share one stack and run in order."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import Kube, KubeError
from tests.harness.stack import BIN, Process, http_json, install_crds, poll, start_process
from vocelio_contract.apikeys import ApiKeyRecord, mint_key, secret_manifest

ADMIN, TENANT_A, TENANT_B, ATTACKER = "tn-admin", "tn-a", "tn-b", "tn-attacker"
CONFIG = "tenancy-config"
KEYS = "tenancy-api-keys"
PEERING = "vocelio-tenancy"
API = "/apis/gateway.vocelio.ai/v1alpha1"
#: Backend addresses in the fenced test range: nothing is ever connected to in this module.
BILLING_ADDRESS = "198.18.100.1"
STATIC_OK = "198.18.100.3"
HOSTILE_STATIC = ["127.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "fe80::1", "2130706433", "0.0.0.0",
                  "fd00:ec2::254", "224.0.0.1"]

POLICY: dict[str, Any] = {
    "staticEndpoints": {"enabled": True},
    "prefixClaims": {"restricted": True, "rules": [
        {"namespaces": [TENANT_A], "prefixes": ["/api/v1/team-a"]},
        {"namespaces": [TENANT_B], "prefixes": ["/api/v1/team-b"]},
        {"namespaces": [ATTACKER], "prefixes": ["/api/v1/attacker"]},
        {"namespaces": [TENANT_A], "hosts": ["*.team-a.example.com"], "prefixes": ["/"]}]},
    "apiKeys": {"namespaces": [TENANT_A, TENANT_B, ATTACKER], "allowances": [
        {"namespaces": [TENANT_A], "tenants": ["team-a"], "roles": ["reader"], "tiers": ["api-key"]},
        {"namespaces": [TENANT_B], "tenants": ["team-b"], "roles": ["reader"], "tiers": ["api-key"]}]},
}


@dataclass
class Tenancy:
    cp: ControlPlane
    kube: Kube
    operator: Process
    proxy: str
    procs: list[Process] = field(default_factory=list)
    keys: dict[str, ApiKeyRecord] = field(default_factory=dict)

    def config_text(self) -> str:
        cm = self.kube.get(f"/api/v1/namespaces/{ADMIN}/configmaps/{CONFIG}")
        return str(cm["data"]["gateway.json"])

    def service(self, name: str) -> dict[str, Any] | None:
        for svc in json.loads(self.config_text())["services"]:
            if svc["name"] == name:
                return dict(svc)
        return None

    def vsvc(self, ns: str, name: str) -> dict[str, Any]:
        return dict(self.kube.get(f"{API}/namespaces/{ns}/vocelioservices/{name}"))

    def published_key_ids(self) -> set[str]:
        secret = self.kube.get(f"/api/v1/namespaces/{ADMIN}/secrets/{KEYS}")
        return {r["id"] for r in json.loads(base64.b64decode(secret["data"]["keys.json"]))}

    def proxy_view(self) -> dict[str, list[str]] | None:
        """Service name -> endpoint addresses as the proxy serves them, once it runs the current config."""
        cm = self.kube.get(f"/api/v1/namespaces/{ADMIN}/configmaps/{CONFIG}")
        status, body = http_json(f"{self.proxy}/status")
        if status != 200 or body["config"]["hash"] != cm["metadata"]["annotations"]["gateway.vocelio.ai/config-hash"]:
            return None
        return {s["name"]: [e["address"] for e in s["endpoints"]] for s in body["services"]}

    def apply(self, text: str) -> None:
        self.cp.kubectl("apply", "-f", "-", input=text)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def events(kube: Kube, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    listed = kube.get(f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name={name}")["items"]
    return [e for e in listed if e["reason"] == reason]


def vocelio_service(ns: str, name: str, prefix: str, backend: str) -> str:
    return f"""apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  pathPrefix: {prefix}
  healthCheck: {{enabled: false}}
  backends: [{backend}]
"""


def selectorless_service(ns: str, name: str, address: str) -> str:
    """A Service without selector and the EndpointSlice the test writes for it."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
{manual_slice(ns, name, address)}"""


def manual_slice(ns: str, name: str, address: str) -> str:
    """An EndpointSlice as a tenant with EndpointSlice rights could write it (no Service needed)."""
    family = "IPv6" if ":" in address else "IPv4"
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-manual
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: {family}
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints: [{{addresses: ["{address}"], conditions: {{ready: true}}}}]
"""


def start_tenancy_operator(cp: ControlPlane, name: str, policy: dict[str, Any]) -> Process:
    """Cluster-wide, as the chart's default; its peering name and config are this module's own."""
    liveness = free_port()
    args = [str(BIN / "vocelio-gateway"), "operator", "--config-namespace", ADMIN, "--config-name", CONFIG,
            "--liveness-port", str(liveness), "--metrics-port", "0"]
    proc = start_process(cp, name, args, env={"VOCELIO_OPERATOR_TENANCY": json.dumps(policy),
                                               "VOCELIO_OPERATOR_PEERING": PEERING,
                                               "VOCELIO_OPERATOR_API_KEYS_SECRET": KEYS,
                                               "VOCELIO_OPERATOR_COALESCE_S": "0.05"})
    poll("operator liveness", lambda: http_json(f"http://127.0.0.1:{liveness}/healthz")[0] == 200, 60)
    return proc


@pytest.fixture(scope="module")
def tenancy(control_plane: ControlPlane, kube: Kube) -> Iterator[Tenancy]:
    install_crds(control_plane, kube)
    for ns in (ADMIN, TENANT_A, TENANT_B, ATTACKER):
        try:
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        except KubeError as exc:
            if exc.status != 409:
                raise
    control_plane.kubectl("apply", "-f", "-", input=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\n"
                                                    f"metadata: {{name: {PEERING}}}\n")
    control_plane.kubectl("apply", "-f", "-", input=selectorless_service(TENANT_A, "billing", BILLING_ADDRESS))
    operator = start_tenancy_operator(control_plane, "operator-tenancy", POLICY)
    port = free_port()
    proxy = start_process(control_plane, "proxy-tenancy", [
        str(BIN / "vocelio-proxy"), "serve", "--host", "127.0.0.1", "--port", str(port),
        "--config-from-api", f"{ADMIN}/{CONFIG}"], env={"VOCELIO_CONFIG_POLL_S": "0.1"})
    state = Tenancy(control_plane, kube, operator, f"http://127.0.0.1:{port}", [operator, proxy])
    try:
        yield state
    finally:
        for proc in reversed(state.procs):
            proc.stop()
        for ns in (TENANT_A, TENANT_B, ATTACKER, ADMIN):
            kube.delete(f"/api/v1/namespaces/{ns}")


def test_a_reference_into_another_namespace_without_a_grant_is_not_rendered(tenancy: Tenancy) -> None:
    backend = f"{{serviceRef: {{name: billing, namespace: {TENANT_A}, port: http}}}}"
    tenancy.apply(vocelio_service(TENANT_B, "b-reads-billing", "/api/v1/team-b/billing", backend))
    tenancy.apply(vocelio_service(ATTACKER, "steal-billing", "/api/v1/attacker/billing", backend))

    def refused() -> dict[str, Any] | None:
        cond = condition(tenancy.vsvc(TENANT_B, "b-reads-billing"), "ResolvedRefs")
        return cond if cond.get("reason") == "RefNotPermitted" else None

    cond = poll("ResolvedRefs=False RefNotPermitted", refused)
    assert cond["status"] == "False"
    assert f"ReferenceGrant in {TENANT_A}" in cond["message"]
    poll("a RefNotPermitted Event", lambda: events(tenancy.kube, TENANT_B, "b-reads-billing", "RefNotPermitted"))
    # The service is routed (its prefix is the namespace's) but carries nothing of tn-a.
    svc = poll("the service in the config", lambda: tenancy.service("b-reads-billing"))
    assert svc["backends"][0]["endpoints"] == []
    assert BILLING_ADDRESS not in tenancy.config_text()
    view = poll("the proxy runs the config", tenancy.proxy_view)
    assert view["b-reads-billing"] == []
    assert view["steal-billing"] == []


def test_a_grant_switches_the_reference_on_and_removing_it_takes_the_endpoints_away(tenancy: Tenancy) -> None:
    grant = f"""apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: billing-for-team-b, namespace: {TENANT_A}}}
spec:
  from: [{{group: gateway.vocelio.ai, kind: VocelioService, namespace: {TENANT_B}}}]
  to: [{{group: "", kind: Service, name: billing}}]
"""
    tenancy.apply(grant)

    def granted() -> list[str]:
        svc = tenancy.service("b-reads-billing") or {"backends": [{"endpoints": []}]}
        return [e["address"] for e in svc["backends"][0]["endpoints"]]

    assert poll("tn-a's endpoint rendered for tn-b", granted) == [BILLING_ADDRESS]
    poll("ResolvedRefs=True", lambda: condition(tenancy.vsvc(TENANT_B, "b-reads-billing"),
                                                "ResolvedRefs").get("status") == "True")
    # The grant names tn-b: the attacker's identical reference stays refused.
    assert condition(tenancy.vsvc(ATTACKER, "steal-billing"), "ResolvedRefs")["reason"] == "RefNotPermitted"
    assert tenancy.service("steal-billing")["backends"][0]["endpoints"] == []  # type: ignore[index]
    view = poll("the proxy runs the config", tenancy.proxy_view)
    assert view["b-reads-billing"] == [BILLING_ADDRESS]
    assert view["steal-billing"] == []
    tenancy.cp.kubectl("delete", "referencegrant", "billing-for-team-b", "-n", TENANT_A)
    poll("endpoints gone once the grant is", lambda: BILLING_ADDRESS not in tenancy.config_text(), 30)
    poll("RefNotPermitted again", lambda: condition(tenancy.vsvc(TENANT_B, "b-reads-billing"),
                                                    "ResolvedRefs").get("reason") == "RefNotPermitted")


def test_a_grant_names_one_service_and_one_referring_namespace(tenancy: Tenancy) -> None:
    tenancy.apply(selectorless_service(TENANT_A, "ledger", "198.18.100.4"))
    tenancy.apply(vocelio_service(TENANT_B, "b-reads-ledger", "/api/v1/team-b/ledger",
                                  f"{{serviceRef: {{name: ledger, namespace: {TENANT_A}, port: http}}}}"))
    tenancy.apply(f"""apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: ledger-for-team-b, namespace: {TENANT_A}}}
spec:
  from: [{{group: gateway.vocelio.ai, kind: VocelioService, namespace: {TENANT_B}}}]
  to: [{{group: "", kind: Service, name: ledger}}]
""")
    # Once the ledger grant shows, the operator has seen it: billing, not named, stays out.
    poll("ledger granted", lambda: "198.18.100.4" in tenancy.config_text())
    assert BILLING_ADDRESS not in tenancy.config_text()
    assert condition(tenancy.vsvc(TENANT_B, "b-reads-billing"), "ResolvedRefs")["reason"] == "RefNotPermitted"
    assert condition(tenancy.vsvc(ATTACKER, "steal-billing"), "ResolvedRefs")["reason"] == "RefNotPermitted"


def test_a_prefix_outside_the_namespaces_rules_is_not_accepted_and_blocks_nobody(tenancy: Tenancy) -> None:
    static = f'{{staticEndpoints: [{{address: "{STATIC_OK}", port: 8080}}]}}'
    # The attacker comes first: first come, first served would hand it tn-a's prefix.
    tenancy.apply(vocelio_service(ATTACKER, "squat", "/api/v1/team-a/reports", static))

    def not_allowed() -> dict[str, Any] | None:
        cond = condition(tenancy.vsvc(ATTACKER, "squat"), "Accepted")
        return cond if cond.get("reason") == "PrefixNotAllowed" else None

    cond = poll("Accepted=False PrefixNotAllowed", not_allowed)
    assert cond["status"] == "False"
    assert "/api/v1/team-a/reports" in cond["message"]
    poll("a PrefixNotAllowed Event", lambda: events(tenancy.kube, ATTACKER, "squat", "PrefixNotAllowed"))
    older = tenancy.vsvc(ATTACKER, "squat")["metadata"]["creationTimestamp"]
    poll("a later creation second", lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > older, 5)
    tenancy.apply(vocelio_service(TENANT_A, "reports", "/api/v1/team-a/reports", static))
    poll("the owner's route is accepted", lambda: condition(tenancy.vsvc(TENANT_A, "reports"),
                                                            "Accepted").get("status") == "True")
    assert tenancy.service("squat") is None
    owner = tenancy.service("reports")
    assert owner is not None
    assert owner["namespace"] == TENANT_A
    # A prefix of another namespace's rule, and one outside every rule, alike.
    tenancy.apply(vocelio_service(TENANT_B, "b-into-a", "/API/V1/Team-A/x", static))
    poll("case-folded spelling refused", lambda: condition(tenancy.vsvc(TENANT_B, "b-into-a"),
                                                           "Accepted").get("reason") == "PrefixNotAllowed")
    assert tenancy.service("b-into-a") is None
    # What the proxy serves: the owner's route, never the refused claims.
    view = poll("the proxy runs the config", lambda: (v := tenancy.proxy_view()) and "reports" in v and v)
    assert "squat" not in view
    assert "b-into-a" not in view
    assert http_json(f"{tenancy.proxy}/API/V1/Team-A/x")[0] in (400, 404)


def test_a_host_outside_the_namespaces_rules_is_not_accepted_and_blocks_nobody(tenancy: Tenancy) -> None:
    static = f'{{staticEndpoints: [{{address: "{STATIC_OK}", port: 8080}}]}}'
    hosted = vocelio_service(ATTACKER, "host-squat", "/", static) + "  hostnames: [app.team-a.example.com]\n"
    tenancy.apply(hosted)

    def not_allowed() -> dict[str, Any] | None:
        cond = condition(tenancy.vsvc(ATTACKER, "host-squat"), "Accepted")
        return cond if cond.get("reason") == "HostNotAllowed" else None

    cond = poll("Accepted=False HostNotAllowed", not_allowed)
    assert cond["status"] == "False"
    assert "app.team-a.example.com" in cond["message"]
    poll("a HostNotAllowed Event", lambda: events(tenancy.kube, ATTACKER, "host-squat", "HostNotAllowed"))
    older = tenancy.vsvc(ATTACKER, "host-squat")["metadata"]["creationTimestamp"]
    poll("a later creation second", lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > older, 5)
    tenancy.apply(vocelio_service(TENANT_A, "app", "/", static) + "  hostnames: [app.team-a.example.com]\n")
    poll("the owner's host is accepted", lambda: condition(tenancy.vsvc(TENANT_A, "app"),
                                                           "Accepted").get("status") == "True")
    assert tenancy.service("host-squat") is None
    owner = tenancy.service("app")
    assert owner is not None
    assert owner["hosts"] == ["app.team-a.example.com"]
    view = poll("the proxy runs the config", lambda: (v := tenancy.proxy_view()) and "app" in v and v)
    assert "host-squat" not in view
    status, body = http_json(f"{tenancy.proxy}/status")
    assert status == 200
    assert {s["name"]: s["hosts"] for s in body["services"]}["app"] == ["app.team-a.example.com"]


def test_backend_addresses_at_loopback_link_local_and_metadata_are_refused(tenancy: Tenancy) -> None:
    endpoints = ", ".join(f'{{address: "{a}", port: 8080}}' for a in [*HOSTILE_STATIC, STATIC_OK])
    tenancy.apply(vocelio_service(TENANT_B, "b-static", "/api/v1/team-b/static", f"{{staticEndpoints: [{endpoints}]}}"))

    def refused() -> dict[str, Any] | None:
        cond = condition(tenancy.vsvc(TENANT_B, "b-static"), "ResolvedRefs")
        return cond if cond.get("reason") == "AddressNotAllowed" else None

    cond = poll("ResolvedRefs=False AddressNotAllowed", refused)
    assert "169.254.169.254" in cond["message"]
    assert cond["status"] == "False"
    poll("an AddressNotAllowed Event", lambda: events(tenancy.kube, TENANT_B, "b-static", "AddressNotAllowed"))
    svc = poll("the service in the config", lambda: tenancy.service("b-static"))
    assert [e["address"] for e in svc["backends"][0]["endpoints"]] == [STATIC_OK]
    # A discovered address in a denied range (the API server accepts this unique-local one).
    tenancy.apply(manual_slice(TENANT_B, "imds", "fd00:ec2::254"))
    tenancy.apply(vocelio_service(TENANT_B, "b-imds", "/api/v1/team-b/imds",
                                  "{serviceRef: {name: imds, port: http}}"))
    poll("discovered metadata address refused", lambda: condition(tenancy.vsvc(TENANT_B, "b-imds"),
                                                                  "ResolvedRefs").get("reason") == "AddressNotAllowed")
    config = json.loads(tenancy.config_text())
    addresses = {e["address"] for s in config["services"] for b in s["backends"] for e in b["endpoints"]}
    assert not addresses & {*HOSTILE_STATIC, "7f00:1", "::ffff:7f00:1"}
    view = poll("the proxy runs the config", lambda: (v := tenancy.proxy_view()) and "b-imds" in v and v)
    assert view["b-static"] == [STATIC_OK]
    assert view["b-imds"] == []


def mint_secret(tenancy: Tenancy, ns: str, label: str, **metadata: Any) -> tuple[str, ApiKeyRecord]:
    key, record = mint_key(name=label, **metadata)
    manifest = secret_manifest(record, ns)
    # JSON, not YAML: a hex key id such as 123e4567 is a number to kubectl's YAML 1.2 reader.
    tenancy.apply(json.dumps(manifest))
    tenancy.keys[label] = record
    return key, record


def test_api_keys_outside_the_namespaces_allowance_are_not_published(tenancy: Tenancy) -> None:
    _, admin = mint_secret(tenancy, ADMIN, "admin", tenant="platform", roles=["admin"], tier="premium")
    _, a_ok = mint_secret(tenancy, TENANT_A, "a-ok", tenant="team-a", roles=["reader"], tier="api-key")
    _, a_other_tenant = mint_secret(tenancy, TENANT_A, "a-other-tenant", tenant="team-b", roles=["reader"])
    _, attacker = mint_secret(tenancy, ATTACKER, "attacker-admin", tenant="team-a", roles=["admin"])
    _, b_admin_role = mint_secret(tenancy, TENANT_B, "b-admin-role", tenant="team-b", roles=["reader", "admin"])
    _, b_premium = mint_secret(tenancy, TENANT_B, "b-premium", tenant="team-b", tier="premium")
    # A copy of the admin key's id with the attacker's hash would replace the admin's key in every proxy.
    shadow = ApiKeyRecord(id=admin.id, hash="0" * 64, name="shadow", tenant="team-b", roles=["reader"])
    tenancy.apply(json.dumps(secret_manifest(shadow, TENANT_B) | {"metadata": {
        "name": "shadow", "namespace": TENANT_B, "labels": {"gateway.vocelio.ai/api-key": "true"}}}))

    poll("admin and allowed keys published", lambda: {admin.id, a_ok.id} <= tenancy.published_key_ids(), 30)
    for ns, secret, why in ((TENANT_A, f"vocelio-api-key-{a_other_tenant.id}", "tenant 'team-b' is not allowed"),
                            (ATTACKER, f"vocelio-api-key-{attacker.id}", "has no API-key allowance"),
                            (TENANT_B, f"vocelio-api-key-{b_admin_role.id}", "role 'admin' is not allowed"),
                            (TENANT_B, f"vocelio-api-key-{b_premium.id}", "tier 'premium' is not allowed"),
                            (TENANT_B, "shadow", "already publishes that key id")):
        found = poll(f"an Event on {ns}/{secret}", lambda n=ns, s=secret: events(tenancy.kube, n, s,
                                                                                   "ApiKeyNotAllowed"))
        message = found[0]["message"]
        assert why in message, message
        assert found[0]["type"] == "Warning"
        assert found[0]["involvedObject"]["kind"] == "Secret"
    published = tenancy.published_key_ids()
    assert not published & {a_other_tenant.id, attacker.id, b_admin_role.id, b_premium.id}
    secret = tenancy.kube.get(f"/api/v1/namespaces/{ADMIN}/secrets/{KEYS}")
    records = json.loads(base64.b64decode(secret["data"]["keys.json"]))
    assert [r["hash"] for r in records if r["id"] == admin.id] == [admin.hash]
    # Event messages never carry a key's hash.
    texts = json.dumps([tenancy.kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
                        for ns in (TENANT_A, TENANT_B, ATTACKER)])
    assert not any(r.hash in texts for r in tenancy.keys.values())



def test_deleting_or_unlabelling_a_key_secret_unpublishes_its_key(tenancy: Tenancy) -> None:
    a_ok = tenancy.keys["a-ok"]
    # A big labelled Secret (past aiohttp's 128 KiB line limit) first: the watch must not stall on it.
    _, big = mint_key(name="big", tenant="team-a")
    manifest = secret_manifest(big, TENANT_A)
    manifest["stringData"]["padding"] = "x" * 600_000
    tenancy.cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    _, relabelled = mint_secret(tenancy, TENANT_A, "a-relabel", tenant="team-a", roles=["reader"])
    poll("tenant keys published", lambda: {a_ok.id, relabelled.id, big.id} <= tenancy.published_key_ids())
    assert "API-key Secret watch failed" not in tenancy.operator.log.read_text()  # no relist needed
    tenancy.cp.kubectl("delete", "secret", f"vocelio-api-key-{a_ok.id}", "-n", TENANT_A)
    tenancy.cp.kubectl("label", "secret", f"vocelio-api-key-{relabelled.id}", "-n", TENANT_A,
                       "gateway.vocelio.ai/api-key-")
    poll("both keys unpublished", lambda: not {a_ok.id, relabelled.id} & tenancy.published_key_ids())
    assert tenancy.keys["admin"].id in tenancy.published_key_ids()


def test_restarted_with_defaults_static_endpoints_are_off_and_new_allowances_switch_on(tenancy: Tenancy) -> None:
    tenancy.operator.stop()
    policy = json.loads(json.dumps(POLICY))
    del policy["staticEndpoints"]
    policy["prefixClaims"]["rules"].append({"namespaces": [ATTACKER], "prefixes": ["/api/v1/partner"]})
    policy["apiKeys"]["allowances"].append({"namespaces": [ATTACKER], "tenants": ["partner"], "roles": ["*"]})
    operator = start_tenancy_operator(tenancy.cp, "operator-tenancy-2", policy)
    tenancy.procs.append(operator)
    tenancy.operator = operator
    poll("static endpoints off", lambda: condition(tenancy.vsvc(TENANT_B, "b-static"),
                                                   "ResolvedRefs").get("reason") == "StaticEndpointsDisabled", 60)
    assert STATIC_OK not in tenancy.config_text()
    poll("a StaticEndpointsDisabled Event", lambda: events(tenancy.kube, TENANT_B, "b-static",
                                                           "StaticEndpointsDisabled"))
    tenancy.apply(vocelio_service(ATTACKER, "partner", "/api/v1/partner/hooks",
                                  "{serviceRef: {name: hooks, port: http}}"))
    poll("the partner prefix accepted", lambda: condition(tenancy.vsvc(ATTACKER, "partner"),
                                                          "Accepted").get("status") == "True")
    _, partner = mint_secret(tenancy, ATTACKER, "partner", tenant="partner", roles=["writer", "reader"])
    poll("the partner key published", lambda: partner.id in tenancy.published_key_ids())
    assert tenancy.keys["attacker-admin"].id not in tenancy.published_key_ids()

"""Red-team attacks on tenant isolation on the real control plane: an attacker
with namespaced rights plants objects the operator must read (a VocelioService
whose port is a Unicode digit, an API-key Secret whose bytes are not text)
before the operator starts, and a victim tenant must still be served: its route
in the config ConfigMap and its key in the keys Secret, with the attacker's
objects refused by a condition or an Event that quotes no credential. Before
the fix either object stopped every render (the port crashed the renderer; the
Secret wedged its namespace's listing, which the first render waits for; a key
with a 600 kB name, twice, made the keys Secret too big to write, and it is written
before the config). The
attacker's RateTiers (one with the platform's tier name, one with a higher
priority for everybody) are not enforced: tiers apply gateway-wide."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import Kube, KubeError
from tests.harness.stack import BIN, Process, http_json, install_crds, poll, start_process
from tests.operator_cluster.test_tenancy_isolation import condition, events, selectorless_service, vocelio_service
from vocelio_contract.apikeys import mint_key, secret_manifest

# The platform's namespace sorts after the attacker's: a tier name goes to the first namespace in order.
ADMIN, VICTIM, ATTACKER = "rt-platform", "rt-victim", "rt-attacker"
CONFIG = "tenancy-config"
KEYS = "tenancy-api-keys"
PEERING = "vocelio-redteam"
API = "/apis/gateway.vocelio.ai/v1alpha1"
GATEWAY_POD = "198.18.101.9"  # an endpoint of a Service in the gateway's namespace (fenced test range)
POLICY: dict[str, Any] = {
    "staticEndpoints": {"enabled": True},
    "apiKeys": {"namespaces": [VICTIM, ATTACKER], "allowances": [
        {"namespaces": [VICTIM, ATTACKER], "tenants": ["*"], "roles": ["*"], "tiers": ["*"]}]},
}
LOOKALIKE_ID = "0123456789ab"
HASH_LOOKALIKE = "ABCDEF0123456789" * 4  # a "hash" the record pattern refuses (upper case)


@pytest.fixture(scope="module")
def planted(control_plane: ControlPlane, kube: Kube) -> Iterator[tuple[ControlPlane, Kube, Process, str]]:
    install_crds(control_plane, kube)
    for ns in (ADMIN, VICTIM, ATTACKER):
        try:
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        except KubeError as exc:
            if exc.status != 409:
                raise

    def apply(text: str) -> None:
        control_plane.kubectl("apply", "-f", "-", input=text)

    # The attacker's own Service with an endpoint, referenced by a port the API server accepts
    # (int-or-string) and Python's int() does not: "²" is a digit to str.isdigit().
    apply(selectorless_service(ATTACKER, "web", "198.18.101.2"))
    apply(vocelio_service(ATTACKER, "superscript", "/attacker", '{serviceRef: {name: web, port: "²"}}'))
    # Binary data under a key Secret's label, and a key whose "hash" is a lookalike.
    apply(json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "binary", "namespace": ATTACKER, "labels": {"gateway.vocelio.ai/api-key": "true"}},
        "data": {"id": base64.b64encode(b"\xff\xfe\xfd\xfc").decode()}}))
    _, lookalike = mint_key(name="lookalike")
    lookalike = lookalike.model_copy(update={"id": LOOKALIKE_ID})
    manifest = secret_manifest(lookalike, ATTACKER)
    manifest["stringData"]["hash"] = HASH_LOOKALIKE
    apply(json.dumps(manifest))
    # The platform's tier, and the attacker's copy of its name (its namespace sorts first) plus a
    # tier with a higher priority for everyone.
    apply(rate_tier(ADMIN, "anonymous", 100, 0, "{anonymous: true}"))
    apply(rate_tier(ATTACKER, "anonymous", 1000000, 0, "{anonymous: true}"))
    apply(rate_tier(ATTACKER, "everyone", 1, 1000, "{authenticated: true}"))
    # Two keys whose names (600 kB each) would push the proxies' keys Secret past the API server's
    # 1 MiB, so its write, which comes before the config's, would fail on every pass.
    for _ in range(2):
        _, huge = mint_key(name="huge")
        manifest = secret_manifest(huge, ATTACKER)
        manifest["stringData"]["name"] = "n" * 600_000
        control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    # A Service of the gateway's namespace, and the attacker pointing at its endpoint twice: as a
    # static endpoint, and through a Service and EndpointSlice of its own.
    apply(selectorless_service(ADMIN, "vocelio-proxy", GATEWAY_POD))
    apply(selectorless_service(ATTACKER, "internals", GATEWAY_POD))
    apply(vocelio_service(ATTACKER, "internals", "/attacker/internals", "{serviceRef: {name: internals, port: http}}"))
    apply(vocelio_service(ATTACKER, "internals-static", "/attacker/internals-static",
                          f'{{staticEndpoints: [{{address: "{GATEWAY_POD}", port: 8080}}]}}'))
    # The victim: a route and a key.
    apply(selectorless_service(VICTIM, "web", "198.18.101.1"))
    apply(vocelio_service(VICTIM, "web", "/victim", "{serviceRef: {name: web, port: http}}"))
    _, victim_key = mint_key(name="victim", tenant="victim")
    apply(json.dumps(secret_manifest(victim_key, VICTIM)))
    operator = _start(control_plane, POLICY)
    try:
        yield control_plane, kube, operator, victim_key.id
    finally:
        operator.stop()
        for ns in (VICTIM, ATTACKER, ADMIN):
            kube.delete(f"/api/v1/namespaces/{ns}")


def rate_tier(ns: str, name: str, requests: int, priority: int, match: str) -> str:
    return f"""apiVersion: gateway.vocelio.ai/v1alpha1
kind: RateTier
metadata: {{name: {name}, namespace: {ns}}}
spec: {{requests: {requests}, windowSeconds: 60, keyBy: ip, priority: {priority}, match: {match}}}
"""


def _start(cp: ControlPlane, policy: dict[str, Any]) -> Process:
    """The operator as its real CLI, cluster-wide, with this module's namespace and peering."""
    cp.kubectl("apply", "-f", "-", input=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\n"
                                         f"metadata: {{name: {PEERING}}}\n")
    liveness = free_port()
    args = [str(BIN / "vocelio-gateway"), "operator", "--config-namespace", ADMIN, "--config-name", CONFIG,
            "--liveness-port", str(liveness), "--metrics-port", "0"]
    proc = start_process(cp, "operator-redteam", args, env={
        "VOCELIO_OPERATOR_TENANCY": json.dumps(policy), "VOCELIO_OPERATOR_PEERING": PEERING,
        "VOCELIO_OPERATOR_API_KEYS_SECRET": KEYS, "VOCELIO_OPERATOR_COALESCE_S": "0.05"})
    poll("operator liveness", lambda: http_json(f"http://127.0.0.1:{liveness}/healthz")[0] == 200, 60)
    return proc


def config_services(kube: Kube) -> dict[str, list[str]]:
    try:
        cm = kube.get(f"/api/v1/namespaces/{ADMIN}/configmaps/{CONFIG}")
    except KubeError:
        return {}
    config = json.loads(cm["data"]["gateway.json"])
    return {f"{s['namespace']}/{s['name']}": [e["address"] for b in s["backends"] for e in b["endpoints"]]
            for s in config["services"]}


def published_ids(kube: Kube) -> set[str]:
    try:
        secret = kube.get(f"/api/v1/namespaces/{ADMIN}/secrets/{KEYS}")
    except KubeError:
        return set()
    return {r["id"] for r in json.loads(base64.b64decode(secret["data"]["keys.json"]))}


def test_planted_objects_never_stop_the_victims_route_and_key(planted: tuple[ControlPlane, Kube, Process, str]
                                                               ) -> None:
    _, kube, operator, victim_key = planted
    served = poll("the victim's route rendered", lambda: config_services(kube).get(f"{VICTIM}/web"), 60)
    assert served == ["198.18.101.1"]
    poll("the victim's key published", lambda: victim_key in published_ids(kube), 30)
    assert f"{ATTACKER}/superscript" not in config_services(kube)

    def refused() -> dict[str, Any] | None:
        cond = condition(kube.get(f"{API}/namespaces/{ATTACKER}/vocelioservices/superscript"), "Accepted")
        return cond if cond.get("reason") == "Invalid" else None

    accepted = poll("the attacker's port refused", refused)
    assert accepted["status"] == "False"
    assert "serviceRef.port" in accepted["message"], accepted
    assert "Traceback" not in operator.log.read_text()


def test_invalid_key_secrets_get_an_event_that_quotes_no_value(planted: tuple[ControlPlane, Kube, Process, str]
                                                                ) -> None:
    _, kube, _, _ = planted
    binary = poll("an InvalidApiKey Event on the binary Secret",
                  lambda: events(kube, ATTACKER, "binary", "InvalidApiKey"))
    assert "not base64-encoded UTF-8 text" in binary[0]["message"]
    lookalike = poll("an InvalidApiKey Event on the lookalike Secret", lambda: [
        e for e in kube.get(f"/api/v1/namespaces/{ATTACKER}/events")["items"]
        if e["reason"] == "InvalidApiKey" and e["involvedObject"]["name"] == f"vocelio-api-key-{LOOKALIKE_ID}"])
    message = lookalike[0]["message"]
    assert "field hash" in message
    huge = poll("InvalidApiKey Events on the huge keys", lambda: [
        e for e in kube.get(f"/api/v1/namespaces/{ATTACKER}/events")["items"]
        if e["reason"] == "InvalidApiKey" and "field name holds more than" in e["message"]] or None)
    assert all(len(e["message"]) < 200 for e in huge)
    everything = json.dumps(kube.get(f"/api/v1/namespaces/{ATTACKER}/events")["items"])
    assert HASH_LOOKALIKE[:16] not in everything
    assert HASH_LOOKALIKE[-16:] not in everything


def test_a_tenants_rate_tier_is_not_enforced_and_never_takes_the_platforms_name(
        planted: tuple[ControlPlane, Kube, Process, str]) -> None:
    _, kube, _, _ = planted

    def tiers() -> list[tuple[str, int]] | None:
        try:
            cm = kube.get(f"/api/v1/namespaces/{ADMIN}/configmaps/{CONFIG}")
        except KubeError:
            return None
        return [(t["name"], t["requests"]) for t in json.loads(cm["data"]["gateway.json"])["rate_tiers"]] or None

    assert poll("the platform's tier rendered", tiers) == [("anonymous", 100)]
    for name in ("anonymous", "everyone"):
        def refused(n: str = name) -> dict[str, Any] | None:
            cond = condition(kube.get(f"{API}/namespaces/{ATTACKER}/ratetiers/{n}"), "Accepted")
            return cond if cond.get("reason") == "TierNotAllowed" else None

        cond = poll(f"the attacker's tier {name} refused", refused)
        assert cond["status"] == "False"
        assert ADMIN in cond["message"]
        poll(f"a TierNotAllowed Event on {name}", lambda n=name: events(kube, ATTACKER, n, "TierNotAllowed"))
    assert condition(kube.get(f"{API}/namespaces/{ADMIN}/ratetiers/anonymous"), "Accepted")["status"] == "True"


def test_a_tenant_never_routes_to_an_endpoint_of_the_gateways_namespace(
        planted: tuple[ControlPlane, Kube, Process, str]) -> None:
    _, kube, _, _ = planted
    for name in ("internals", "internals-static"):
        def refused(n: str = name) -> dict[str, Any] | None:
            cond = condition(kube.get(f"{API}/namespaces/{ATTACKER}/vocelioservices/{n}"), "ResolvedRefs")
            return cond if cond.get("reason") == "AddressNotAllowed" else None

        cond = poll(f"{name}: AddressNotAllowed", refused)
        assert f"gateway's namespace {ADMIN}" in cond["message"]
        poll(f"an AddressNotAllowed Event on {name}", lambda n=name: events(kube, ATTACKER, n, "AddressNotAllowed"))
        assert config_services(kube)[f"{ATTACKER}/{name}"] == []
    assert GATEWAY_POD not in kube.get(f"/api/v1/namespaces/{ADMIN}/configmaps/{CONFIG}")["data"]["gateway.json"]

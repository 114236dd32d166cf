"""The renderer under a tenancy policy (cluster mode): refused references,
addresses and claims leave nothing of theirs in the config and say why in
status; a refused claim never blocks the prefix for its rightful owner;
standalone mode (no policy) keeps serving loopback backends. Also the
operator's tenancy settings as the chart renders them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from vocelio_operator.model.resources import DiscoveredEndpoint, VocelioServiceResource, is_service, parse_resource
from vocelio_operator.settings import OperatorSettings
from vocelio_operator.translation.rendering import render_config
from vocelio_operator.translation.tenancy.addresses import AddressPolicy
from vocelio_operator.translation.tenancy.claims import ClaimPolicy, ClaimRule
from vocelio_operator.translation.tenancy.grants import parse_grant
from vocelio_operator.translation.tenancy.policy import TenancyPolicy, TenancySettings, tenancy_policy


def service(ns: str, name: str, prefix: str, backend: dict[str, Any], created: str = "2026-01-01T00:00:00Z"
            ) -> VocelioServiceResource:
    res = parse_resource({"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
                          "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
                          "spec": {"pathPrefix": prefix, "backends": [backend]}})
    assert is_service(res)
    return res


BILLING = {("a", "billing"): [DiscoveredEndpoint("198.18.0.10", True, "p1", {"http": 8080})]}
CROSS = {"serviceRef": {"name": "billing", "namespace": "a", "port": "http"}}
GRANT = parse_grant({"metadata": {"namespace": "a", "name": "g"},
                     "spec": {"from": [{"group": "gateway.vocelio.ai", "kind": "VocelioService", "namespace": "b"}],
                              "to": [{"group": "", "kind": "Service", "name": "billing"}]}})


def test_a_cross_namespace_reference_without_a_grant_renders_no_endpoint_of_the_other_namespace() -> None:
    result = render_config([service("b", "s", "/b", CROSS)], [], BILLING, tenancy=TenancyPolicy())
    outcome = result.outcomes["VocelioService/b/s"]
    assert outcome.accepted
    assert not outcome.resolved
    assert outcome.resolved_reason == "RefNotPermitted"
    assert "198.18.0.10" not in result.config.to_json()


def test_a_grant_renders_the_endpoints_and_only_for_the_namespace_it_names() -> None:
    tenancy = TenancyPolicy(grants={"a": [GRANT]})
    result = render_config([service("b", "s", "/b", CROSS), service("c", "t", "/c", CROSS)], [], BILLING,
                           tenancy=tenancy)
    rendered = {s.namespace: [e.address for b in s.backends for e in b.endpoints] for s in result.config.services}
    assert rendered == {"b": ["198.18.0.10"], "c": []}
    assert result.outcomes["VocelioService/c/t"].resolved_reason == "RefNotPermitted"


def test_without_a_policy_cross_namespace_references_resolve_as_before() -> None:
    result = render_config([service("b", "s", "/b", CROSS)], [], BILLING)
    assert "198.18.0.10" in result.config.to_json()


def test_a_refused_claim_never_routes_and_never_blocks_the_owner() -> None:
    claims = ClaimPolicy(restricted=True, rules=(ClaimRule(("owner",), ("/api/x",)),))
    static = {"staticEndpoints": [{"address": "198.18.0.1", "port": 80}]}
    squatter = service("attacker", "squat", "/api/x", static, created="2020-01-01T00:00:00Z")
    owner = service("owner", "svc", "/api/x", static, created="2026-01-01T00:00:00Z")
    result = render_config([squatter, owner], [], {}, tenancy=TenancyPolicy(AddressPolicy(True), claims))
    assert [s.namespace for s in result.config.services] == ["owner"]
    refused = result.outcomes["VocelioService/attacker/squat"]
    assert not refused.accepted
    assert refused.accepted_reason == "PrefixNotAllowed"
    assert result.outcomes["VocelioService/owner/svc"].accepted


@pytest.mark.parametrize(("addresses", "policy", "reason"), [
    (["127.0.0.1", "198.18.0.1"], AddressPolicy(static_endpoints=True), "AddressNotAllowed"),
    (["169.254.169.254"], AddressPolicy(static_endpoints=True), "AddressNotAllowed"),
    (["198.18.0.1"], AddressPolicy(static_endpoints=False), "StaticEndpointsDisabled"),
])
def test_refused_static_endpoints_are_left_out_with_a_reason(addresses: list[str], policy: AddressPolicy,
                                                             reason: str) -> None:
    backend = {"staticEndpoints": [{"address": a, "port": 80} for a in addresses]}
    result = render_config([service("b", "s", "/b", backend)], [], {}, tenancy=TenancyPolicy(policy))
    outcome = result.outcomes["VocelioService/b/s"]
    assert outcome.resolved_reason == reason
    assert outcome.accepted
    served = [e.address for s in result.config.services for b in s.backends for e in b.endpoints]
    assert served == [a for a in addresses if a == "198.18.0.1" and policy.static_endpoints]


def test_a_discovered_address_in_a_denied_range_is_left_out() -> None:
    endpoints = {("b", "imds"): [DiscoveredEndpoint("fd00:ec2::254", True, None, {"http": 80}),
                                 DiscoveredEndpoint("198.18.0.2", True, None, {"http": 80})]}
    backend = {"serviceRef": {"name": "imds", "port": "http"}}
    result = render_config([service("b", "s", "/b", backend)], [], endpoints, tenancy=TenancyPolicy())
    assert result.outcomes["VocelioService/b/s"].resolved_reason == "AddressNotAllowed"
    assert [e.address for e in result.config.services[0].backends[0].endpoints] == ["198.18.0.2"]


def test_standalone_mode_keeps_loopback_static_endpoints() -> None:
    backend = {"staticEndpoints": [{"address": "127.0.0.1", "port": 18001}]}
    result = render_config([service("default", "s", "/s", backend)], [], {})
    assert result.outcomes["VocelioService/default/s"].resolved
    assert result.config.services[0].backends[0].endpoints[0].address == "127.0.0.1"


def test_the_operator_reads_the_charts_tenancy_values_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    chart_values = {"staticEndpoints": {"enabled": True, "denyCidrs": ["10.0.0.0/8"]},
                    "prefixClaims": {"restricted": True, "rules": [{"namespaces": ["t-*"], "prefixes": ["/t"]}]},
                    "apiKeys": {"namespaces": ["t-1"], "allowances": [{"namespaces": ["t-1"], "tenants": ["t"]}]}}
    monkeypatch.setenv("VOCELIO_OPERATOR_TENANCY", json.dumps(chart_values))
    settings = OperatorSettings()
    policy = tenancy_policy(settings.tenancy, "gw", {})
    assert policy.addresses.static_refusal("10.1.1.1") is not None
    assert policy.claims.refusal("t-1", ["/t/x"]) is None
    assert policy.claims.refusal("u", ["/t"]) is not None
    assert policy.claims.refusal("gw", ["/anything"]) is None


def test_tenancy_defaults_are_open_for_claims_and_closed_for_addresses_and_keys() -> None:
    settings = TenancySettings()
    assert not settings.prefix_claims.restricted
    assert not settings.static_endpoints.enabled
    assert settings.api_keys.namespaces == []
    assert "169.254.169.254/32" in settings.static_endpoints.deny_cidrs


@pytest.mark.parametrize(("values", "message"), [
    ({"staticEndpoints": {"denyCidrs": ["10.0.0.0/33"]}}, "10.0.0.0/33"),
    ({"prefixClaims": {"rules": [{"namespaces": ["a"], "prefixes": ["/a/%2e%2e/b"]}]}}, "/a/%2e%2e/b"),
    ({"prefixClaims": {"rules": [{"namespaces": ["A B"], "prefixes": ["/a"]}]}}, "namespaces"),
    ({"apiKeys": {"namespaces": ["team-*"]}}, "team-*"),
    ({"apiKeys": {"namespace": ["typo"]}}, "namespace"),
])
def test_bad_tenancy_settings_are_refused_with_the_field(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TenancySettings(**values)
    assert message in str(caught.value)

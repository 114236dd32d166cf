"""VocelioService `hostnames` through the renderer: the config carries them, two services
conflict only on the same (host, prefix) and the older wins, and in restricted tenancy
mode the claim rules' `hosts` bound which hosts (and prefixes on them) a namespace may
claim (docs/host-routing.md, docs/multi-tenancy.md)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vocelio_operator.model.resources import ResourceError, VocelioServiceResource, is_service, parse_resource
from vocelio_operator.model.schemas import schema_problems
from vocelio_operator.translation.rendering import render_config
from vocelio_operator.translation.tenancy.claims import ClaimPolicy, ClaimRule
from vocelio_operator.translation.tenancy.policy import TenancyPolicy, TenancySettings, claim_policy

STATIC = {"staticEndpoints": [{"address": "198.18.0.1", "port": 8080}]}


def body(ns: str, name: str, prefix: str, hosts: list[str] | None, created: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"pathPrefix": prefix, "backends": [STATIC]}
    if hosts is not None:
        spec["hostnames"] = hosts
    return {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": spec}


def service(ns: str, name: str, prefix: str, hosts: list[str] | None = None,
            created: str = "2026-01-01T00:00:00Z") -> VocelioServiceResource:
    res = parse_resource(body(ns, name, prefix, hosts, created))
    assert is_service(res)
    return res


def test_hostnames_are_rendered_sorted_and_a_service_without_them_has_no_hosts_field() -> None:
    result = render_config([service("a", "web", "/", ["b.example.com", "*.example.com"]), service("a", "api", "/api")],
                           [], {})
    by_name = {s.name: s for s in result.config.services}
    assert by_name["web"].hosts == ["*.example.com", "b.example.com"]
    assert by_name["api"].hosts == []
    assert '"hosts"' in result.text
    assert result.text.count('"hosts"') == 1  # omitted when empty: older proxies read such configs unchanged


def test_the_same_prefix_on_different_hosts_is_no_conflict() -> None:
    result = render_config([service("a", "one", "/api", ["one.example.com"]),
                            service("b", "two", "/api", ["two.example.com"]),
                            service("c", "wild", "/api", ["*.example.com"]),
                            service("d", "any", "/api")], [], {})
    assert all(o.accepted for o in result.outcomes.values()), result.outcomes
    assert len(result.config.services) == 4


def test_the_same_host_and_prefix_conflicts_and_the_older_keeps_it() -> None:
    older = service("a", "old", "/api", ["shop.example.com", "www.example.com"], "2026-01-01T00:00:00Z")
    newer = service("b", "new", "/API", ["www.example.com"], "2026-02-01T00:00:00Z")
    result = render_config([newer, older], [], {})
    refused = result.outcomes["VocelioService/b/new"]
    assert not refused.accepted
    assert refused.accepted_reason == "PrefixConflict"
    assert refused.accepted_message == ("prefix /API on host www.example.com is already routed to a/old (older) as "
                                        "/api: prefixes that differ only by letter case or escapes are one route")
    assert [s.name for s in result.config.services] == ["old"]


def test_a_service_without_hosts_conflicts_only_with_services_without_hosts() -> None:
    result = render_config([service("a", "hosted", "/api", ["a.example.com"]),
                            service("b", "plain", "/api", created="2026-02-01T00:00:00Z"),
                            service("c", "plain2", "/api", created="2026-03-01T00:00:00Z")], [], {})
    assert result.outcomes["VocelioService/b/plain"].accepted
    assert result.outcomes["VocelioService/c/plain2"].accepted_message == \
        "prefix /api is already routed to b/plain (older)"


@pytest.mark.parametrize("host", ["API.example.com", "a.example.com:80", "10.0.0.1", "a.*.com", "a_b.com",
                                  "example.com.", "*"])
def test_an_invalid_hostname_is_refused_by_the_schema_and_by_the_model(host: str) -> None:
    doc = body("a", "web", "/", [host], "2026-01-01T00:00:00Z")
    with pytest.raises(ResourceError, match=r"spec\.hostnames"):
        parse_resource(doc)
    if host != "10.0.0.1":  # the CRD refuses an IP address with a CEL rule, which the offline schema skips
        assert any(p.startswith("spec.hostnames") for p in schema_problems(doc)), host


def test_a_repeated_hostname_is_refused() -> None:
    with pytest.raises(ResourceError, match="repeat"):
        parse_resource(body("a", "web", "/", ["a.example.com", "a.example.com"], "2026-01-01T00:00:00Z"))


# -- tenancy: which hosts a namespace may claim -----------------------------------------------

RULES = (
    ClaimRule(("team-a",), ("/",), ("*.team-a.example.com", "team-a.example.com")),
    ClaimRule(("team-b",), ("/api/team-b",), ("shared.example.com",)),
    ClaimRule(("team-c",), ("/",), ("*.example.com",)),
    ClaimRule(("team-d",), ("/",), ("reserved.example.com",)),
    ClaimRule(("team-x",), ("/api/team-x",)),
)


def judged(ns: str, hosts: list[str] | None, prefix: str = "/x") -> tuple[bool, str, str]:
    tenancy = TenancyPolicy(claims=ClaimPolicy(True, RULES, frozenset({"gateway"})))
    result = render_config([service(ns, "web", prefix, hosts)], [], {}, tenancy=tenancy)
    outcome = result.outcomes[f"VocelioService/{ns}/web"]
    return outcome.accepted, outcome.accepted_reason, outcome.accepted_message


def test_a_rule_with_hosts_lets_its_namespace_claim_those_hosts_and_names_below_its_wildcards() -> None:
    assert judged("team-a", ["team-a.example.com"])[0]
    assert judged("team-a", ["x.team-a.example.com", "*.y.team-a.example.com"])[0]
    assert judged("team-c", ["anything.example.com"])[0]


def test_a_host_no_rule_gives_the_namespace_is_refused_with_the_hosts_it_may_claim() -> None:
    accepted, reason, message = judged("team-a", ["team-b.example.com"])
    assert (accepted, reason) == (False, "HostNotAllowed")
    assert message == ("namespace team-a may not claim host team-b.example.com: it may claim only "
                       "*.team-a.example.com, team-a.example.com")
    accepted, reason, message = judged("team-z", ["z.example.org"])
    assert (accepted, reason) == (False, "HostNotAllowed")
    assert "no claim rule with hosts names this namespace" in message


def test_a_broad_wildcard_rule_never_reaches_a_host_a_more_specific_rule_reserves() -> None:
    accepted, reason, message = judged("team-c", ["reserved.example.com"])
    assert (accepted, reason) == (False, "HostNotAllowed")
    assert "covered by reserved.example.com, which a more specific claim rule reserves" in message
    assert judged("team-d", ["reserved.example.com"])[0]
    # team-a's wildcard is longer than team-c's: below it, team-a decides.
    assert not judged("team-c", ["x.team-a.example.com"])[0]


def test_prefixes_on_a_host_are_bounded_by_that_host_s_rules() -> None:
    assert judged("team-b", ["shared.example.com"], "/api/team-b/x")[0]
    accepted, reason, message = judged("team-b", ["shared.example.com"], "/other")
    assert (accepted, reason) == (False, "HostNotAllowed")
    assert message.startswith("on host shared.example.com: namespace team-b may not claim prefix /other")


def test_rules_without_hosts_still_bound_services_without_hosts_only() -> None:
    assert judged("team-x", None, "/api/team-x")[0]
    accepted, reason, _ = judged("team-a", None, "/x")  # team-a's host rule says nothing about the default host
    assert (accepted, reason) == (False, "PrefixNotAllowed")


def test_the_gateway_namespace_and_unrestricted_mode_claim_any_host() -> None:
    assert judged("gateway", ["whatever.example.net"])[0]
    result = render_config([service("team-z", "web", "/", ["z.example.org"])], [], {}, tenancy=TenancyPolicy())
    assert result.outcomes["VocelioService/team-z/web"].accepted


def test_claim_rule_settings_take_host_patterns_and_refuse_bad_ones() -> None:
    settings = TenancySettings.model_validate({"prefixClaims": {"restricted": True, "rules": [
        {"namespaces": ["team-a"], "prefixes": ["/"], "hosts": ["*.team-a.example.com"]}]}})
    assert claim_policy(settings, "gw").rules[0].hosts == ("*.team-a.example.com",)
    with pytest.raises(ValidationError, match="lower case"):
        TenancySettings.model_validate({"prefixClaims": {"rules": [
            {"namespaces": ["team-a"], "prefixes": ["/"], "hosts": ["Team-A.example.com"]}]}})


def test_a_service_naming_hosts_may_route_gateway_endpoint_paths_on_them_and_no_other_may() -> None:
    result = render_config([service("a", "site", "/", ["shop.example.com"]),
                            service("a", "site-health", "/health", ["*.shop.example.com"]),
                            service("b", "root", "/")], [], {})
    assert result.outcomes["VocelioService/a/site"].accepted
    assert result.outcomes["VocelioService/a/site-health"].accepted
    assert result.outcomes["VocelioService/b/root"].accepted_reason == "ReservedPath"

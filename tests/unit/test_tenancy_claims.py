"""Prefix claim policy (vocelio_operator.translation.tenancy.claims): by default any
namespace claims any prefix; restricted, a namespace claims only the prefixes
its rules name and what lies below them on segment boundaries, compared as the
router compares (case and escapes ignored); the gateway namespace is never
restricted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_operator.translation.tenancy.claims import ClaimPolicy, ClaimRule

POLICY = ClaimPolicy(restricted=True, rules=(
    ClaimRule(("team-a",), ("/api/v1/team-a",)),
    ClaimRule(("team-b-*",), ("/api/v1/team-b", "/webhooks/team-b")),
), unrestricted=frozenset({"vocelio-system"}))


def test_the_default_lets_any_namespace_claim_any_prefix() -> None:
    assert ClaimPolicy().refusal("anyone", ["/api/v1/billing", "/"]) is None


@pytest.mark.parametrize(("namespace", "prefix"), [
    ("team-a", "/api/v1/team-a"), ("team-a", "/api/v1/team-a/reports"), ("team-a", "/API/V1/Team-A/x"),
    ("team-a", "/api/v1/team-%61/x"), ("team-b-prod", "/webhooks/team-b/in"), ("team-b-dev", "/api/v1/team-b"),
    ("vocelio-system", "/api/v1/anything"),
])
def test_a_claim_inside_the_namespaces_rules_is_allowed(namespace: str, prefix: str) -> None:
    assert POLICY.refusal(namespace, [prefix]) is None


@pytest.mark.parametrize(("namespace", "prefix"), [
    ("team-a", "/api/v1/team-ab"), ("team-a", "/api/v1/team-a-admin"), ("team-a", "/api/v1"), ("team-a", "/api"),
    ("team-a", "/api/v1/team-b/x"), ("team-b", "/api/v1/team-b"), ("attacker", "/api/v1/team-a"),
    ("team-a-evil", "/api/v1/team-a"), ("team-b-prod", "/webhooks/team-bb"), ("team-a", "/api/v2/team-a"),
])
def test_a_claim_outside_the_namespaces_rules_is_refused_with_what_it_may_claim(namespace: str, prefix: str) -> None:
    reason = POLICY.refusal(namespace, [prefix])
    assert reason is not None
    assert namespace in reason
    assert prefix in reason


def test_one_alias_outside_the_rules_refuses_the_whole_resource() -> None:
    reason = POLICY.refusal("team-a", ["/api/v1/team-a", "/admin"])
    assert reason is not None
    assert "/admin" in reason
    assert "/api/v1/team-a" in reason


def test_a_rule_for_the_root_allows_everything() -> None:
    policy = ClaimPolicy(restricted=True, rules=(ClaimRule(("*",), ("/",)),))
    assert policy.refusal("anyone", ["/api/v1/x"]) is None


SEGMENTS = st.lists(st.sampled_from(["api", "v1", "team-a", "team-ab", "Team-A", "x", "%61"]), min_size=1, max_size=4)


@given(SEGMENTS, SEGMENTS)
def test_a_claim_is_allowed_exactly_when_its_segments_extend_the_rules(rule: list[str], claim: list[str]) -> None:
    def fold(segments: list[str]) -> list[str]:
        return [s.replace("%61", "a").lower() for s in segments]

    policy = ClaimPolicy(restricted=True, rules=(ClaimRule(("ns",), ("/" + "/".join(rule),)),))
    expected = fold(claim)[:len(rule)] == fold(rule)
    assert (policy.refusal("ns", ["/" + "/".join(claim)]) is None) == expected

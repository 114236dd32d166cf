"""API-key allowances (vocelio_operator.translation.tenancy.allowances, .keys): keys in
the gateway namespace are unrestricted; elsewhere a key is published only when
an allowance for its namespace allows its tenant, every role and its tier; a key
id is published once (the gateway namespace's record wins); refusal messages
name the Secret's key id and metadata, never its hash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_contract.apikeys import ApiKeyRecord, mint_key
from vocelio_operator.translation.tenancy.allowances import KeyAllowance, KeyPolicy
from vocelio_operator.translation.tenancy.keys import judge_keys

GATEWAY = "vocelio-system"
POLICY = KeyPolicy((
    KeyAllowance(("team-a",), tenants=("team-a",), roles=("reader", "writer"), tiers=("api-key",)),
    KeyAllowance(("partner-*",), tenants=("*",), roles=("*",), tiers=()),
), frozenset({GATEWAY}))


def record(**metadata: object) -> ApiKeyRecord:
    return mint_key(name="k", **metadata)[1]


def test_a_key_in_the_gateway_namespace_is_unrestricted() -> None:
    assert POLICY.refusal(GATEWAY, record(tenant="anyone", roles=["admin"], tier="premium")) is None


@pytest.mark.parametrize("metadata", [
    {"tenant": "team-a", "roles": ["reader"], "tier": "api-key"}, {"tenant": "team-a"}, {},
    {"roles": ["reader", "writer"]},
])
def test_a_key_inside_its_namespaces_allowance_is_published(metadata: dict[str, object]) -> None:
    assert POLICY.refusal("team-a", record(**metadata)) is None


@pytest.mark.parametrize(("namespace", "metadata", "why"), [
    ("team-a", {"tenant": "team-b"}, "tenant 'team-b'"),
    ("team-a", {"tenant": "team-a", "roles": ["reader", "admin"]}, "role 'admin'"),
    ("team-a", {"tenant": "team-a", "tier": "premium"}, "tier 'premium'"),
    ("team-a", {"tenant": "Team-A"}, "tenant 'Team-A'"),
    ("attacker", {"tenant": "team-a"}, "no API-key allowance"),
    ("team-a-evil", {}, "no API-key allowance"),
    ("partner-x", {"tenant": "p", "tier": "premium"}, "tier 'premium'"),
])
def test_a_key_outside_its_namespaces_allowance_is_refused_with_the_reason(namespace: str,
                                                                          metadata: dict[str, object],
                                                                          why: str) -> None:
    key = record(**metadata)
    reason = POLICY.refusal(namespace, key)
    assert reason is not None
    assert why in reason
    assert key.id in reason
    assert key.hash not in reason


def test_any_one_matching_allowance_is_enough() -> None:
    policy = KeyPolicy((KeyAllowance(("t",), tenants=("a",)), KeyAllowance(("t",), tenants=("b",))))
    assert policy.refusal("t", record(tenant="b")) is None


def test_a_key_id_is_published_once_and_the_gateway_namespace_wins() -> None:
    admin = record(tenant="platform", roles=["admin"])
    shadow = ApiKeyRecord(id=admin.id, hash="0" * 64, tenant="team-a", roles=["reader"])
    refused = judge_keys({"team-a/aaa": shadow, f"{GATEWAY}/zzz": admin}, POLICY, GATEWAY)
    assert list(refused) == ["team-a/aaa"]
    assert f"{GATEWAY}/zzz" in refused["team-a/aaa"]


def test_between_tenants_the_first_secret_by_name_keeps_a_key_id() -> None:
    first = record(tenant="team-a")
    second = ApiKeyRecord(id=first.id, hash="1" * 64, tenant="team-a")
    refused = judge_keys({"team-a/b": second, "team-a/a": first}, POLICY, GATEWAY)
    assert list(refused) == ["team-a/b"]


def test_a_refused_key_does_not_claim_its_id() -> None:
    attacker = record(tenant="team-a", roles=["admin"])
    legit = ApiKeyRecord(id=attacker.id, hash="2" * 64, tenant="team-a", roles=["reader"])
    refused = judge_keys({"team-a/a-attacker": attacker, "team-a/b-legit": legit}, POLICY, GATEWAY)
    assert list(refused) == ["team-a/a-attacker"]


ROLES = st.lists(st.sampled_from(["reader", "writer", "admin", "*"]), max_size=3)


@given(st.sampled_from([None, "team-a", "team-b"]), ROLES, st.sampled_from([None, "api-key", "premium"]),
       st.sampled_from(["team-a", "team-b", GATEWAY]))
def test_a_key_is_published_exactly_when_its_metadata_is_inside_the_allowance(
        tenant: str | None, roles: list[str], tier: str | None, namespace: str) -> None:
    key = record(tenant=tenant, roles=roles, tier=tier)
    allowed = namespace == GATEWAY or (namespace == "team-a" and tenant in (None, "team-a")
                                       and set(roles) <= {"reader", "writer"} and tier in (None, "api-key"))
    assert (POLICY.refusal(namespace, key) is None) == allowed

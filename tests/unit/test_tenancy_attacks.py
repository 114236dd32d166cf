"""Red-team regressions for tenant isolation (docs/multi-tenancy.md): inputs a
tenant with namespaced rights controls (a VocelioService's fields, the bytes of a
labelled Secret) must never stop the operator from serving the other tenants,
and the refusals they earn never quote a credential. The cluster counterparts
are in tests/operator_cluster/test_tenancy_attacks.py."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocelio_contract.apikeys import ApiKeyRecord, mint_key, secret_manifest
from vocelio_operator.model.resources import (
    DiscoveredEndpoint,
    ResourceError,
    VocelioServiceResource,
    is_service,
    parse_resource,
)
from vocelio_operator.translation import rendering
from vocelio_operator.translation.cluster_index import ClusterIndex
from vocelio_operator.translation.rendering import render_config
from vocelio_operator.translation.tenancy.allowances import KeyAllowance, KeyPolicy
from vocelio_operator.translation.tenancy.claims import ClaimPolicy, ClaimRule
from vocelio_operator.translation.tenancy.grants import parse_grant
from vocelio_operator.translation.tenancy.keys import judge_keys, record_bytes
from vocelio_operator.translation.tenancy.policy import TenancyPolicy, TenancySettings, tenancy_policy

ENDPOINTS = {
    ("victim", "web"): [DiscoveredEndpoint(address="10.1.0.1", ready=True, pod="v", ports={"http": 8080})],
    ("attacker", "web"): [DiscoveredEndpoint(address="10.2.0.1", ready=True, pod="a",
                                             ports={"http": 8080, "metrics": 9090})],
}


def service_body(ns: str, name: str, prefix: str, port: Any, created: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
            "metadata": {"name": name, "namespace": ns, "generation": 1, "creationTimestamp": created},
            "spec": {"pathPrefix": prefix, "backends": [{"serviceRef": {"name": "web", "port": port}}]}}


def victim() -> VocelioServiceResource:
    res = parse_resource(service_body("victim", "web", "/victim", "http", "2026-01-02T00:00:00Z"))
    assert is_service(res)
    return res


def assert_victim_served(result: rendering.RenderResult) -> None:
    outcome = result.outcomes["VocelioService/victim/web"]
    assert outcome.accepted, outcome
    assert outcome.resolved, outcome
    [svc] = [s for s in result.config.services if s.namespace == "victim"]
    assert [e.address for b in svc.backends for e in b.endpoints] == ["10.1.0.1"]


# Unicode digits (`int()` reads "٣", fails on "²"), signs, spaces, huge numbers, names.
PORTS = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=12),
    st.sampled_from(["²", "٣", "³³", "0", "65536", "+80", " 80", "80 ", "1_0", "http", "HTTP", "metrics", "-x"]),
)


@settings(max_examples=400, deadline=None)
@given(port=PORTS)
def test_no_service_port_spelling_stops_the_render_of_another_tenant(port: Any) -> None:
    body = service_body("attacker", "web", "/attacker", port, "2026-01-01T00:00:00Z")
    problem = ""
    try:
        attacker: list[VocelioServiceResource] = [parse_resource(body)]  # type: ignore[list-item]
    except ResourceError as exc:
        problem, attacker = str(exc), []
    if not attacker:
        assert "serviceRef.port" in problem  # refused with a field path, as a status condition shows it
    result = render_config([*attacker, victim()], [], ENDPOINTS, tenancy=TenancyPolicy())
    assert_victim_served(result)
    if attacker:
        outcome = result.outcomes["VocelioService/attacker/web"]
        # A port is a number the slice carries, or a name: never a number read from other digits.
        rendered = [e.port for s in result.config.services if s.namespace == "attacker"
                    for b in s.backends for e in b.endpoints]
        assert set(rendered) <= {8080, 9090}
        if rendered:
            assert outcome.resolved


@pytest.mark.parametrize("port", ["²", "٣", "٨٠٨٠", "+8080", "HTTP"])
def test_a_port_that_is_neither_ascii_digits_nor_a_port_name_is_a_field_error(port: str) -> None:
    with pytest.raises(ResourceError, match=r"spec\.backends\.0\.serviceRef\.port"):
        parse_resource(service_body("attacker", "web", "/attacker", port, "2026-01-01T00:00:00Z"))


def test_a_port_of_ascii_digits_is_the_number() -> None:
    res = parse_resource(service_body("attacker", "web", "/attacker", "9090", "2026-01-01T00:00:00Z"))
    ref = res.spec.backends[0].service_ref  # type: ignore[union-attr]
    assert ref is not None
    assert ref.port == 9090


def test_a_resource_that_fails_to_render_is_refused_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The class behind the port crash: whatever a check did not foresee in one resource
    refuses that resource (Accepted=False, Invalid) and every other one is rendered."""
    real = rendering._backends

    def exploding(res: VocelioServiceResource, *args: Any) -> Any:
        if res.metadata.namespace == "attacker":
            raise ValueError("secret-looking text hash=" + "ab" * 32)
        return real(res, *args)

    monkeypatch.setattr(rendering, "_backends", exploding)
    attacker = parse_resource(service_body("attacker", "web", "/attacker", "http", "2026-01-01T00:00:00Z"))
    result = render_config([attacker, victim()], [], ENDPOINTS, tenancy=TenancyPolicy())  # type: ignore[list-item]
    assert_victim_served(result)
    refused = result.outcomes["VocelioService/attacker/web"]
    assert not refused.accepted
    assert refused.accepted_reason == "Invalid"
    assert "ValueError" in refused.accepted_message
    assert "ab" * 32 not in refused.accepted_message
    assert [s.namespace for s in result.config.services] == ["victim"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def secret_body(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "keys", "uid": name},
            "data": {k: b64(v) for k, v in data.items()}}


def good_secret() -> tuple[dict[str, Any], ApiKeyRecord]:
    _, record = mint_key(name="good", tenant="team")
    data = {k: v.encode() for k, v in secret_manifest(record, "keys")["stringData"].items()}
    return secret_body("good", data), record


FIELDS = st.sampled_from(["id", "hash", "name", "tenant", "tier", "roles", "expiresAt", "disabled", "x"])


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(FIELDS, st.binary(min_size=16, max_size=80), max_size=8))
def test_no_key_secret_content_stops_the_listing_of_its_namespace(data: dict[str, bytes]) -> None:
    index = ClusterIndex()
    good, record = good_secret()
    index.replace_api_key_secrets("keys", [secret_body("hostile", data), good])
    assert index.api_keys["keys/good"] == record  # the neighbour is published
    assert ("keys/hostile" in index.api_keys) != ("keys/hostile" in index.api_key_problems)
    # The refusal becomes an Event: it names fields, never their values (a hash is a credential).
    message = index.api_key_problems.get("keys/hostile", "")
    for value in data.values():
        text = value.decode("utf-8", "replace")
        assert text[:16] not in message
        assert text[-16:] not in message


@pytest.mark.parametrize(("field", "value"), [
    ("hash", "A" * 64),                      # a hash in the wrong case: the pattern refuses it
    ("hash", "0123456789abcdef" * 3),        # too short
    ("expiresAt", "tomorrow-0123456789abcdef"),
    ("id", "0123456789ABCDEF"),
])
def test_an_invalid_key_secret_is_reported_without_its_values(field: str, value: str) -> None:
    good, _ = good_secret()
    data = {k: base64.b64decode(v) for k, v in good["data"].items()}
    data[field] = value.encode()
    index = ClusterIndex()
    index.upsert_api_key_secret(secret_body("bad", data))
    message = index.api_key_problems["keys/bad"]
    assert f"field {field}" in message
    assert value[:12] not in message
    assert value[-12:] not in message


def test_a_key_secret_with_bytes_that_are_not_text_is_invalid_and_named() -> None:
    index = ClusterIndex()
    good, _record = good_secret()
    index.replace_api_key_secrets("keys", [secret_body("binary", {"id": b"\xff\xfe\xfd"}), good])
    assert index.api_key_problems["keys/binary"] == \
        "invalid API key Secret: field 'id' is not base64-encoded UTF-8 text"
    assert list(index.api_keys) == ["keys/good"]


def test_a_key_expiry_without_an_offset_is_utc() -> None:
    good, _ = good_secret()
    data = {k: base64.b64decode(v) for k, v in good["data"].items()}
    data["expiresAt"] = b"2030-01-01T00:00:00"
    index = ClusterIndex()
    index.upsert_api_key_secret(secret_body("naive", data))
    expires = index.api_keys["keys/naive"].expires_at
    assert expires == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert expires <= dt.datetime.now(dt.UTC) + dt.timedelta(days=36500)  # comparable with an aware clock


def tier(ns: str, name: str, requests: int, priority: int, match: dict[str, Any]) -> Any:
    return parse_resource({"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "RateTier",
                           "metadata": {"name": name, "namespace": ns, "generation": 1},
                           "spec": {"requests": requests, "windowSeconds": 60, "keyBy": "ip", "priority": priority,
                                    "match": match}})


ADMIN_TIERS = [tier("gw", "anonymous", 100, 0, {"anonymous": True})]
# Sorted before the gateway's namespace, so it would take the name; and a higher priority for everyone.
HOSTILE_TIERS = [tier("aaa", "anonymous", 1_000_000, 0, {"anonymous": True}),
                 tier("aaa", "everyone", 1, 1000, {"authenticated": True}),
                 tier("team-b", "webhooks", 1, 999, {"routeClass": "webhooks"})]


def test_a_tenants_rate_tier_never_applies_to_the_gateway_nor_takes_the_platforms_name() -> None:
    policy = tenancy_policy(TenancySettings(), "gw", {})
    result = render_config([victim()], [*HOSTILE_TIERS, *ADMIN_TIERS], ENDPOINTS, tenancy=policy)
    assert [(t.name, t.requests) for t in result.config.rate_tiers] == [("anonymous", 100)]
    assert result.outcomes["RateTier/gw/anonymous"].accepted
    for hostile in HOSTILE_TIERS:
        outcome = result.outcomes[f"RateTier/{hostile.id}"]
        assert not outcome.accepted
        assert outcome.accepted_reason == "TierNotAllowed"
        assert "gw" in outcome.accepted_message
    assert_victim_served(result)


def test_the_platform_may_name_more_namespaces_whose_rate_tiers_are_enforced() -> None:
    settings = TenancySettings.model_validate({"rateTiers": {"namespaces": ["team-*"]}})
    result = render_config([], [*HOSTILE_TIERS, *ADMIN_TIERS], {}, tenancy=tenancy_policy(settings, "gw", {}))
    assert sorted(t.name for t in result.config.rate_tiers) == ["anonymous", "webhooks"]
    assert result.outcomes["RateTier/aaa/everyone"].accepted_reason == "TierNotAllowed"


def test_without_a_policy_every_rate_tier_is_enforced_as_before() -> None:
    result = render_config([], [*HOSTILE_TIERS, *ADMIN_TIERS], {})
    assert sorted(t.name for t in result.config.rate_tiers) == ["anonymous", "everyone", "webhooks"]


def test_a_tier_that_fails_to_render_is_refused_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rendering._tier

    def exploding(res: Any) -> Any:
        if res.metadata.namespace == "aaa":
            raise ValueError("unforeseen")
        return real(res)

    monkeypatch.setattr(rendering, "_tier", exploding)
    result = render_config([victim()], [*HOSTILE_TIERS, *ADMIN_TIERS], ENDPOINTS)
    assert sorted(t.name for t in result.config.rate_tiers) == ["anonymous", "webhooks"]
    assert result.outcomes["RateTier/aaa/anonymous"].accepted_reason == "Invalid"
    assert result.outcomes["RateTier/gw/anonymous"].accepted  # the name was not taken by the failed tier
    assert_victim_served(result)


GATEWAY_PODS = ["10.9.0.5", "fd00:9::5"]
FENCED = {("gw", "vocelio-proxy"): [DiscoveredEndpoint(a, True, "proxy", {"http": 8080}) for a in GATEWAY_PODS]}


def fenced_policy(**settings: Any) -> TenancyPolicy:
    tenancy = TenancySettings.model_validate({"staticEndpoints": {"enabled": True}, **settings})
    return tenancy_policy(tenancy, "gw", {}, gateway_endpoints=[e.address for e in FENCED[("gw", "vocelio-proxy")]])


@pytest.mark.parametrize("spelling", ["10.9.0.5", "::ffff:10.9.0.5", "::ffff:a09:5", "fd00:9::5",
                                      "fd00:9:0:0:0:0:0:5", "FD00:9::5", "2002:a09:5::"])
def test_a_tenant_backend_never_reaches_the_gateways_own_endpoints_in_any_spelling(spelling: str) -> None:
    static = {"staticEndpoints": [{"address": spelling, "port": 8080}, {"address": "10.1.0.9", "port": 80}]}
    slices = {**ENDPOINTS, **FENCED,
              ("attacker", "web"): [DiscoveredEndpoint(spelling, True, None, {"http": 8080}),
                                    DiscoveredEndpoint("10.2.0.1", True, None, {"http": 8080})]}
    by_static = parse_resource({
        "apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
        "metadata": {"name": "static", "namespace": "attacker", "generation": 1},
        "spec": {"pathPrefix": "/attacker/static", "backends": [static]}})
    by_slice = parse_resource(service_body("attacker", "web", "/attacker", "http", "2026-01-01T00:00:00Z"))
    result = render_config([by_static, by_slice, victim()], [], slices, tenancy=fenced_policy())  # type: ignore[list-item]
    rendered = {s.name: [e.address for b in s.backends for e in b.endpoints] for s in result.config.services}
    assert rendered["static"] == ["10.1.0.9"]
    assert rendered["web"] == ["10.1.0.1"]  # the victim's
    attacker = [s for s in result.config.services if s.namespace == "attacker" and s.name == "web"]
    assert [e.address for b in attacker[0].backends for e in b.endpoints] == ["10.2.0.1"]
    for name in ("static", "web"):
        outcome = result.outcomes[f"VocelioService/attacker/{name}"]
        assert outcome.resolved_reason == "AddressNotAllowed"
        # IPv4-mapped spellings are refused before the fence (`::/8` is reserved); the rest by it.
        assert ("gateway's namespace gw" in outcome.resolved_message) != spelling.startswith("::ffff:")


def test_the_gateways_namespace_and_its_granted_services_keep_their_endpoints() -> None:
    grant = parse_grant({"metadata": {"namespace": "gw", "name": "g"},
                         "spec": {"from": [{"group": "gateway.vocelio.ai", "kind": "VocelioService",
                                            "namespace": "victim"}],
                                  "to": [{"group": "", "kind": "Service", "name": "vocelio-proxy"}]}})
    base = fenced_policy()
    policy = TenancyPolicy(base.addresses, base.claims, {"gw": [grant]}, base.tiers, base.fence)
    ref = {"serviceRef": {"name": "vocelio-proxy", "namespace": "gw", "port": "http"}}
    own = parse_resource({"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
                          "metadata": {"name": "own", "namespace": "gw", "generation": 1},
                          "spec": {"pathPrefix": "/gw", "backends": [ref]}})
    granted = parse_resource({"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
                              "metadata": {"name": "granted", "namespace": "victim", "generation": 1},
                              "spec": {"pathPrefix": "/victim/gw", "backends": [ref]}})
    result = render_config([own, granted], [], FENCED, tenancy=policy)  # type: ignore[list-item]
    rendered = {s.name: sorted(e.address for b in s.backends for e in b.endpoints) for s in result.config.services}
    assert rendered == {"own": sorted(GATEWAY_PODS), "granted": sorted(GATEWAY_PODS)}


OPEN_WITH_RESERVATIONS = ClaimPolicy(restricted=True, rules=(
    ClaimRule(("*",), ("/",)),
    ClaimRule(("billing",), ("/api/v1/billing",)),
    ClaimRule(("voice-*",), ("/api/v1/voice",)),
), unrestricted=frozenset({"gw"}))


@pytest.mark.parametrize("prefix", ["/api/v1/billing/invoices", "/API/V1/Billing/x", "/api/v1/%62illing/y",
                                    "/api/v1/billing"])
def test_a_broad_rule_never_lets_a_namespace_claim_below_a_prefix_reserved_for_another(prefix: str) -> None:
    reason = OPEN_WITH_RESERVATIONS.refusal("attacker", [prefix])
    assert reason is not None
    assert "/api/v1/billing" in reason
    assert OPEN_WITH_RESERVATIONS.refusal("billing", [prefix]) is None
    assert OPEN_WITH_RESERVATIONS.refusal("gw", [prefix]) is None


def test_the_broad_rule_still_allows_what_no_narrower_rule_reserves() -> None:
    assert OPEN_WITH_RESERVATIONS.refusal("attacker", ["/api/v1/billing-admin", "/api/v2/billing"]) is None
    assert OPEN_WITH_RESERVATIONS.refusal("voice-a", ["/api/v1/voice/x"]) is None
    assert OPEN_WITH_RESERVATIONS.refusal("voice-a", ["/api/v1/billing/x"]) is not None


RULE_SEGMENTS = st.lists(st.sampled_from(["api", "v1", "a", "b", "A"]), min_size=0, max_size=3)


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(st.tuples(st.sampled_from(["x", "y", "*"]), RULE_SEGMENTS), min_size=1, max_size=4),
       claim=st.lists(st.sampled_from(["api", "v1", "a", "b", "A", "c"]), min_size=1, max_size=4))
def test_an_accepted_claim_is_never_below_a_narrower_rule_of_other_namespaces(
        rules: list[tuple[str, list[str]]], claim: list[str]) -> None:
    policy = ClaimPolicy(restricted=True, rules=tuple(ClaimRule((ns,), ("/" + "/".join(segs),)) for ns, segs in rules))
    folded = [s.lower() for s in claim]
    for namespace in ("x", "y"):
        if policy.refusal(namespace, ["/" + "/".join(claim)]) is not None:
            continue
        covering = [(len(segs), ns in (namespace, "*")) for ns, segs in rules
                    if folded[:len(segs)] == [s.lower() for s in segs]]
        assert covering, "accepted without any rule"
        deepest = max(depth for depth, _ in covering)
        assert any(mine for depth, mine in covering if depth == deepest), (namespace, rules, claim)


@pytest.mark.parametrize(("field", "value"), [("name", "n" * 254), ("tenant", "t" * 254), ("tier", "x" * 254),
                                              ("roles", ",".join(["r"] * 65)), ("roles", "r" * 254)])
def test_key_metadata_beyond_its_bounds_is_invalid(field: str, value: str) -> None:
    good, _ = good_secret()
    data = {k: base64.b64decode(v) for k, v in good["data"].items()}
    data[field] = value.encode()
    index = ClusterIndex()
    index.upsert_api_key_secret(secret_body("huge", data))
    assert "keys/huge" not in index.api_keys
    assert f"field {field}" in index.api_key_problems["keys/huge"]


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(st.tuples(st.sampled_from(["gw", "aaa", "team-b"]), st.integers(0, 253)), max_size=30),
       budget=st.integers(200, 6000))
def test_the_published_keys_always_fit_the_budget_and_the_gateways_keys_go_first(
        keys: list[tuple[str, int]], budget: int) -> None:
    index = ClusterIndex()
    for n, (ns, name_length) in enumerate(keys):
        _, record = mint_key(name="n" * name_length, tenant="t")
        index.api_keys[f"{ns}/k{n:02d}"] = record
    policy = KeyPolicy((KeyAllowance(("*",), ("*",), ("*",), ("*",)),), frozenset({"gw"}))
    refused = judge_keys(index.api_keys, policy, "gw", budget)
    text, _ = index.api_keys_document(refused)
    assert len(text.encode()) <= max(budget, 5)
    published_tenant = [k for k in index.api_keys if k not in refused and not k.startswith("gw/")]
    refused_gateway = [k for k in refused if k.startswith("gw/")]
    # A tenant's key is published only when every gateway key that fits on its own was ("aaa" sorts first).
    assert not (published_tenant and refused_gateway and any(
        record_bytes(index.api_keys[k]) <= record_bytes(index.api_keys[published_tenant[0]])
        for k in refused_gateway))

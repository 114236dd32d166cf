"""ReferenceGrant semantics (vocelio_operator.translation.tenancy.grants): consent comes
from the referenced namespace, names the referring namespace and kind exactly
(case-sensitive, as the API), and a target name when one is given; anything
malformed grants nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_operator.translation.tenancy.grants import ReferenceGrant, parse_grant, reference_permitted


def grant(namespace: str = "a", from_ns: str = "b", group: str = "gateway.vocelio.ai", kind: str = "VocelioService",
          to_group: str = "", to_kind: str = "Service", name: str | None = "billing") -> ReferenceGrant:
    to: dict[str, Any] = {"group": to_group, "kind": to_kind}
    if name is not None:
        to["name"] = name
    return parse_grant({"metadata": {"namespace": namespace, "name": "g"},
                        "spec": {"from": [{"group": group, "kind": kind, "namespace": from_ns}], "to": [to]}})


def test_a_reference_within_one_namespace_needs_no_grant() -> None:
    assert reference_permitted("a", "a", "billing", [])


def test_a_reference_into_another_namespace_without_a_grant_is_not_permitted() -> None:
    assert not reference_permitted("b", "a", "billing", [])


def test_a_grant_in_the_referenced_namespace_permits_the_named_service() -> None:
    assert reference_permitted("b", "a", "billing", [grant()])


def test_a_grant_without_a_name_permits_every_service_of_its_namespace() -> None:
    assert reference_permitted("b", "a", "ledger", [grant(name=None)])
    assert reference_permitted("b", "a", "ledger", [grant(name="")])


@pytest.mark.parametrize("wrong", [
    {"namespace": "b"},                 # the referrer cannot consent for the referenced namespace
    {"namespace": "c"},                 # nor can a third namespace
    {"from_ns": "attacker"},            # consent names the referring namespace
    {"name": "ledger"},                 # and the Service when it names one
    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},  # another kind's grant
    {"kind": "vocelioservice"},         # kinds are case-sensitive
    {"group": "Gateway.Vocelio.AI"},    # so are groups
    {"to_group": "core"},               # the core group is "", not "core"
    {"to_kind": "service"},
    {"to_kind": "Secret"},
])
def test_a_grant_that_does_not_name_this_reference_permits_nothing(wrong: dict[str, Any]) -> None:
    assert not reference_permitted("b", "a", "billing", [grant(**wrong)])


@pytest.mark.parametrize("spec", [
    None, {}, {"from": "b", "to": "Service"}, {"from": [None, 3, "x"], "to": [[]]},
    {"from": [{"group": "gateway.vocelio.ai", "kind": "VocelioService"}], "to": [{"group": "", "kind": "Service"}]},
    {"from": [{"group": "gateway.vocelio.ai", "kind": "VocelioService", "namespace": "b"}],
     "to": [{"kind": "Service"}]},
    {"from": [{"group": "gateway.vocelio.ai", "kind": "VocelioService", "namespace": "b"}],
     "to": [{"group": "", "kind": "Service", "name": 7}]},
])
def test_a_malformed_grant_grants_nothing(spec: Any) -> None:
    parsed = parse_grant({"metadata": {"namespace": "a", "name": "g"}, "spec": spec})
    assert not reference_permitted("b", "a", "billing", [parsed])


NAMES = st.sampled_from(["a", "b", "c"])
SERVICES = st.sampled_from(["billing", "ledger"])
GRANTS = st.builds(grant, namespace=NAMES, from_ns=NAMES,
                   kind=st.sampled_from(["VocelioService", "HTTPRoute", "vocelioservice"]),
                   to_kind=st.sampled_from(["Service", "Secret"]),
                   name=st.one_of(st.none(), SERVICES))


@given(NAMES, NAMES, SERVICES, st.lists(GRANTS, max_size=6))
def test_a_reference_is_permitted_exactly_when_one_grant_names_it(from_ns: str, to_ns: str, service: str,
                                                                  grants: list[ReferenceGrant]) -> None:
    oracle = from_ns == to_ns or any(
        g.namespace == to_ns and g.sources[0].namespace == from_ns and g.sources[0].kind == "VocelioService"
        and g.targets[0].kind == "Service" and g.targets[0].name in (None, service) for g in grants)
    assert reference_permitted(from_ns, to_ns, service, grants) == oracle

"""Status conditions from render outcomes (operator `translation.status`): what each
outcome reports, transition times that hold while a status holds, and which changes
deserve an Event."""

from __future__ import annotations

from typing import Any

import pytest

from vocelio_operator.translation.rendering import Outcome
from vocelio_operator.translation.status import (
    desired_conditions,
    merge_conditions,
    resource_status,
    same_conditions,
    transition_events,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def service(**kw: Any) -> Outcome:
    base: dict[str, Any] = {"kind": "VocelioService", "id": "shop/checkout", "generation": 3,
                            "ready_endpoints": 2, "total_endpoints": 3}
    base.update(kw)
    return Outcome(**base)


def by_type(conditions: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


def test_an_accepted_resolved_service_with_ready_endpoints_is_ready() -> None:
    got = by_type(desired_conditions(service(), programmed=True))
    assert got == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs"),
                   "Programmed": ("True", "Programmed"), "Ready": ("True", "Ready")}


def test_a_service_before_its_config_is_written_is_pending() -> None:
    got = by_type(desired_conditions(service(), programmed=False))
    assert got["Programmed"] == ("False", "Pending")
    assert got["Ready"] == ("False", "Pending")


def test_a_service_without_ready_endpoints_is_not_ready_and_says_how_many() -> None:
    conditions = desired_conditions(service(ready_endpoints=0), programmed=True)
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoReadyEndpoints")
    assert ready["message"] == "0 of 3 endpoints are ready"


def test_a_rejected_service_is_neither_programmed_nor_ready_for_the_same_reason() -> None:
    outcome = service(accepted=False, accepted_reason="PrefixConflict", accepted_message="held by shop/cart")
    got = by_type(desired_conditions(outcome, programmed=True))
    assert got["Accepted"] == ("False", "PrefixConflict")
    assert got["Programmed"] == ("False", "NotAccepted")
    assert got["Ready"] == ("False", "PrefixConflict")


def test_an_invalid_resource_names_its_problem_in_accepted_and_ready() -> None:
    conditions = desired_conditions(service(), programmed=True, invalid_message="spec.pathPrefix: must start with /")
    assert [c["reason"] for c in conditions] == ["Invalid", "NotAccepted", "Invalid"]
    assert conditions[0]["message"] == "spec.pathPrefix: must start with /"


def test_a_rate_tier_has_no_resolved_refs_condition() -> None:
    tier = Outcome(kind="RateTier", id="default/gold", generation=1)
    assert [c["type"] for c in desired_conditions(tier, programmed=True)] == ["Accepted", "Programmed", "Ready"]


def test_every_condition_observes_the_resource_generation_and_messages_are_bounded() -> None:
    outcome = service(generation=7, accepted=False, accepted_reason="InvalidPrefix", accepted_message="x" * 5000)
    conditions = desired_conditions(outcome, programmed=True)
    assert {c["observedGeneration"] for c in conditions} == {7}
    assert max(len(c["message"]) for c in conditions) == 1024


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = merge_conditions([], desired_conditions(service(), True), T0)
    # The message changes (another endpoint became ready), the status does not.
    second = merge_conditions(first, desired_conditions(service(ready_endpoints=3), True), T1)
    assert {c["lastTransitionTime"] for c in second} == {T0}
    third = merge_conditions(second, desired_conditions(service(ready_endpoints=0), True), T1)
    times = {c["type"]: c["lastTransitionTime"] for c in third}
    assert times == {"Accepted": T0, "ResolvedRefs": T0, "Programmed": T0, "Ready": T1}


def test_only_changes_of_status_or_reason_of_user_facing_conditions_post_events() -> None:
    before = merge_conditions([], desired_conditions(service(), True), T0)
    assert transition_events(before, before) == []
    after = merge_conditions(before, desired_conditions(service(ready_endpoints=0), True), T1)
    assert transition_events(before, after) == [
        ("Warning", "NoReadyEndpoints", "Ready=False: 0 of 3 endpoints are ready")]
    # A first report announces every user-facing condition, not Programmed.
    assert [e[1] for e in transition_events([], before)] == ["Accepted", "ResolvedRefs", "Ready"]


def test_same_conditions_ignores_transition_times_but_not_messages() -> None:
    a = merge_conditions([], desired_conditions(service(), True), T0)
    b = merge_conditions([], desired_conditions(service(), True), T1)
    assert same_conditions(a, b)
    c = merge_conditions([], desired_conditions(service(ready_endpoints=1), True), T0)
    assert not same_conditions(a, c)


@pytest.mark.parametrize(("outcome", "invalid", "expected"), [
    (None, None, None),
    (None, "spec: bad", "Invalid"),
])
def test_a_resource_the_render_did_not_see_gets_no_status_unless_it_is_invalid(
        outcome: Outcome | None, invalid: str | None, expected: str | None) -> None:
    body = resource_status("VocelioService", "shop", "x", 2, outcome, invalid, [], T0)
    if expected is None:
        assert body is None
    else:
        assert body is not None
        assert body["conditions"][0]["reason"] == expected
        assert body["observedGeneration"] == 2


def test_a_service_status_reports_its_endpoint_counts() -> None:
    body = resource_status("VocelioService", "shop", "checkout", 3, service(), None, [], T0)
    assert body is not None
    assert (body["readyEndpoints"], body["totalEndpoints"], body["endpoints"]) == (2, 3, "2/3")

"""Status conditions from render outcomes: `Accepted`, `ResolvedRefs`,
`Programmed`, `Ready` with reasons, messages and `observedGeneration`, keeping
`lastTransitionTime` while a condition's status holds. Also which transitions
deserve an Event. Pure; the reconciler patches and posts the results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vocelio_operator.translation.rendering import Outcome


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message[:1024],
            "observedGeneration": generation}


def desired_conditions(outcome: Outcome, programmed: bool,
                       invalid_message: str | None = None) -> list[dict[str, Any]]:
    g = outcome.generation
    if invalid_message is not None:
        return [_condition("Accepted", False, "Invalid", invalid_message, g),
                _condition("Programmed", False, "NotAccepted", "Not part of the gateway config", g),
                _condition("Ready", False, "Invalid", invalid_message, g)]
    conds = [_condition("Accepted", outcome.accepted, outcome.accepted_reason, outcome.accepted_message, g)]
    if outcome.kind == "VocelioService":
        conds.append(_condition("ResolvedRefs", outcome.resolved, outcome.resolved_reason,
                                outcome.resolved_message, g))
    if not outcome.accepted:
        conds.append(_condition("Programmed", False, "NotAccepted", "Not part of the gateway config", g))
        conds.append(_condition("Ready", False, outcome.accepted_reason, outcome.accepted_message, g))
        return conds
    # No config version in status: it changes with every endpoint anywhere, and would
    # turn each change into a status write on every resource.
    conds.append(_condition("Programmed", programmed, "Programmed" if programmed else "Pending",
                            "Part of the gateway configuration" if programmed else "Config not yet written", g))
    if outcome.kind == "VocelioService":
        if not outcome.resolved:
            ready = _condition("Ready", False, outcome.resolved_reason, outcome.resolved_message, g)
        elif outcome.ready_endpoints == 0:
            ready = _condition("Ready", False, "NoReadyEndpoints",
                               f"0 of {outcome.total_endpoints} endpoints are ready", g)
        else:
            ready = _condition("Ready", programmed, "Ready" if programmed else "Pending",
                               f"{outcome.ready_endpoints} of {outcome.total_endpoints} endpoints ready", g)
    else:
        ready = _condition("Ready", programmed, "Ready" if programmed else "Pending", "Tier is enforced", g)
    conds.append(ready)
    return conds


def merge_conditions(previous: Sequence[dict[str, Any]], desired: list[dict[str, Any]],
                     now: str) -> list[dict[str, Any]]:
    """Keep lastTransitionTime where the status did not change."""
    before = {c.get("type"): c for c in previous}
    out = []
    for cond in desired:
        old = before.get(cond["type"])
        stamp = old.get("lastTransitionTime") if old and old.get("status") == cond["status"] else None
        out.append({**cond, "lastTransitionTime": stamp or now})
    return out


def resource_status(kind: str, namespace: str, name: str, generation: int, outcome: Outcome | None,
                    invalid_message: str | None, previous: Sequence[dict[str, Any]], now: str,
                    programmed: bool = True) -> dict[str, Any] | None:
    """The status subresource of one resource after a render: from its outcome (or the
    parse problem that kept it out of the render), keeping `previous` transition
    times. None when the render did not see the resource at all. Used by the
    reconciler and the golden tests (tests/golden)."""
    if outcome is None and invalid_message is None:
        return None
    if outcome is None:
        outcome = Outcome(kind, f"{namespace}/{name}", generation)
    conditions = merge_conditions(previous, desired_conditions(outcome, programmed, invalid_message), now)
    return status_body(outcome, conditions)


def status_body(outcome: Outcome, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"observedGeneration": outcome.generation, "conditions": conditions}
    if outcome.kind == "VocelioService":
        body.update(readyEndpoints=outcome.ready_endpoints, totalEndpoints=outcome.total_endpoints,
                    endpoints=f"{outcome.ready_endpoints}/{outcome.total_endpoints}")
    return body


def same_conditions(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> bool:
    keys = ("type", "status", "reason", "message", "observedGeneration")
    return [tuple(c.get(k) for k in keys) for c in a] == [tuple(c.get(k) for k in keys) for c in b]


def transition_events(previous: Sequence[dict[str, Any]],
                      current: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(event type, reason, message) for each condition whose status or reason changed."""
    before = {c.get("type"): c for c in previous}
    events = []
    for cond in current:
        old = before.get(cond["type"])
        if old and old.get("status") == cond["status"] and old.get("reason") == cond["reason"]:
            continue
        if cond["type"] not in ("Accepted", "Ready", "ResolvedRefs"):
            continue
        kind = "Normal" if cond["status"] == "True" else "Warning"
        events.append((kind, cond["reason"], f"{cond['type']}={cond['status']}: {cond['message']}"))
    return events

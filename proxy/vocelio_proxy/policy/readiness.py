"""The readiness decision for `/readyz`, from the pod's own state and the
configured policy. Pure; the readiness handler gathers the facts."""

from __future__ import annotations

from dataclasses import dataclass

from vocelio_proxy.settings import ReadinessPolicy


@dataclass(frozen=True, slots=True)
class ReadinessFacts:
    draining: bool
    config_loaded: bool
    health_round_done: bool
    services: int
    services_with_open_breaker: int


def readiness(policy: ReadinessPolicy, facts: ReadinessFacts) -> tuple[bool, str]:
    if facts.draining:
        return False, "draining"
    if policy.require_config and not facts.config_loaded:
        return False, "no configuration loaded yet"
    if policy.require_first_health_round and not facts.health_round_done:
        return False, "first health-check round has not completed"
    if (policy.unready_when_all_breakers_open and facts.services > 0
            and facts.services_with_open_breaker == facts.services):
        return False, "every service's circuit breaker is open"
    return True, "ready"

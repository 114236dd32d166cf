"""Per-endpoint health state: active check results with healthy/unhealthy
thresholds, and passive outlier ejection with exponential back-off. Pure; the
health-check task and the proxy handler feed it results with a timestamp."""

from __future__ import annotations

from dataclasses import dataclass, field

from vocelio_contract.config import Endpoint, HealthCheck, PassiveHealth


@dataclass(slots=True)
class EndpointState:
    endpoint: Endpoint
    backend: str
    active_healthy: bool = True
    checked: bool = False
    streak: int = 0
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    in_flight: int = 0
    current_weight: int = 0
    last_check_error: str = ""
    last_check_ms: float = 0.0
    #: `address:port`, computed once (read per request).
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.endpoint.key

    def available(self, now: float) -> bool:
        return self.endpoint.ready and self.active_healthy and now >= self.ejected_until

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until


def record_active_check(state: EndpointState, ok: bool, settings: HealthCheck, error: str = "") -> bool:
    """Apply one active check result; returns True when the healthy flag flipped.

    The first result decides at once (no threshold) so a fresh proxy does not
    send traffic to a dead endpoint for several intervals.
    """
    state.last_check_error = "" if ok else error
    if not state.checked:
        state.checked = True
        changed = state.active_healthy != ok
        state.active_healthy = ok
        state.streak = 0
        return changed
    if ok == state.active_healthy:
        state.streak = 0
        return False
    state.streak += 1
    threshold = settings.healthy_threshold if ok else settings.unhealthy_threshold
    if state.streak >= threshold:
        state.active_healthy = ok
        state.streak = 0
        return True
    return False


def record_passive_result(state: EndpointState, ok: bool, now: float, settings: PassiveHealth) -> bool:
    """Apply one real-traffic outcome; returns True when the endpoint was just ejected."""
    if ok:
        state.consecutive_failures = 0
        if state.ejections and not state.ejected(now):
            state.ejections -= 1
        return False
    state.consecutive_failures += 1
    if state.consecutive_failures < settings.consecutive_failures or state.ejected(now):
        return False
    state.ejections += 1
    duration = min(settings.base_ejection_s * 2 ** (state.ejections - 1), settings.max_ejection_s)
    state.ejected_until = now + duration
    state.consecutive_failures = 0
    return True

"""Retry decisions and the retry budget that keeps retries from multiplying
load during an outage. Pure; used by the proxy handler."""

from __future__ import annotations

from .clock import Clock
from .config import Retry
from .windows import RollingCounter

_REQUESTS, _RETRIES = 0, 1
_BUDGET_WINDOW_S = 10.0


class RetryBudget:
    """Retries may add at most `budget_percent` of requests over the last 10 s,
    with a floor of `min_retries_per_s` so that a quiet service can still retry."""

    def __init__(self, policy: Retry, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._window = RollingCounter(_BUDGET_WINDOW_S, buckets=10, series=2)

    def record_request(self) -> None:
        self._window.add(self._clock.monotonic(), _REQUESTS)

    def try_acquire(self) -> bool:
        now = self._clock.monotonic()
        requests, retries = self._window.totals(now)
        allowed = max(self._policy.min_retries_per_s * _BUDGET_WINDOW_S, requests * self._policy.budget_percent / 100)
        if retries + 1 > allowed:
            return False
        self._window.add(now, _RETRIES)
        return True


def may_retry_method(policy: Retry, method: str, has_body: bool) -> bool:
    """A request is replayable when its method is allowed and it has no streamed body."""
    return method in policy.methods and not has_body


def is_retryable_status(policy: Retry, status: int) -> bool:
    return status in policy.on_statuses

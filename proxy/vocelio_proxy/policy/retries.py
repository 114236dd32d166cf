"""Retry decisions, the retry budget that keeps retries from multiplying load
during an outage, and the deadline arithmetic that keeps retries from
multiplying the time a client waits.

The deadline model (Envoy's route `timeout` and `per_try_timeout`): a request
has one deadline, `timeouts.request_s` after it was routed, for its response
head. Each attempt gets min(`per_try_s`, time left) for connect, upload and
response head; a connect gets at most min(`connect_s`, the attempt's time); no
retry starts with less than `retry_floor_s` left. So the time to a response
head (or the 504) is at most `request_s`, whatever `attempts` says.

`retry_after_error` and `retry_after_status` are the whole retry decision for
one failed attempt; the proxy handler asks them and only moves bytes.

Pure; used by the proxy handler."""

from __future__ import annotations

from dataclasses import dataclass

from vocelio_contract.config import Retry, Timeouts
from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.counting_window import RollingCounter

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


def attempt_budget(timeouts: Timeouts, left_s: float) -> float:
    """Seconds one attempt may take when `left_s` of the deadline remain."""
    per_try = timeouts.per_try_s
    return left_s if per_try is None or per_try > left_s else per_try


def connect_budget(timeouts: Timeouts, attempt_s: float) -> float:
    """Seconds a new connection may take within an attempt of `attempt_s`."""
    return timeouts.connect_s if timeouts.connect_s < attempt_s else attempt_s


def may_start_retry(timeouts: Timeouts, left_s: float) -> bool:
    """A retry starts only while enough of the deadline is left to be worth it."""
    return left_s > 0 and left_s >= timeouts.retry_floor_s


@dataclass(frozen=True, slots=True)
class Attempt:
    """Where a request stands after a failed attempt: which attempt it was (from
    1), whether the request may be replayed (`may_retry_method`), and how much of
    its deadline is left."""

    number: int
    replayable: bool
    left_s: float


def retry_after_error(policy: Retry, timeouts: Timeouts, budget: RetryBudget, attempt: Attempt, *, kind: str,
                      reused: bool, response_started: bool) -> str | None:
    """Whether to retry an attempt that failed with an upstream error of `kind`
    ("connect", "timeout", "reset", "protocol"), and the reason label it is counted
    under, or None to answer the failure.

    A connect failure never reached the upstream, so any request may retry it; other
    errors retry only replayable requests. A reset of a reused (pooled) connection
    before any answer is a stale keep-alive connection the upstream had closed: a
    replayable request gets one attempt more and takes nothing from the retry
    budget ("stale"). Every
    retry needs `may_start_retry`; every other retry takes a token from the budget."""
    stale = reused and kind == "reset" and not response_started
    limit = policy.attempts + (1 if stale else 0)
    if not ((kind == "connect" or attempt.replayable) and attempt.number < limit
            and may_start_retry(timeouts, attempt.left_s)):
        return None
    if stale:
        return "stale"
    return kind if budget.try_acquire() else None


def retry_after_status(policy: Retry, timeouts: Timeouts, budget: RetryBudget, attempt: Attempt,
                       status: int) -> bool:
    """Whether to retry an attempt the upstream answered with `status`: a retryable
    status, a replayable request, attempts and deadline left, and a budget token."""
    return (is_retryable_status(policy, status) and attempt.replayable and attempt.number < policy.attempts
            and may_start_retry(timeouts, attempt.left_s) and budget.try_acquire())

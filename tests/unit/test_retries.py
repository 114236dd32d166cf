"""Retry policy, the retry budget, and the deadline arithmetic of attempts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_contract.config import Retry, Timeouts
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.policy.retries import (
    Attempt,
    RetryBudget,
    attempt_budget,
    connect_budget,
    is_retryable_status,
    may_retry_method,
    may_start_retry,
    retry_after_error,
    retry_after_status,
)


def test_only_idempotent_bodiless_requests_are_replayed() -> None:
    policy = Retry()
    assert may_retry_method(policy, "GET", has_body=False)
    assert not may_retry_method(policy, "POST", has_body=False)
    assert not may_retry_method(policy, "PUT", has_body=True)


def test_gateway_statuses_are_retryable_by_default() -> None:
    policy = Retry()
    assert all(is_retryable_status(policy, s) for s in (502, 503, 504))
    assert not is_retryable_status(policy, 500)


def test_the_budget_caps_retries_to_a_share_of_requests() -> None:
    clock = ManualClock()
    budget = RetryBudget(Retry(budget_percent=10, min_retries_per_s=0.1), clock)
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_acquire() for _ in range(50))
    assert granted == 10


def test_the_budget_has_a_floor_for_quiet_services() -> None:
    budget = RetryBudget(Retry(budget_percent=10, min_retries_per_s=1), ManualClock())
    budget.record_request()
    assert sum(budget.try_acquire() for _ in range(20)) == 10


def test_the_budget_refills_as_the_window_moves() -> None:
    clock = ManualClock()
    budget = RetryBudget(Retry(budget_percent=0, min_retries_per_s=0.2), clock)
    assert sum(budget.try_acquire() for _ in range(5)) == 2
    clock.advance(11)
    assert budget.try_acquire()


# -- deadlines ------------------------------------------------------------------------


def test_without_a_per_try_limit_an_attempt_may_use_all_the_time_left() -> None:
    assert attempt_budget(Timeouts(request_s=2), 1.5) == 1.5


def test_an_attempt_gets_the_smaller_of_its_limit_and_the_time_left() -> None:
    timeouts = Timeouts(request_s=2, per_try_s=0.5)
    assert attempt_budget(timeouts, 1.5) == 0.5
    assert attempt_budget(timeouts, 0.2) == 0.2


def test_a_connect_never_outlives_its_attempt() -> None:
    timeouts = Timeouts(connect_s=2)
    assert connect_budget(timeouts, 5) == 2
    assert connect_budget(timeouts, 0.3) == 0.3


def test_no_retry_starts_below_the_floor_or_past_the_deadline() -> None:
    timeouts = Timeouts(retry_floor_s=0.1)
    assert may_start_retry(timeouts, 0.1)
    assert not may_start_retry(timeouts, 0.09)
    assert not may_start_retry(Timeouts(retry_floor_s=0), 0)
    assert not may_start_retry(Timeouts(retry_floor_s=0), -0.5)


@given(request_s=st.floats(0.05, 60), per_try=st.one_of(st.none(), st.floats(0.01, 60)),
       attempts=st.integers(1, 10), used=st.lists(st.floats(0, 1), min_size=10, max_size=10))
def test_attempts_never_add_up_past_the_deadline(request_s: float, per_try: float | None, attempts: int,
                                                   used: list[float]) -> None:
    """However each attempt ends (used: the share of its budget it took), the time
    spent in attempts stays within `request_s`."""
    timeouts = Timeouts(request_s=request_s, per_try_s=per_try)
    left = request_s
    spent = 0.0
    for attempt in range(attempts):
        if attempt and not may_start_retry(timeouts, left):
            break
        budget = attempt_budget(timeouts, left)
        assert budget <= left + 1e-12
        took = budget * used[attempt]
        spent += took
        left -= took
    assert spent <= request_s + 1e-9


# -- the retry decision for one failed attempt ---------------------------------------------

TIMEOUTS = Timeouts(request_s=10, retry_floor_s=0.05)


def roomy_budget() -> RetryBudget:
    return RetryBudget(Retry(min_retries_per_s=10), ManualClock())


def empty_budget() -> RetryBudget:
    budget = RetryBudget(Retry(budget_percent=0, min_retries_per_s=0), ManualClock())
    assert not budget.try_acquire()
    return budget


@pytest.mark.parametrize(("kind", "replayable", "expected"), [
    ("connect", False, "connect"),  # never reached the upstream: any request may go elsewhere
    ("connect", True, "connect"),
    ("timeout", True, "timeout"),
    ("timeout", False, None),  # the upstream may have acted on it
    ("reset", False, None),
    ("protocol", True, "protocol"),
])
def test_an_upstream_error_is_retried_only_when_replaying_cannot_repeat_an_effect(
        kind: str, replayable: bool, expected: str | None) -> None:
    decision = retry_after_error(Retry(), TIMEOUTS, roomy_budget(), Attempt(1, replayable, 5.0), kind=kind,
                                 reused=False, response_started=False)
    assert decision == expected


def test_the_last_attempt_is_not_retried() -> None:
    assert retry_after_error(Retry(attempts=2), TIMEOUTS, roomy_budget(), Attempt(2, True, 5.0), kind="connect",
                             reused=False, response_started=False) is None


def test_a_retry_needs_the_deadline_floor() -> None:
    assert retry_after_error(Retry(), TIMEOUTS, roomy_budget(), Attempt(1, True, 0.01), kind="connect",
                             reused=False, response_started=False) is None


def test_an_exhausted_budget_stops_retries() -> None:
    assert retry_after_error(Retry(), TIMEOUTS, empty_budget(), Attempt(1, True, 5.0), kind="connect",
                             reused=False, response_started=False) is None


def test_a_stale_pooled_connection_gets_one_more_attempt_outside_the_budget() -> None:
    # A reset of a reused connection before any answer: the upstream had closed it while idle.
    decision = retry_after_error(Retry(attempts=2), TIMEOUTS, empty_budget(), Attempt(2, True, 5.0), kind="reset",
                                 reused=True, response_started=False)
    assert decision == "stale"
    assert retry_after_error(Retry(attempts=2), TIMEOUTS, empty_budget(), Attempt(3, True, 5.0), kind="reset",
                             reused=True, response_started=False) is None
    # Still a replay: a request that is not replayable is not sent again.
    assert retry_after_error(Retry(attempts=2), TIMEOUTS, empty_budget(), Attempt(1, False, 5.0), kind="reset",
                             reused=True, response_started=False) is None


@pytest.mark.parametrize(("reused", "started", "kind"), [
    (False, False, "reset"),  # a fresh connection's reset is the upstream's doing
    (True, True, "reset"),  # the upstream had started answering
    (True, False, "timeout"),
])
def test_only_a_reset_before_any_answer_on_a_reused_connection_is_stale(reused: bool, started: bool,
                                                                       kind: str) -> None:
    assert retry_after_error(Retry(attempts=2), TIMEOUTS, roomy_budget(), Attempt(2, True, 5.0), kind=kind,
                             reused=reused, response_started=started) is None


def test_a_stale_retry_still_needs_the_deadline() -> None:
    assert retry_after_error(Retry(), TIMEOUTS, roomy_budget(), Attempt(1, True, 0.0), kind="reset",
                             reused=True, response_started=False) is None


@pytest.mark.parametrize(("status", "replayable", "number", "left", "expected"), [
    (503, True, 1, 5.0, True),
    (500, True, 1, 5.0, False),  # not in on_statuses
    (503, False, 1, 5.0, False),  # not replayable
    (503, True, 2, 5.0, False),  # last attempt
    (503, True, 1, 0.01, False),  # under the deadline floor
])
def test_an_upstream_status_is_retried_by_the_policy(status: int, replayable: bool, number: int, left: float,
                                                     expected: bool) -> None:
    assert retry_after_status(Retry(), TIMEOUTS, roomy_budget(), Attempt(number, replayable, left), status) is expected


def test_a_status_retry_takes_a_budget_token() -> None:
    assert not retry_after_status(Retry(), TIMEOUTS, empty_budget(), Attempt(1, True, 5.0), 503)
    budget = RetryBudget(Retry(budget_percent=0, min_retries_per_s=0.1), ManualClock())  # one token per 10 s
    assert retry_after_status(Retry(), TIMEOUTS, budget, Attempt(1, True, 5.0), 503)
    assert not retry_after_status(Retry(), TIMEOUTS, budget, Attempt(1, True, 5.0), 503)

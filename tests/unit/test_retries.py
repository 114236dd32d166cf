"""Retry policy, the retry budget, and the deadline arithmetic of attempts."""

from hypothesis import given
from hypothesis import strategies as st

from vocelio_contract.config import Retry, Timeouts
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.policy.retries import (
    RetryBudget,
    attempt_budget,
    connect_budget,
    is_retryable_status,
    may_retry_method,
    may_start_retry,
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

"""Retry policy and the retry budget."""

from vocelio_proxy.clock import ManualClock
from vocelio_proxy.config import Retry
from vocelio_proxy.retries import RetryBudget, is_retryable_status, may_retry_method


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

"""Circuit breaker transitions with an injected clock."""

from vocelio_proxy.breakers import Breaker, BreakerState
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.config import CircuitBreaker


def breaker(**kw: object) -> tuple[Breaker, ManualClock]:
    clock = ManualClock()
    settings = CircuitBreaker(**{"consecutive_failures": 3, "open_s": 10, "half_open_max_probes": 2,
                                 "min_requests": 10, "error_rate_percent": 50, "window_s": 10, **kw})  # type: ignore[arg-type]
    return Breaker(settings, clock), clock


def test_consecutive_failures_open_the_breaker() -> None:
    b, _ = breaker()
    for _ in range(2):
        b.record(False)
    assert b.state is BreakerState.CLOSED
    b.record(False)
    assert b.state is BreakerState.OPEN


def test_an_open_breaker_refuses_with_the_remaining_open_time() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.record(False)
    clock.advance(4)
    admission = b.allow()
    assert not admission.allowed
    assert admission.retry_after_s == 6


def test_a_success_resets_the_consecutive_count() -> None:
    b, _ = breaker(error_rate_percent=90)
    for _ in range(5):
        b.record(False)
        b.record(True)
    assert b.state is BreakerState.CLOSED


def test_error_rate_over_the_window_opens_after_the_minimum_requests() -> None:
    b, _ = breaker(consecutive_failures=100)
    for _ in range(4):
        b.record(True)
        b.record(False)
    assert b.state is BreakerState.CLOSED  # 8 requests < min 10
    b.record(True)
    b.record(False)
    assert b.state is BreakerState.OPEN  # 5/10 failed = 50%


def test_old_outcomes_leave_the_window() -> None:
    b, clock = breaker(consecutive_failures=100)
    for _ in range(4):
        b.record(False)
        b.record(True)
    assert b.state is BreakerState.CLOSED  # 8 requests: under the minimum
    clock.advance(11)
    for _ in range(9):
        b.record(True)
    b.record(False)
    assert b.state is BreakerState.CLOSED


def test_half_open_admits_a_bounded_number_of_probes_then_closes_on_success() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.record(False)
    clock.advance(10)
    assert b.state is BreakerState.HALF_OPEN
    first, second, third = b.allow(), b.allow(), b.allow()
    assert first.allowed and first.probe and second.allowed
    assert not third.allowed
    b.record(True, probe=True)
    assert b.state is BreakerState.HALF_OPEN
    b.record(True, probe=True)
    assert b.state is BreakerState.CLOSED
    assert b.allow().allowed


def test_a_failed_probe_reopens_the_breaker() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.record(False)
    clock.advance(10)
    assert b.allow().probe
    b.record(False, probe=True)
    assert b.state is BreakerState.OPEN
    assert not b.allow().allowed


def test_a_disabled_breaker_always_admits() -> None:
    b, _ = breaker(enabled=False)
    for _ in range(10):
        b.record(False)
    assert b.allow().allowed

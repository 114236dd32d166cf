"""Circuit breaker transitions with an injected clock, and the guarantee that it
cannot wedge: every admission is settled (record or release), an unsettled
probe frees its slot after the probe timeout, and a generated sequence of
operations never leaves half-open without a free slot for good."""

from __future__ import annotations

from typing import Any, NamedTuple

from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vocelio_contract.config import CircuitBreaker, Service, Timeouts
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.policy.breakers import Admission, Breaker, BreakerState
from vocelio_proxy.process.routing_state import default_probe_timeout


def state_of(breaker: Breaker) -> BreakerState:
    """The breaker's state, read through a call so the checker does not carry an
    earlier `is` narrowing across the calls that change it."""
    return breaker.state

def breaker(probe_timeout_s: float = 5.0, **kw: Any) -> tuple[Breaker, ManualClock]:
    clock = ManualClock()
    settings = CircuitBreaker(**{"consecutive_failures": 3, "open_s": 10, "half_open_max_probes": 2,
                                 "min_requests": 10, "error_rate_percent": 50, "window_s": 10, **kw})
    return Breaker(settings, clock, probe_timeout_s), clock


def tripped(**kw: Any) -> tuple[Breaker, ManualClock]:
    """A breaker that has just opened."""
    b, clock = breaker(**kw)
    for _ in range(3):
        b.record(False)
    assert state_of(b) is BreakerState.OPEN
    return b, clock


def half_open(**kw: Any) -> tuple[Breaker, ManualClock]:
    b, clock = tripped(**kw)
    clock.advance(10)
    assert state_of(b) is BreakerState.HALF_OPEN
    return b, clock


def test_consecutive_failures_open_the_breaker() -> None:
    b, _ = breaker()
    for _ in range(2):
        b.record(False)
    assert state_of(b) is BreakerState.CLOSED
    b.record(False)
    assert state_of(b) is BreakerState.OPEN


def test_an_open_breaker_refuses_with_the_remaining_open_time() -> None:
    b, clock = tripped()
    clock.advance(4)
    admission = b.allow()
    assert not admission.allowed
    assert admission.retry_after_s == 6


def test_a_success_resets_the_consecutive_count() -> None:
    b, _ = breaker(error_rate_percent=90)
    for _ in range(5):
        b.record(False)
        b.record(True)
    assert state_of(b) is BreakerState.CLOSED


def test_error_rate_over_the_window_opens_after_the_minimum_requests() -> None:
    b, _ = breaker(consecutive_failures=100)
    for _ in range(4):
        b.record(True)
        b.record(False)
    assert state_of(b) is BreakerState.CLOSED  # 8 requests < min 10
    b.record(True)
    b.record(False)
    assert state_of(b) is BreakerState.OPEN  # 5/10 failed = 50%


def test_old_outcomes_leave_the_window() -> None:
    b, clock = breaker(consecutive_failures=100)
    for _ in range(4):
        b.record(False)
        b.record(True)
    assert state_of(b) is BreakerState.CLOSED  # 8 requests: under the minimum
    clock.advance(11)
    for _ in range(9):
        b.record(True)
    b.record(False)
    assert state_of(b) is BreakerState.CLOSED


def test_a_closed_breaker_admits_without_a_probe_ticket() -> None:
    b, _ = breaker()
    admission = b.allow()
    assert admission.allowed
    assert admission.probe == 0


def test_the_open_time_passing_makes_the_breaker_half_open() -> None:
    b, clock = tripped()
    clock.advance(9.9)
    assert state_of(b) is BreakerState.OPEN
    clock.advance(0.1)
    assert state_of(b) is BreakerState.HALF_OPEN


def test_half_open_admits_a_bounded_number_of_probes_then_closes_on_success() -> None:
    b, _ = half_open()
    first, second, third = b.allow(), b.allow(), b.allow()
    assert first.allowed
    assert first.probe
    assert second.allowed
    assert second.probe != first.probe
    assert not third.allowed
    assert 0 < third.retry_after_s <= 1
    b.record(True, first.probe)
    assert state_of(b) is BreakerState.HALF_OPEN
    b.record(True, second.probe)
    assert state_of(b) is BreakerState.CLOSED
    assert b.allow() == Admission(True)


def test_a_failed_probe_reopens_the_breaker() -> None:
    b, _ = half_open()
    probe = b.allow()
    assert probe.probe
    b.record(False, probe.probe)
    assert state_of(b) is BreakerState.OPEN
    assert not b.allow().allowed


def test_a_released_probe_frees_its_slot_without_a_verdict() -> None:
    b, _ = half_open()
    first, second = b.allow(), b.allow()
    assert not b.allow().allowed
    b.release(first.probe)
    assert state_of(b) is BreakerState.HALF_OPEN  # no verdict: neither closed nor reopened
    third = b.allow()
    assert third.allowed
    assert third.probe
    b.record(True, second.probe)
    b.record(True, third.probe)
    assert state_of(b) is BreakerState.CLOSED


def test_settle_without_a_verdict_is_a_release_and_with_one_is_a_record() -> None:
    b, _ = half_open()
    first, second = b.allow(), b.allow()
    b.settle(first, None)
    assert b.probes_in_flight == 1
    assert state_of(b) is BreakerState.HALF_OPEN
    b.settle(second, False)
    assert state_of(b) is BreakerState.OPEN


def test_a_probe_that_never_finishes_frees_its_slot_after_the_probe_timeout() -> None:
    b, clock = half_open(probe_timeout_s=5)
    b.allow()
    b.allow()
    clock.advance(4.9)
    assert not b.allow().allowed
    assert b.probes_in_flight == 2
    clock.advance(0.1)
    assert b.probes_in_flight == 0
    assert b.allow().allowed


def test_the_retry_after_of_a_full_half_open_breaker_never_exceeds_the_probe_timeout() -> None:
    b, clock = half_open(probe_timeout_s=0.5)
    b.allow()
    b.allow()
    clock.advance(0.2)
    refused = b.allow()
    assert not refused.allowed
    assert abs(refused.retry_after_s - 0.3) < 1e-9


def test_a_late_verdict_from_an_expired_probe_still_counts() -> None:
    b, clock = half_open(probe_timeout_s=5)
    slow = b.allow()
    clock.advance(6)
    assert b.probes_in_flight == 0
    b.record(False, slow.probe)
    assert state_of(b) is BreakerState.OPEN


def test_a_probe_of_an_earlier_half_open_episode_gives_no_verdict() -> None:
    b, clock = half_open()
    old = b.allow()
    failed = b.allow()
    b.record(False, failed.probe)  # reopens; `old` is still out there
    clock.advance(10)
    assert state_of(b) is BreakerState.HALF_OPEN
    b.record(False, old.probe)
    assert state_of(b) is BreakerState.HALF_OPEN
    b.release(old.probe)
    assert b.probes_in_flight == 0


def test_requests_admitted_while_closed_give_no_verdict_in_half_open() -> None:
    b, _ = half_open()
    b.record(False)
    b.record(True)
    assert state_of(b) is BreakerState.HALF_OPEN


def test_a_disabled_breaker_always_admits() -> None:
    b, _ = breaker(enabled=False)
    for _ in range(10):
        b.record(False)
    assert b.allow().allowed


def test_the_probe_timeout_defaults_to_the_services_deadline_plus_a_connect() -> None:
    svc = Service(name="s", prefixes=["/s"], timeouts=Timeouts(request_s=7, connect_s=1))
    assert default_probe_timeout(svc) == 8
    b = Breaker(svc.circuit_breaker, ManualClock(), default_probe_timeout(svc))
    assert b.probe_timeout_s == 8
    configured = Breaker(CircuitBreaker(probe_timeout_s=2), ManualClock(), 8)
    assert configured.probe_timeout_s == 2


class Step(NamedTuple):
    """One step of the breaker machine, kept so the invariant can replay the history on a
    twin: "allow", "settle" (admission `position` with `verdict`), "forget" (admission
    `position`, never settled) or "advance" (the clock by `seconds`)."""

    kind: str
    position: int = 0
    verdict: bool | None = None
    seconds: float = 0.0


class _Run:
    """A breaker, its clock and the admissions it gave that nobody settled yet."""

    def __init__(self, settings: CircuitBreaker) -> None:
        self.clock = ManualClock()
        self.breaker = Breaker(settings, self.clock, probe_timeout_s=2)
        self.open: list[Admission] = []

    def apply(self, step: Step) -> None:
        if step.kind == "allow":
            admission = self.breaker.allow()
            if admission.allowed:
                self.open.append(admission)
        elif step.kind == "settle":
            self.breaker.settle(self.open.pop(step.position), step.verdict)
        elif step.kind == "forget":
            # A request whose owner never settles it (the bug the probe timeout exists for).
            self.open.pop(step.position)
        else:
            self.clock.advance(step.seconds)


class BreakerMachine(RuleBasedStateMachine):
    """Random admissions, verdicts, releases, forgotten probes and clock moves."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = CircuitBreaker(consecutive_failures=2, open_s=3, half_open_max_probes=2, min_requests=4,
                                       window_s=5)
        self.run = _Run(self.settings)
        self.steps: list[Step] = []

    def _do(self, step: Step) -> None:
        self.steps.append(step)
        self.run.apply(step)

    @rule()
    def allow(self) -> None:
        self._do(Step("allow"))

    @precondition(lambda self: self.run.open)
    @rule(index=st.integers(min_value=0), ok=st.booleans())
    def record(self, index: int, ok: bool) -> None:
        self._do(Step("settle", index % len(self.run.open), ok))

    @precondition(lambda self: self.run.open)
    @rule(index=st.integers(min_value=0))
    def release(self, index: int) -> None:
        self._do(Step("settle", index % len(self.run.open), None))

    @precondition(lambda self: self.run.open)
    @rule(index=st.integers(min_value=0))
    def forget(self, index: int) -> None:
        self._do(Step("forget", index % len(self.run.open)))

    @rule(seconds=st.floats(min_value=0, max_value=4, allow_nan=False))
    def advance(self, seconds: float) -> None:
        self._do(Step("advance", seconds=seconds))

    @invariant()
    def probe_slots_are_bounded(self) -> None:
        assert self.run.breaker.probes_in_flight <= self.settings.half_open_max_probes

    @invariant()
    def a_healthy_upstream_is_always_reachable_again(self) -> None:
        # Whatever happened, after the open time plus the probe timeout with no other
        # traffic, a request is admitted, and successful probes close the breaker. Checked
        # on a twin that replays the same history (the breaker is pure: same steps, same
        # state), so the machine's own breaker and clock are left as they are.
        twin = _Run(self.settings)
        for step in self.steps:
            twin.apply(step)
        assert twin.breaker.state is self.run.breaker.state
        future = twin.breaker
        twin.clock.advance(self.settings.open_s + future.probe_timeout_s + 0.001)
        for _ in range(self.settings.half_open_max_probes):
            admission = future.allow()
            assert admission.allowed, future.state
            future.settle(admission, True)
        assert future.state is BreakerState.CLOSED


TestBreakerNeverWedges = BreakerMachine.TestCase
TestBreakerNeverWedges.settings = hyp_settings(max_examples=150, stateful_step_count=40, deadline=None)

"""Per-service circuit breaker: closed -> open on consecutive failures or on an
error rate over a rolling window (with a minimum request count); open answers
without touching the upstream; half-open admits a bounded number of probes.

The breaker cannot wedge. Every admission is settled exactly once by its
owner: `record` with a verdict about the upstream, or `release` when there is
none (the client left, its body broke, the gateway failed before sending). The
proxy does this in one `finally` per request (`settle`), so no exit path can
skip it. And a probe that is never settled (a bug, a stuck stream) stops
holding its slot after `probe_timeout_s`: half-open can always admit again.

Pure; time comes from the injected clock. The proxy handler asks `allow`
before forwarding and `settle`s the admission when the request ends."""

from __future__ import annotations

import enum
from typing import NamedTuple

from vocelio_contract.config import CircuitBreaker as BreakerSettings
from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.counting_window import RollingCounter

_SUCCESS, _FAILURE = 0, 1


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        return {"closed": 0, "half_open": 1, "open": 2}[self.value]


class Admission(NamedTuple):
    """The breaker's answer to `allow`; settle it with `record` or `release`."""

    allowed: bool
    #: The probe's ticket (> 0) when this admission is a half-open probe, else 0.
    probe: int = 0
    retry_after_s: float = 0.0


#: The answer of a closed breaker (per request: allocated once).
_ADMIT = Admission(True)


class Breaker:
    def __init__(self, settings: BreakerSettings, clock: Clock, probe_timeout_s: float = 30.0) -> None:
        self._settings = settings
        self._clock = clock
        #: How long an unsettled probe holds its slot (the service's deadline by default).
        self.probe_timeout_s = settings.probe_timeout_s or probe_timeout_s
        self._window = RollingCounter(settings.window_s, buckets=10, series=2)
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        #: Unsettled probes of this half-open episode: ticket -> start time.
        self._probes: dict[int, float] = {}
        #: Tickets at or above this belong to the current half-open episode.
        self._episode = 1
        self._next_ticket = 1
        self._probes_ok = 0
        self.transitions = 0

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._open_elapsed() >= self._settings.open_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def probes_in_flight(self) -> int:
        """Probes holding a slot now (unsettled and younger than the probe timeout)."""
        if self._state is not BreakerState.HALF_OPEN:
            return 0
        self._expire_probes(self._clock.monotonic())
        return len(self._probes)

    def _open_elapsed(self) -> float:
        return self._clock.monotonic() - self._opened_at

    def _move(self, state: BreakerState) -> None:
        if state is not self._state:
            self.transitions += 1
        self._state = state
        # Whatever the new state, probes of the old episode no longer hold slots.
        self._probes.clear()
        self._probes_ok = 0
        self._episode = self._next_ticket
        if state is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
        if state is BreakerState.CLOSED:
            self._consecutive = 0
            self._window.reset()

    def _expire_probes(self, now: float) -> None:
        if not self._probes:
            return
        oldest_allowed = now - self.probe_timeout_s
        for ticket, started in list(self._probes.items()):
            if started <= oldest_allowed:
                del self._probes[ticket]

    def allow(self) -> Admission:
        if self._state is BreakerState.CLOSED or not self._settings.enabled:
            return _ADMIT
        if self._state is BreakerState.OPEN:
            remaining = self._settings.open_s - self._open_elapsed()
            if remaining > 0:
                return Admission(False, retry_after_s=remaining)
            self._move(BreakerState.HALF_OPEN)
        now = self._clock.monotonic()
        self._expire_probes(now)
        if len(self._probes) >= self._settings.half_open_max_probes:
            # The earliest moment a slot frees up without any probe finishing.
            wait = min(self._probes.values()) + self.probe_timeout_s - now
            return Admission(False, retry_after_s=max(0.0, min(1.0, wait)))
        ticket = self._next_ticket
        self._next_ticket += 1
        self._probes[ticket] = now
        return Admission(True, probe=ticket)

    def settle(self, admission: Admission, verdict: bool | None) -> None:
        """End an admission: `verdict` True/False is the upstream's success or failure,
        None means no verdict (the slot is freed without counting anything)."""
        if verdict is None:
            self.release(admission.probe)
        else:
            self.record(verdict, admission.probe)

    def release(self, probe: int = 0) -> None:
        """An admission ended without a verdict about the upstream: free its probe slot."""
        if probe:
            self._probes.pop(probe, None)

    def record(self, success: bool, probe: int = 0) -> None:
        """The verdict of an admitted request; `probe` is its admission's ticket."""
        if not self._settings.enabled:
            return
        if self._state is BreakerState.HALF_OPEN:
            if probe < self._episode:
                # A request admitted before this episode: its outcome says nothing new.
                return
            # This episode's probe; a late one (past the probe timeout) still gives its verdict.
            self._probes.pop(probe, None)
            if not success:
                self._move(BreakerState.OPEN)
                return
            self._probes_ok += 1
            if self._probes_ok >= self._settings.half_open_max_probes:
                self._move(BreakerState.CLOSED)
            return
        if self._state is BreakerState.OPEN:
            return
        now = self._clock.monotonic()
        self._window.add(now, _SUCCESS if success else _FAILURE)
        if success:
            # A success can only lower the error rate: nothing to evaluate.
            self._consecutive = 0
            return
        self._consecutive += 1
        if self._consecutive >= self._settings.consecutive_failures:
            self._move(BreakerState.OPEN)
            return
        ok, failed = self._window.totals(now)
        total = ok + failed
        if total >= self._settings.min_requests and failed * 100 >= self._settings.error_rate_percent * total:
            self._move(BreakerState.OPEN)

"""Per-service circuit breaker: closed -> open on consecutive failures or on an
error rate over a rolling window (with a minimum request count); open answers
without touching the upstream; half-open admits a bounded number of probes.
Pure; the proxy handler asks `allow` before forwarding and `record` after."""

from __future__ import annotations

import enum
from typing import NamedTuple

from .clock import Clock
from .config import CircuitBreaker as BreakerSettings
from .windows import RollingCounter

_SUCCESS, _FAILURE = 0, 1


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        return {"closed": 0, "half_open": 1, "open": 2}[self.value]


class Admission(NamedTuple):
    allowed: bool
    probe: bool = False
    retry_after_s: float = 0.0


#: The answer of a closed breaker (per request: allocated once).
_ADMIT = Admission(True)


class Breaker:
    def __init__(self, settings: BreakerSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._window = RollingCounter(settings.window_s, buckets=10, series=2)
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probes_started = 0
        self._probes_ok = 0
        self.transitions = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._open_elapsed() >= self._settings.open_s:
            return BreakerState.HALF_OPEN
        return self._state

    def _open_elapsed(self) -> float:
        return self._clock.monotonic() - self._opened_at

    def _move(self, state: BreakerState) -> None:
        if state is not self._state:
            self.transitions += 1
        self._state = state
        if state is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
        if state is BreakerState.HALF_OPEN:
            self._probes_started = 0
            self._probes_ok = 0
        if state is BreakerState.CLOSED:
            self._consecutive = 0
            self._window.reset()

    def allow(self) -> Admission:
        if self._state is BreakerState.CLOSED or not self._settings.enabled:
            return _ADMIT
        if self._state is BreakerState.OPEN:
            remaining = self._settings.open_s - self._open_elapsed()
            if remaining > 0:
                return Admission(False, retry_after_s=remaining)
            self._move(BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN:
            if self._probes_started >= self._settings.half_open_max_probes:
                return Admission(False, retry_after_s=1.0)
            self._probes_started += 1
            return Admission(True, probe=True)
        return _ADMIT

    def record(self, success: bool, probe: bool = False) -> None:
        if not self._settings.enabled:
            return
        now = self._clock.monotonic()
        if self._state is BreakerState.HALF_OPEN:
            if not probe:
                return
            if not success:
                self._move(BreakerState.OPEN)
                return
            self._probes_ok += 1
            if self._probes_ok >= self._settings.half_open_max_probes:
                self._move(BreakerState.CLOSED)
            return
        if self._state is BreakerState.OPEN:
            return
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

"""A rolling time window of counters in fixed buckets, shared by the circuit
breaker and the retry budget. Pure; time comes from the caller."""

from __future__ import annotations


class RollingCounter:
    """Counts events per named series over the last `window_s` seconds."""

    def __init__(self, window_s: float, buckets: int = 10, series: int = 2) -> None:
        self._width = window_s / buckets
        self._counts = [[0] * series for _ in range(buckets)]
        self._stamps = [-1] * buckets
        self._buckets = buckets
        self._series = series

    def _slot(self, now: float) -> int:
        tick = int(now // self._width)
        slot = tick % self._buckets
        if self._stamps[slot] != tick:
            self._stamps[slot] = tick
            self._counts[slot] = [0] * self._series
        return slot

    def add(self, now: float, series: int, amount: int = 1) -> None:
        self._counts[self._slot(now)][series] += amount

    def totals(self, now: float) -> list[int]:
        tick = int(now // self._width)
        out = [0] * self._series
        for slot in range(self._buckets):
            if tick - self._buckets < self._stamps[slot] <= tick:
                for i, value in enumerate(self._counts[slot]):
                    out[i] += value
        return out

    def reset(self) -> None:
        self._stamps = [-1] * self._buckets

"""Rate-limit arithmetic: tier selection, the sliding-window estimate, the
response headers, and an in-process limiter with the same arithmetic (the
standalone default and the fail-open fallback) with a bounded caller table.
Pure; time comes from the caller.

The sliding window keeps two fixed buckets per key (this window and the
previous one) and estimates the requests in the last `window` seconds as
`previous * (1 - elapsed / window) + current`. It assumes the previous
window's requests were spread evenly; at worst (all of them at its very end)
it undercounts them by the elapsed share, so a caller can exceed the limit by
at most that share of the previous window's count, for one window.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from vocelio_contract.config import RateTier, Service
from vocelio_proxy.policy.auth.identity import Identity


class LimitCheck(NamedTuple):
    """One limit applied to one caller (a tuple: cheap to build and hash per request)."""

    name: str  # tier name, or "service:<id>"
    bucket: str  # caller key, e.g. "ip:1.2.3.4"
    limit: int
    window_s: int

    def window_index(self, now: float) -> int:
        return int(now // self.window_s)


class LimitResult:
    """One limit's decision for one request. Built per request: a plain class (a direct
    allocation when compiled; a NamedTuple goes through its Python `__new__`, about seven
    times slower). Read-only by convention; compared by value."""

    __slots__ = ("allowed", "check", "remaining", "reset_at", "retry_after_s")

    def __init__(self, check: LimitCheck, allowed: bool, remaining: int, reset_at: int,
                 retry_after_s: float) -> None:
        self.check = check
        self.allowed = allowed
        self.remaining = remaining
        self.reset_at = reset_at  # epoch seconds when the current window ends
        self.retry_after_s = retry_after_s

    def _fields(self) -> tuple[LimitCheck, bool, int, int, float]:
        return self.check, self.allowed, self.remaining, self.reset_at, self.retry_after_s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LimitResult) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"LimitResult(check={self.check!r}, allowed={self.allowed!r}, remaining={self.remaining!r}, "
                f"reset_at={self.reset_at!r}, retry_after_s={self.retry_after_s!r})")


def matches(tier: RateTier, identity: Identity, route_class: str | None) -> bool:
    kind = tier.match.kind
    if kind == "anonymous":
        return not identity.authenticated
    if kind == "authenticated":
        return identity.method == "jwt"
    if kind == "api-key":
        return identity.method == "api-key"
    if kind == "route-class":
        return route_class is not None and route_class == tier.match.value
    attr = tier.match.attribute or ""
    return identity.attributes.get(attr) == tier.match.value


def select_tier(tiers: Sequence[RateTier], identity: Identity, route_class: str | None) -> RateTier | None:
    """The matching tier with the highest priority (ties: name order), or None."""
    best: RateTier | None = None
    for tier in tiers:
        if matches(tier, identity, route_class) and (
                best is None or (tier.priority, best.name) > (best.priority, tier.name)):
            best = tier
    return best


def checks_for(tiers: Sequence[RateTier], service: Service, identity: Identity) -> list[LimitCheck]:
    checks = []
    tier = select_tier(tiers, identity, service.route_class)
    if tier is not None:
        checks.append(LimitCheck(tier.name, identity.key_for(tier.key_by), tier.requests, tier.window_s))
    if service.rate_limit is not None:
        rl = service.rate_limit
        checks.append(LimitCheck(f"service:{service.id}", identity.key_for(rl.key_by), rl.requests, rl.window_s))
    return checks


def estimate(previous: int, current: int, now: float, window_s: int) -> float:
    elapsed = now - (now // window_s) * window_s
    return previous * (1 - elapsed / window_s) + current


def result_for(check: LimitCheck, previous: int, current: int, now: float, allowed: bool) -> LimitResult:
    """`current` includes this request when it was admitted."""
    used = estimate(previous, current, now, check.window_s)
    window_end = (check.window_index(now) + 1) * check.window_s
    remaining = max(0, math.floor(check.limit - used))
    retry_after = 0.0
    # A refused request's limits that had room did not refuse it: they never tell the client
    # to wait (a roomy hourly limit beside an exhausted per-minute tier would otherwise say
    # "retry in an hour"). The refusing limit's time is when it admits again.
    if not allowed and used + 1 > check.limit:
        # When the previous bucket has decayed enough for one more request, or the window rolls over.
        elapsed = now - check.window_index(now) * check.window_s
        if previous > 0:
            need = (previous * (1 - elapsed / check.window_s) + current + 1 - check.limit) / previous
            retry_after = min(max(need * check.window_s, 1.0), window_end - now)
        else:
            retry_after = max(window_end - now, 1.0)
    return LimitResult(check, allowed, remaining, math.ceil(window_end), retry_after)


def headers_for(results: Sequence[LimitResult]) -> dict[str, str]:
    """X-RateLimit-* for the most restrictive limit, and the IETF RateLimit fields for all."""
    if not results:
        return {}
    if len(results) == 1:  # the common case, per request: no sorting or joining
        only = results[0]
        check = only.check
        return {
            "X-RateLimit-Limit": str(check.limit),
            "X-RateLimit-Remaining": str(only.remaining),
            "X-RateLimit-Reset": str(only.reset_at),
            "RateLimit-Policy": f'"{check.name}";q={check.limit};w={check.window_s}',
        }
    tightest = min(results, key=lambda r: (r.allowed, r.remaining))
    now_reset = tightest.reset_at
    headers = {
        "X-RateLimit-Limit": str(tightest.check.limit),
        "X-RateLimit-Remaining": str(tightest.remaining),
        "X-RateLimit-Reset": str(now_reset),
        "RateLimit-Policy": ", ".join(f'"{r.check.name}";q={r.check.limit};w={r.check.window_s}' for r in results),
    }
    return headers


def ietf_ratelimit(results: Sequence[LimitResult], now: float) -> str:
    if len(results) == 1:  # the common case, per request: no generator or joining
        only = results[0]
        return f'"{only.check.name}";r={only.remaining};t={max(0, int(only.reset_at - now))}'
    return ", ".join(f'"{r.check.name}";r={r.remaining};t={max(0, int(r.reset_at - now))}' for r in results)


class _Window:
    """One (limit, caller)'s two buckets: the window index of `current`, and when it was last used."""

    __slots__ = ("current", "index", "previous", "used_at")

    def __init__(self, index: int, previous: int, current: int, used_at: float) -> None:
        self.index = index
        self.previous = previous
        self.current = current
        self.used_at = used_at


#: Housekeeping cadence: every `_SWEEP_EVERY` decisions, drop up to `_SWEEP_MAX`
#: expired windows per window length (amortised: at most 4 per decision, no scan).
_SWEEP_EVERY = 256
_SWEEP_MAX = 1024
DEFAULT_MAX_TRACKED = 100_000


class MemoryLimiter:
    """Per-process sliding windows with the same arithmetic as the Redis script,
    for at most `max_tracked` (limit, caller) pairs.

    Windows are kept per window length in least-recently-used order (an
    `OrderedDict` per length: a window used later also expires later, so the
    expired ones of a length are always at its front). When the table is full, a
    new caller first displaces expired windows (they count as zero anyway: nothing
    changes), then the least recently used window of any length. An evicted
    caller starts again from zero, so eviction can only over-admit, never refuse:
    a caller is evicted only after `max_tracked` other (limit, caller) pairs were
    used since its own last request (every decision, admitted or refused, counts as
    use), so a caller that keeps sending is never evicted while a colder one
    exists, and each extra budget it gets (at most `limit` plus the decayed share
    of its previous window) costs requests from `max_tracked` distinct other
    callers in between. Each decision is O(1) amortised: dict operations, one
    comparison per window length when evicting, and bounded sweeps.
    """

    def __init__(self, max_tracked: int = DEFAULT_MAX_TRACKED) -> None:
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        self._max = max_tracked
        self._windows: dict[int, OrderedDict[tuple[str, str], _Window]] = {}
        self._size = 0
        self._decisions = 0
        #: Windows dropped to respect `max_tracked` while still live (not expired).
        self.evicted_live = 0

    def decide(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        rows = []
        for check in checks:
            window_s = check.window_s
            table = self._windows.get(window_s)
            if table is None:
                table = self._windows[window_s] = OrderedDict()
            idx = int(now // window_s)
            key = (check.name, check.bucket)
            entry = table.get(key)
            if entry is None:
                entry = table[key] = _Window(idx, 0, 0, now)
                self._size += 1
            else:
                table.move_to_end(key)
                entry.used_at = now
                if entry.index < idx:
                    # Roll the buckets forward: the previous window is the one just before now.
                    entry.previous = entry.current if entry.index == idx - 1 else 0
                    entry.current = 0
                    entry.index = idx
            rows.append((check, entry))
        allowed = all(estimate(e.previous, e.current + 1, now, ch.window_s) <= ch.limit for ch, e in rows)
        out = []
        for check, entry in rows:
            if allowed:
                entry.current += 1
            out.append(result_for(check, entry.previous, entry.current, now, allowed))
        self._decisions += 1
        if self._size > self._max:
            self._evict(now)
        elif self._decisions % _SWEEP_EVERY == 0:
            self._sweep(now, _SWEEP_MAX)
        return out

    def _sweep(self, now: float, budget: int) -> None:
        """Drop expired windows (both buckets older than the previous window) from the
        front of each length's LRU order, at most `budget` per length."""
        for window_s, table in self._windows.items():
            oldest_live = int(now // window_s) - 1
            dropped = 0
            while table and dropped < budget:
                key, entry = next(iter(table.items()))
                if entry.index >= oldest_live:
                    break
                del table[key]
                dropped += 1
            self._size -= dropped

    def _evict(self, now: float) -> None:
        self._sweep(now, _SWEEP_MAX)
        while self._size > self._max:
            # The least recently used window of any length: the oldest of the fronts.
            victim: OrderedDict[tuple[str, str], _Window] | None = None
            oldest = math.inf
            for table in self._windows.values():
                if table:
                    used = next(iter(table.values())).used_at
                    if used < oldest:
                        oldest, victim = used, table
            if victim is None:
                return
            victim.popitem(last=False)
            self._size -= 1
            self.evicted_live += 1

    def __len__(self) -> int:
        return self._size

"""Rate-limit decisions that do not wait for the store on every request: budget
leases and the over-limit cache. Pure arithmetic with the time passed in; the
Redis scripts that mirror `grant_units`, the batching and the background return
of leftovers live in `process.redis_limiter`, which is the only caller.

Leasing (`rate_limit.mode: lease`): a process takes a slice of a (limit,
caller)'s window budget from the store with one atomic script (`grant_units`:
at most what the sliding-window estimate leaves, so the store counts the slice
as used at once) and admits requests from it locally. It asks for the next
slice in the background when half of the current one is spent, and gives
unspent units back when the window ends or the lease has been idle for a sync
interval (`LeaseBook.collect`). Because every unit is counted in the store
before it is spent, and a unit is only spent in the window it was granted for,
each admission satisfies the exact sliding-window condition on the true counts:
leasing admits no more than exact mode. What it can do is refuse while other
processes hold unspent units: at most `lease + lease // 2` per process for the
current window, and the same for the previous window's estimate until the
leftovers are returned.

The over-limit cache (`OverLimitCache`, used by exact mode; leases keep the
same state in `_Lease.blocked_until`): after the store refused a caller, the
earliest time at which one more request could be admitted given the counts the
store returned (`free_at`). Counts in a window only grow, so refusing locally
until then gives the answers the store would give, without asking it.

Classes are plain and annotated (no dynamic attributes): the module may be
compiled with mypyc.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from vocelio_proxy.policy.ratelimits import LimitCheck, LimitResult, estimate, result_for

#: A refusal is cached at least this long past a zero grant, so that rounding between
#: the store's millisecond arithmetic and ours cannot make a lease fetch loop.
MIN_BLOCK_S = 0.001


def lease_size(limit: int, fraction: float, maximum: int) -> int:
    """Units one process asks for at a time: `fraction` of the limit, at least 1,
    at most `maximum`."""
    return max(1, min(maximum, int(limit * fraction)))


def grant_units(prev: int, cur: int, limit: int, window_ms: int, now_ms: int, want: int) -> int:
    """The store's grant (mirrored by the Lua script): as many of `want` units as
    the sliding-window estimate leaves, none below zero. Each granted unit is one
    that exact mode would admit next."""
    decayed = prev * (1 - (now_ms % window_ms) / window_ms)
    return max(0, min(want, math.floor(limit - decayed - cur)))


def exhausted(prev: int, cur: int, limit: int, window_ms: int, now_ms: int) -> bool:
    """The exact script's refusal condition for one limit, in its own (millisecond) arithmetic."""
    return prev * (1 - (now_ms % window_ms) / window_ms) + cur + 1 > limit


def refusal(result: LimitResult) -> LimitResult:
    """A refusing limit's result says nothing is left (the estimate may have decayed below
    the limit by a fraction of a request between the store's decision and now)."""
    return LimitResult(result.check, False, 0, result.reset_at, result.retry_after_s)


def free_at(check: LimitCheck, prev: int, cur: int, now: float) -> float:
    """The earliest time, not after the end of the current window, at which
    `estimate(prev, cur) + 1 <= limit` (the previous bucket decays); `now` when
    that already holds. At the window's end the buckets roll and the store has to
    be asked again."""
    window_s = check.window_s
    start = (now // window_s) * window_s
    end = start + window_s
    if estimate(prev, cur, now, window_s) + 1 <= check.limit:
        return now
    if prev <= 0 or cur + 1 > check.limit:
        return end
    elapsed = window_s * (prev + cur + 1 - check.limit) / prev
    return min(max(start + elapsed, now), end)


class OverLimitCache:
    """Callers the store refused, each until `free_at` of the counts it returned,
    with those counts (for the headers). Bounded: past `max_entries`, the refusals
    noted longest ago make room (expired or not). Every
    note is O(1) amortised: a caller rotating keys past their limits must not make
    each new refusal scan the table. Dropping a live refusal only sends that caller's
    next request to the store, which refuses it again: never an over-admission."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        # In note order (oldest first): eviction pops the front.
        self._blocked: OrderedDict[LimitCheck, tuple[float, int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocked)

    def note(self, check: LimitCheck, prev: int, cur: int, now: float) -> None:
        """The store's counts for `check` after a refused request."""
        until = free_at(check, prev, cur, now)
        if until <= now:
            return
        blocked = self._blocked
        if check in blocked:
            blocked.move_to_end(check)
        else:
            while blocked and len(blocked) >= self._max:
                blocked.popitem(last=False)
        blocked[check] = (until, prev, cur)

    def refused(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult] | None:
        """Refusals for the blocked ones among `checks`, or None when none is blocked."""
        out: list[LimitResult] | None = None
        for check in checks:
            entry = self._blocked.get(check)
            if entry is None:
                continue
            until, prev, cur = entry
            if until <= now:
                del self._blocked[check]
                continue
            if out is None:
                out = []
            out.append(refusal(result_for(check, prev, cur, now, False)))
        return out


class _Lease:
    """One (limit, caller)'s lease in one window: unspent units, the store's counts
    at the last grant (they include every unit granted to anyone, ours too), when it
    was last used, and until when the store has nothing left to grant."""

    def __init__(self, index: int, used_at: float, size: int) -> None:
        self.index = index
        self.size = size
        self.units = 0
        self.prev = 0
        self.cur = 0
        self.used_at = used_at
        self.blocked_until = 0.0


def _admitted(check: LimitCheck, lease: _Lease, now: float) -> LimitResult:
    """An admission's result: the store's counts at the last grant, plus our unspent
    units (the store counted them as used; they are this caller's too)."""
    window_s = check.window_s
    left = max(0, math.floor(check.limit - estimate(lease.prev, lease.cur, now, window_s)))
    window_end = (int(now // window_s) + 1) * window_s
    return LimitResult(check, True, min(check.limit, left + lease.units), window_end, 0.0)


class Take:
    """A local decision: `results` when every check had units or one is blocked;
    otherwise `missing` names the checks to fetch a lease for (nothing was spent).
    `refill`: checks whose units ran low (fetch in the background). Built per request:
    a plain class, not a NamedTuple (whose Python `__new__` is about seven times slower)."""

    __slots__ = ("missing", "refill", "results")

    def __init__(self, results: list[LimitResult], missing: list[LimitCheck], refill: list[LimitCheck]) -> None:
        self.results = results
        self.missing = missing
        self.refill = refill


class Leftover(NamedTuple):
    """Unspent units of a lease, to give back to window `window`'s bucket in the store."""

    check: LimitCheck
    window: int
    units: int


class LeaseBook:
    """One process's leases, at most `max_tracked` (least recently used beyond it;
    an evicted lease's units are given back). Every decision is O(1) amortised."""

    def __init__(self, fraction: float, maximum: int, max_tracked: int) -> None:
        if not 0 < fraction <= 1 or maximum < 1 or max_tracked < 1:
            raise ValueError("lease fraction must be in (0, 1], lease maximum and table size at least 1")
        self.fraction = fraction
        self.maximum = maximum
        self._max = max_tracked
        self._leases: OrderedDict[LimitCheck, _Lease] = OrderedDict()
        self._leftovers: list[Leftover] = []

    def __len__(self) -> int:
        return len(self._leases)

    def size(self, check: LimitCheck) -> int:
        return lease_size(check.limit, self.fraction, self.maximum)

    def held(self) -> int:
        """Unspent units held in all leases (for tests and metrics)."""
        return sum(lease.units for lease in self._leases.values())

    def ledger(self) -> dict[tuple[LimitCheck, int], int]:
        """Units the store counts for this process but no request has spent, by (check,
        window index): held in leases or waiting to be given back. The store's count of
        a window is the requests admitted in it plus every process's ledger for it."""
        out: dict[tuple[LimitCheck, int], int] = {}
        for check, lease in self._leases.items():
            if lease.units:
                out[(check, lease.index)] = out.get((check, lease.index), 0) + lease.units
        for row in self._leftovers:
            out[(row.check, row.window)] = out.get((row.check, row.window), 0) + row.units
        return out

    def _lease(self, check: LimitCheck, now: float) -> _Lease:
        index = check.window_index(now)
        lease = self._leases.get(check)
        if lease is None:
            lease = self._leases[check] = _Lease(index, now, self.size(check))
            if len(self._leases) > self._max:
                old_check, old = self._leases.popitem(last=False)
                if old.units > 0:
                    self._leftovers.append(Leftover(old_check, old.index, old.units))
            return lease
        self._leases.move_to_end(check)
        if lease.index != index:
            if lease.units > 0:
                self._leftovers.append(Leftover(check, lease.index, lease.units))
            # Until the next grant, the headers read the rolled buckets.
            lease.prev = lease.cur if lease.index == index - 1 else 0
            lease.cur = 0
            lease.units = 0
            lease.blocked_until = 0.0
            lease.index = index
        return lease

    def take(self, checks: Sequence[LimitCheck], now: float) -> Take:
        """Admit from held units (one from each check), refuse when a check is
        blocked, or name the checks that need a lease first."""
        if len(checks) == 1:  # the common case, per request: one tier, units in hand
            check = checks[0]
            lease = self._leases.get(check)
            if (lease is not None and lease.units >= 1 and lease.blocked_until <= now
                    and lease.index == int(now // check.window_s)):
                self._leases.move_to_end(check)
                lease.units -= 1
                lease.used_at = now
                return Take([_admitted(check, lease, now)], [], [check] if lease.units <= lease.size // 2 else [])
        leases = [self._lease(check, now) for check in checks]
        blocked = False
        missing: list[LimitCheck] = []
        for check, lease in zip(checks, leases, strict=True):
            if lease.blocked_until > now:
                blocked = True
            elif lease.units < 1:
                missing.append(check)
        if blocked:
            results = []
            for check, lease in zip(checks, leases, strict=True):
                result = result_for(check, lease.prev, lease.cur, now, False)
                results.append(refusal(result) if lease.blocked_until > now else result)
            return Take(results, [], [])
        if missing:
            return Take([], missing, [])
        results = []
        refill: list[LimitCheck] = []
        for check, lease in zip(checks, leases, strict=True):
            lease.units -= 1
            lease.used_at = now
            if lease.units <= lease.size // 2:
                refill.append(check)
            results.append(_admitted(check, lease, now))
        return Take(results, [], refill)

    def granted(self, check: LimitCheck, index: int, prev: int, cur: int, units: int, now: float) -> None:
        """The store's answer to a lease fetch for window `index`: its counts after
        the grant and the units granted (0: nothing left until `free_at`)."""
        lease = self._lease(check, now)
        if lease.index != index:
            # The window rolled while the fetch was on the wire: those units are the old window's.
            if units > 0:
                self._leftovers.append(Leftover(check, index, units))
            return
        lease.units += units
        lease.prev = prev
        lease.cur = cur
        lease.used_at = now
        if units == 0 and lease.units == 0:
            lease.blocked_until = max(free_at(check, prev, cur, now), now + MIN_BLOCK_S)

    def collect(self, now: float, idle_s: float) -> list[Leftover]:
        """Leftovers to give back: those of rolled or evicted leases, and the units of
        leases unused for `idle_s` (their windows may have ended). Idle leases that hold
        nothing and block nothing are dropped. Visits only the idle front of the table."""
        out = self._leftovers
        self._leftovers = []
        horizon = now - idle_s
        while self._leases:
            check, lease = next(iter(self._leases.items()))
            if lease.used_at > horizon:
                break
            if lease.units > 0:
                out.append(Leftover(check, lease.index, lease.units))
                lease.units = 0
            if lease.blocked_until > now:
                # Still refusing: keep it, behind the others (it is checked again after idle_s).
                lease.used_at = now
                self._leases.move_to_end(check)
                continue
            del self._leases[check]
        return out

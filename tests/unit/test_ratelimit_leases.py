"""The pure lease accounting and the over-limit cache against a reference model
of the store (the same arithmetic as the Redis scripts) with a fake clock:
several processes' `LeaseBook`s never admit a request that the exact sliding
window would refuse on the true counts, and refuse only when the true count is
within the documented bound of the limit; `OverLimitCache` in front of exact
decisions changes no decision."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from vocelio_proxy.policy.ratelimit_leases import (
    LeaseBook,
    OverLimitCache,
    free_at,
    grant_units,
    lease_size,
)
from vocelio_proxy.policy.ratelimits import LimitCheck, estimate

#: Float slack for comparing the store's millisecond arithmetic with seconds.
EPS = 1e-6


@dataclass
class Store:
    """The Redis side: one counter per (check, window index), as the scripts keep them."""

    counts: dict[tuple[LimitCheck, int], int] = field(default_factory=dict)

    def grant(self, check: LimitCheck, index: int, now_ms: int, want: int) -> tuple[int, int, int]:
        prev = self.counts.get((check, index - 1), 0)
        cur = self.counts.get((check, index), 0)
        window_ms = check.window_s * 1000
        # Written out here (not `grant_units`): the reference must not share the code it checks.
        units = 0
        while units < want and prev * (1 - (now_ms % window_ms) / window_ms) + cur + units + 1 <= check.limit:
            units += 1
        assert units == grant_units(prev, cur, check.limit, window_ms, now_ms, want)
        self.counts[(check, index)] = cur + units
        return prev, cur + units, units

    def give_back(self, check: LimitCheck, index: int, units: int) -> None:
        cur = self.counts.get((check, index), 0)
        self.counts[(check, index)] = max(0, cur - units)

    def exact(self, check: LimitCheck, now_ms: int) -> tuple[bool, int, int]:
        """The exact script for one request of one check: admitted, prev, cur after."""
        index = now_ms // (check.window_s * 1000)
        prev = self.counts.get((check, index - 1), 0)
        cur = self.counts.get((check, index), 0)
        decayed = prev * (1 - (now_ms % (check.window_s * 1000)) / (check.window_s * 1000))
        if decayed + cur + 1 > check.limit:
            return False, prev, cur
        self.counts[(check, index)] = cur + 1
        return True, prev, cur + 1


#: One step: milliseconds to advance, which process, and what it does
#: (0: a request, 1: the sync task runs, 2: a background refill arrives).
STEPS = st.lists(st.tuples(st.one_of(st.integers(0, 20), st.integers(0, 400)), st.integers(0, 3),
                           st.sampled_from([0, 0, 0, 0, 1, 2])),
                 min_size=1, max_size=400)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, limit=st.integers(1, 60), window_s=st.sampled_from([1, 2, 5]),
       fraction=st.sampled_from([0.05, 0.1, 0.25, 0.5]), maximum=st.integers(1, 8))
def test_leases_never_admit_what_the_exact_window_refuses_and_refuse_only_near_the_limit(
        steps: list[tuple[int, int, int]], limit: int, window_s: int, fraction: float, maximum: int) -> None:
    processes = 4
    check = LimitCheck("tier", "ip:1", limit, window_s)
    books = [LeaseBook(fraction, maximum, 1000) for _ in range(processes)]
    refills: list[list[int]] = [[] for _ in range(processes)]  # window indexes of refills on the wire
    store = Store()
    admitted: dict[int, int] = {}  # true admissions per window index
    held = lease_size(limit, fraction, maximum) * 3 // 2
    slack = 2 * processes * held + 2
    now_ms = 1_800_000_000_000
    for advance, who, kind in steps:
        now_ms += advance
        now = now_ms / 1000
        book = books[who]
        if kind == 1:
            for row in book.collect(now, 1.0):
                store.give_back(row.check, row.window, row.units)
            assert_conserved(store, admitted, books)
            continue
        if kind == 2:
            for index in refills[who]:
                prev, cur, units = store.grant(check, index, now_ms, book.size(check))
                book.granted(check, index, prev, cur, units, now)
            refills[who] = []
            assert_conserved(store, admitted, books)
            continue
        index = check.window_index(now)
        true_prev, true_cur = admitted.get(index - 1, 0), admitted.get(index, 0)
        true_estimate = estimate(true_prev, true_cur, now, window_s)
        for _ in range(3):  # a request fetches and takes again; each round grants or blocks
            take = book.take([check], now)
            if not take.missing:
                break
            prev, cur, units = store.grant(check, index, now_ms, book.size(check))
            book.granted(check, index, prev, cur, units, now)
        assert not take.missing
        (result,) = take.results
        if take.refill and index not in refills[who]:
            refills[who].append(index)
        if result.allowed:
            # The exact sliding window on the true counts admits it too.
            assert true_estimate + 1 <= limit + EPS, (true_prev, true_cur, now)
            admitted[index] = true_cur + 1
            assert 0 <= result.remaining <= limit
        else:
            # Refused only when the true count is within the bound of the limit.
            assert true_estimate + 1 > limit - slack, (true_prev, true_cur, now, slack)
            assert result.remaining == 0
            assert result.retry_after_s > 0
        # The store never counts more than the limit in a window.
        assert store.counts.get((check, index), 0) <= limit
        assert_conserved(store, admitted, books)


def assert_conserved(store: Store, admitted: dict[int, int], books: list[LeaseBook]) -> None:
    """Every unit the store counts is an admitted request or in some process's ledger."""
    unspent: dict[tuple[LimitCheck, int], int] = {}
    for book in books:
        for key, units in book.ledger().items():
            unspent[key] = unspent.get(key, 0) + units
    for (check, index), count in store.counts.items():
        assert count == admitted.get(index, 0) + unspent.get((check, index), 0), (index, count)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 2), st.booleans()), min_size=1, max_size=300),
       limits=st.tuples(st.integers(1, 30), st.integers(1, 30)), window_s=st.sampled_from([1, 3, 10]))
def test_the_over_limit_cache_changes_no_exact_decision(
        steps: list[tuple[int, int, bool]], limits: tuple[int, int], window_s: int) -> None:
    """Three processes with their own caches before one exact store decide every request as
    the store alone would (refused requests are not counted, so the caches' answers hold)."""
    checks = [LimitCheck("tier", "ip:1", limits[0], window_s), LimitCheck("svc", "ip:1", limits[1], 2 * window_s)]
    caches = [OverLimitCache(100) for _ in range(3)]
    with_cache, alone = Store(), Store()
    now_ms = 1_800_000_000_000
    for advance, who, second in steps:
        now_ms += advance
        now = now_ms / 1000
        check = checks[1] if second else checks[0]
        expected, _, _ = alone.exact(check, now_ms)
        refused = caches[who].refused([check], now)
        if refused is not None:
            assert expected is False, now
            assert refused[0].retry_after_s > 0
            assert refused[0].remaining == 0
            continue
        allowed, prev, cur = with_cache.exact(check, now_ms)
        assert allowed == expected
        if not allowed:
            caches[who].note(check, prev, cur, now)


def test_free_at_is_when_the_previous_window_has_decayed_enough() -> None:
    check = LimitCheck("tier", "ip:1", 10, 60)
    start = 1_800_000_000 // 60 * 60
    # prev 10, cur 5 at the window's start: one more fits when 10 * (1 - e/60) + 5 + 1 <= 10, e = 36 s.
    assert abs(free_at(check, 10, 5, start) - (start + 36)) < 1e-9
    # Nothing decays: the window's end.
    assert free_at(check, 0, 10, start + 1) == start + 60
    # Room already: now.
    assert free_at(check, 0, 3, start + 1) == start + 1


def test_a_lease_granted_for_a_window_that_has_ended_is_given_back_not_spent() -> None:
    check = LimitCheck("tier", "ip:1", 100, 10)
    book = LeaseBook(0.1, 100, 10)
    assert book.take([check], 1_800_000_005.0).missing == [check]
    book.granted(check, 180_000_000, 0, 10, 10, 1_800_000_011.0)  # reply after the window rolled
    assert book.held() == 0
    (row,) = book.collect(1_800_000_011.0, 5.0)
    assert (row.window, row.units) == (180_000_000, 10)


def test_an_evicted_lease_gives_its_units_back() -> None:
    book = LeaseBook(0.5, 100, 1)
    first, second = LimitCheck("tier", "ip:1", 10, 60), LimitCheck("tier", "ip:2", 10, 60)
    now = 1_800_000_000.0
    book.take([first], now)
    book.granted(first, first.window_index(now), 0, 5, 5, now)
    book.take([second], now)
    assert len(book) == 1
    assert [(r.check, r.units) for r in book.collect(now, 60.0)] == [(first, 5)]


def test_lease_sizes_follow_the_limit_within_their_bounds() -> None:
    assert lease_size(1000, 0.01, 100) == 10
    assert lease_size(10**9, 0.01, 100) == 100
    assert lease_size(3, 0.01, 100) == 1


def _cost_per_new_refusal(size: int, notes: int) -> float:
    """CPU seconds per new refused caller noted into a cache already full of `size` live refusals."""
    cache = OverLimitCache(size)
    now = 1_800_000_000.0
    for i in range(size):
        cache.note(LimitCheck("tier", f"ip:{i}", 10, 60), 0, 10, now)
    best = float("inf")
    for round_ in range(3):
        fresh = [LimitCheck("tier", f"new:{round_}:{i}", 10, 60) for i in range(notes)]
        started = time.process_time()
        for check in fresh:
            cache.note(check, 0, 10, now)
        best = min(best, (time.process_time() - started) / notes)
    assert len(cache) == size
    return best


def test_an_attacker_rotating_refused_callers_costs_the_cache_the_same_at_any_size() -> None:
    """A caller Redis refused is noted in O(1) however full the cache is: an attacker who
    fills it (every rotated key over its limit) must not make each new refusal scan it
    (at the default 100,000 entries a scan was ~10 ms of event loop per request)."""
    small = _cost_per_new_refusal(1_000, 400)
    large = _cost_per_new_refusal(100_000, 40)
    # O(1): about equal; a scan of the table: ~100x. The margin absorbs a busy machine.
    assert large < 10 * small + 20e-6, (small, large)
    cache = OverLimitCache(2)
    now = 1_800_000_000.0
    a, b, c = (LimitCheck("tier", f"ip:{n}", 10, 60) for n in "abc")
    cache.note(a, 0, 10, now)
    cache.note(b, 0, 10, now)
    cache.note(c, 0, 10, now)
    # Bounded, and the oldest refusal made room (the store decides it again: never an over-admission).
    assert len(cache) == 2
    assert cache.refused([a], now) is None
    assert cache.refused([b], now) is not None
    assert cache.refused([c], now) is not None

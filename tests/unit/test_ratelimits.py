"""Rate-limit arithmetic with an injected clock: tier selection, the sliding
window at its boundaries, headers; the in-process limiter's bounded caller
table (eviction order, what an evicted caller's count becomes)."""

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from vocelio_contract.config import RateTier, Service, ServiceRateLimit, TierMatch
from vocelio_proxy.policy.auth.identity import Identity
from vocelio_proxy.policy.ratelimits import (
    LimitCheck,
    LimitResult,
    MemoryLimiter,
    checks_for,
    estimate,
    headers_for,
    result_for,
    select_tier,
)

TIERS = [
    RateTier(name="anonymous", requests=1000, window_s=3600, key_by="ip", match=TierMatch(kind="anonymous")),
    RateTier(name="authenticated", requests=5000, window_s=3600, key_by="user", priority=10,
             match=TierMatch(kind="authenticated")),
    RateTier(name="api-key", requests=5000, window_s=3600, key_by="api-key", priority=20,
             match=TierMatch(kind="api-key")),
    RateTier(name="premium", requests=10000, window_s=3600, key_by="user", priority=30,
             match=TierMatch(kind="attribute", attribute="tier", value="premium")),
    RateTier(name="webhooks", requests=10000, window_s=3600, key_by="ip", priority=40,
             match=TierMatch(kind="route-class", value="webhooks")),
]
ANON = Identity(method="anonymous", ip="1.2.3.4")
USER = Identity(method="jwt", ip="1.2.3.4", user="u1", attributes={"tier": "free"})
PREMIUM = Identity(method="jwt", ip="1.2.3.4", user="u2", attributes={"tier": "premium"})
KEY = Identity(method="api-key", ip="1.2.3.4", user="apikey:abc", key_id="abc", attributes={"tier": "premium"})


def test_the_highest_priority_matching_tier_applies() -> None:
    assert select_tier(TIERS, ANON, None).name == "anonymous"  # type: ignore[union-attr]
    assert select_tier(TIERS, USER, None).name == "authenticated"  # type: ignore[union-attr]
    assert select_tier(TIERS, PREMIUM, None).name == "premium"  # type: ignore[union-attr]
    assert select_tier(TIERS, KEY, None).name == "premium"  # type: ignore[union-attr]
    assert select_tier(TIERS, USER, "webhooks").name == "webhooks"  # type: ignore[union-attr]


def test_tiers_key_callers_by_their_rule_and_service_limits_add_a_check() -> None:
    svc = Service(name="billing", prefixes=["/b"], rate_limit=ServiceRateLimit(requests=5, window_s=60, key_by="ip"))
    checks = checks_for(TIERS, svc, USER)
    assert [(c.name, c.bucket, c.limit) for c in checks] == [
        ("authenticated", "user:u1", 5000), ("service:default/billing", "ip:1.2.3.4", 5)]


def test_the_sliding_estimate_weights_the_previous_window_by_what_remains_of_it() -> None:
    assert estimate(100, 0, now=3600.0, window_s=3600) == 100
    assert estimate(100, 10, now=3600 + 900, window_s=3600) == 85
    assert estimate(100, 10, now=3600 + 3599.9, window_s=3600) < 10.1


def test_the_limit_admits_exactly_the_budget_within_one_window() -> None:
    limiter = MemoryLimiter()
    check = LimitCheck("t", "ip:1", limit=5, window_s=60)
    now = 6000.0
    results = [limiter.decide([check], now + i * 0.1)[0] for i in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]
    assert results[5].retry_after_s >= 1
    assert results[5].reset_at == 6060


def test_the_previous_window_still_counts_just_after_the_boundary() -> None:
    limiter = MemoryLimiter()
    check = LimitCheck("t", "ip:1", limit=10, window_s=60)
    for i in range(10):
        assert limiter.decide([check], 6000 + 50 + i * 0.1)[0].allowed
    # 1 s into the next window ~98% of the previous 10 still count: nothing admitted.
    assert not limiter.decide([check], 6061.0)[0].allowed
    # Half way through, half the previous window has decayed: 5 more fit.
    admitted = sum(limiter.decide([check], 6090.0 + i * 0.01)[0].allowed for i in range(10))
    assert admitted == 5


def test_a_refusal_by_one_limit_counts_against_none() -> None:
    limiter = MemoryLimiter()
    wide = LimitCheck("tier", "ip:1", limit=100, window_s=60)
    narrow = LimitCheck("service", "ip:1", limit=1, window_s=60)
    assert all(r.allowed for r in limiter.decide([wide, narrow], 6000.0))
    refused = limiter.decide([wide, narrow], 6000.1)
    assert not any(r.allowed for r in refused)
    assert refused[0].remaining == 99  # the refused request did not consume the wide budget


def test_headers_report_the_tightest_limit_and_every_policy() -> None:
    limiter = MemoryLimiter()
    results = limiter.decide([LimitCheck("tier", "ip:1", 100, 3600), LimitCheck("svc", "ip:1", 3, 60)], 7200.0)
    headers = headers_for(results)
    assert headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "2"
    assert headers["X-RateLimit-Reset"] == "7260"
    assert headers["RateLimit-Policy"] == '"tier";q=100;w=3600, "svc";q=3;w=60'


def test_a_single_limit_reports_the_same_headers_as_the_general_path() -> None:
    limiter = MemoryLimiter()
    check = LimitCheck("standard", "ip:1", 10, 60)
    single = limiter.decide([check], 120.5)
    twice = headers_for([*single, *single])  # the general path, same limit listed twice
    headers = headers_for(single)
    assert headers["X-RateLimit-Remaining"] == twice["X-RateLimit-Remaining"] == "9"
    assert headers["X-RateLimit-Limit"] == "10"
    assert headers["X-RateLimit-Reset"] == "180"
    assert headers["RateLimit-Policy"] == '"standard";q=10;w=60'


# -- the bounded caller table ------------------------------------------------------------


class UnboundedReference:
    """The limiter before the caller table was bounded: one dict entry per bucket."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int, int], int] = {}

    def decide(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        rows = []
        for check in checks:
            idx = check.window_index(now)
            prev = self.counts.get((check.name, check.bucket, check.window_s, idx - 1), 0)
            cur = self.counts.get((check.name, check.bucket, check.window_s, idx), 0)
            rows.append((check, prev, cur, idx))
        allowed = all(estimate(p, c + 1, now, ch.window_s) <= ch.limit for ch, p, c, _ in rows)
        out = []
        for check, prev, cur, idx in rows:
            if allowed:
                cur += 1
                self.counts[(check.name, check.bucket, check.window_s, idx)] = cur
            out.append(result_for(check, prev, cur, now, allowed))
        return out


CHECKS = [LimitCheck("tier", f"ip:{i}", limit, window) for i in range(4) for limit, window in ((3, 10), (5, 60))]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(CHECKS), min_size=1, max_size=3, unique=True),
                          st.floats(0, 30)), max_size=60))
def test_below_its_cap_the_limiter_decides_exactly_as_the_unbounded_one(steps) -> None:  # type: ignore[no-untyped-def]
    limiter, reference = MemoryLimiter(1000), UnboundedReference()
    now = 1000.0
    for checks, step in steps:
        now += step
        assert limiter.decide(checks, now) == reference.decide(checks, now)


def test_the_caller_table_never_holds_more_than_its_cap() -> None:
    limiter = MemoryLimiter(max_tracked=100)
    sizes = []
    for i in range(5000):
        limiter.decide([LimitCheck("tier", f"ip:{i}", 10, 60), LimitCheck("svc", f"ip:{i}", 5, 3600)],
                       1000.0 + i * 0.001)
        sizes.append(len(limiter))
    assert max(sizes) <= 100
    assert sizes[-1] == 100
    assert limiter.evicted_live == 2 * 5000 - 100


def test_a_caller_that_stays_hot_is_never_evicted_while_colder_ones_exist() -> None:
    limiter = MemoryLimiter(max_tracked=50)
    hot = LimitCheck("tier", "ip:hot", 30, 3600)
    admitted = 0
    for i in range(2000):
        limiter.decide([LimitCheck("tier", f"ip:cold-{i}", 30, 3600)], 7200.0 + i * 0.01)
        if i % 10 == 0:
            admitted += limiter.decide([hot], 7200.0 + i * 0.01)[0].allowed
    # 200 requests from the hot caller over 200 windows' worth of cold churn: its count
    # was kept throughout, so exactly its limit was admitted.
    assert admitted == 30


def test_refused_requests_keep_a_caller_hot() -> None:
    limiter = MemoryLimiter(max_tracked=20)
    hot = LimitCheck("tier", "ip:hot", 1, 3600)
    assert limiter.decide([hot], 7200.0)[0].allowed
    for i in range(500):
        limiter.decide([LimitCheck("tier", f"ip:{i}", 5, 3600)], 7200.0 + i)
        if i % 5 == 0:  # a refused caller that keeps trying stays tracked, and refused
            assert not limiter.decide([hot], 7200.0 + i)[0].allowed


def test_expired_windows_are_evicted_before_live_ones() -> None:
    limiter = MemoryLimiter(max_tracked=100)
    live = [LimitCheck("day", f"ip:live-{i}", 1, 86_400) for i in range(50)]
    for check in live:
        assert limiter.decide([check], 86_400.0)[0].allowed
    # Used later than the live ones, but their one-second windows have long expired.
    for i in range(50):
        limiter.decide([LimitCheck("second", f"ip:short-{i}", 1, 1)], 86_410.0)
    for i in range(50):
        limiter.decide([LimitCheck("second", f"ip:new-{i}", 1, 1)], 86_420.0)
    assert len(limiter) == 100
    assert limiter.evicted_live == 0
    assert not any(limiter.decide([check], 86_421.0)[0].allowed for check in live)


def test_an_evicted_caller_starts_again_from_zero_only_after_cap_others_were_used() -> None:
    cap = 100
    limiter = MemoryLimiter(max_tracked=cap)
    caller = LimitCheck("tier", "ip:a", 3, 3600)
    assert all(limiter.decide([caller], 7200.0)[0].allowed for _ in range(3))
    for i in range(cap - 1):  # cap - 1 others: the caller is still tracked
        limiter.decide([LimitCheck("tier", f"ip:{i}", 3, 3600)], 7201.0)
    assert not limiter.decide([caller], 7202.0)[0].allowed
    for i in range(cap):  # cap others since its last request: it is the least recently used
        limiter.decide([LimitCheck("tier", f"ip:other-{i}", 3, 3600)], 7203.0)
    assert limiter.decide([caller], 7204.0)[0].remaining == 2  # evicted: counted from zero


def test_expired_windows_are_swept_without_waiting_for_the_cap() -> None:
    limiter = MemoryLimiter(max_tracked=100_000)
    for i in range(3000):
        limiter.decide([LimitCheck("second", f"ip:{i}", 5, 1)], 100.0)
    assert len(limiter) == 3000
    for _ in range(2048):  # amortised sweeps: a bounded number per decision
        limiter.decide([LimitCheck("second", "ip:steady", 10_000, 1)], 200.0)
    assert len(limiter) == 1


def test_a_limit_with_exactly_one_request_left_does_not_set_the_retry_after_of_a_refusal() -> None:
    """The tier refuses the third request; the service limit has exactly one left (it would admit):
    only the tier's time to admit again may become Retry-After."""
    limiter = MemoryLimiter()
    tier, service = LimitCheck("tier", "ip:1", 2, 60), LimitCheck("service:s", "ip:1", 3, 3600)
    now = 1_800_000_000.0 // 3600 * 3600 + 10.0
    assert all(r.allowed for r in limiter.decide([tier, service], now))
    assert all(r.allowed for r in limiter.decide([tier, service], now))
    refused = {r.check.name: r for r in limiter.decide([tier, service], now + 1)}
    assert not refused["tier"].allowed
    assert 1.0 <= refused["tier"].retry_after_s <= 60.0
    assert refused["service:s"].remaining == 1
    assert refused["service:s"].retry_after_s == 0.0

"""Rate-limit arithmetic with an injected clock: tier selection, the sliding
window at its boundaries, headers."""

from vocelio_proxy.config import RateTier, Service, ServiceRateLimit, TierMatch
from vocelio_proxy.identity import Identity
from vocelio_proxy.ratelimits import (
    LimitCheck,
    MemoryLimiter,
    checks_for,
    estimate,
    headers_for,
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
    assert headers["X-RateLimit-Limit"] == "10" and headers["X-RateLimit-Reset"] == "180"
    assert headers["RateLimit-Policy"] == '"standard";q=10;w=60'

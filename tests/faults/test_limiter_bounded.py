"""The in-process limiter under a flood of distinct callers (the standalone
default and the Redis fallback): its caller table stays at its cap, its memory
stays bounded, and a caller that keeps sending keeps its count, both in the
pure limiter and through a running gateway keyed by client address."""

from __future__ import annotations

import tracemalloc
from typing import Any

import aiohttp
import pytest

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.hostile import RecordingUpstreamFactory
from vocelio_contract.config import GatewayConfig, RateTier, TierMatch
from vocelio_proxy.lifecycle import app as composition
from vocelio_proxy.policy.ratelimits import LimitCheck, MemoryLimiter


def test_three_hundred_thousand_distinct_callers_keep_the_table_at_its_cap() -> None:
    cap = 5_000
    limiter = MemoryLimiter(max_tracked=cap)
    hot = LimitCheck("anonymous", "ip:hot", 100, 3600)
    now = 3600.0
    hot_admitted = 0
    for i in range(300_000):
        now += 0.0001
        limiter.decide([LimitCheck("anonymous", f"ip:{i}", 100, 3600)], now)
        if i % 1000 == 0:
            hot_admitted += limiter.decide([hot], now)[0].allowed
        assert len(limiter) <= cap
    assert len(limiter) == cap
    assert hot_admitted == 100  # 300 tries, never evicted: exactly its limit
    assert limiter.evicted_live == 300_000 + 1 - cap


def test_the_limiters_memory_stops_growing_at_its_cap() -> None:
    cap = 5_000
    limiter = MemoryLimiter(max_tracked=cap)
    tracemalloc.start()
    try:
        for i in range(2 * cap):
            limiter.decide([LimitCheck("anonymous", f"ip:{i}", 100, 3600)], 3600.0 + i * 0.0001)
        full, _ = tracemalloc.get_traced_memory()
        for i in range(2 * cap, 60_000):
            limiter.decide([LimitCheck("anonymous", f"ip:{i}", 100, 3600)], 3600.0 + i * 0.0001)
        later, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 50,000 more callers once full: no growth (slack for the interpreter's own caches),
    # and within 1 KiB per tracked caller.
    assert later - full < 64 * 1024, (full, later)
    assert later < cap * 1024, later


@pytest.fixture
def capped_limiters(monkeypatch: pytest.MonkeyPatch) -> list[MemoryLimiter]:
    """Records the in-process limiters the composition root builds for the edge, with the arguments it passes
    (so the test proves the setting reaches the limiter)."""
    created: list[MemoryLimiter] = []

    def capped(*args: Any, **kwargs: Any) -> MemoryLimiter:
        limiter = MemoryLimiter(*args, **kwargs)
        created.append(limiter)
        return limiter

    monkeypatch.setattr(composition, "MemoryLimiter", capped)
    return created


async def test_a_gateway_flooded_by_distinct_addresses_keeps_its_table_bounded_and_its_hot_caller_limited(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory,
        capped_limiters: list[MemoryLimiter]) -> None:
    up = await recording_upstream()
    tier = RateTier(name="anonymous", requests=5, window_s=3600, key_by="ip", match=TierMatch(kind="anonymous"))
    gw = await gateway_factory(
        GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})], rate_tiers=[tier]),
        trusted_proxies=1, rate_limit={"max_tracked_callers": 1000})
    (limiter,) = capped_limiters
    hot_statuses = []
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(3000):
            address = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
            async with session.get(f"{gw.url}/api/v1/svc/x", headers={"X-Forwarded-For": address}) as resp:
                assert resp.status == 200, await resp.read()
            if i % 100 == 0:
                async with session.get(f"{gw.url}/api/v1/svc/x", headers={"X-Forwarded-For": "192.0.2.1"}) as resp:
                    hot_statuses.append(resp.status)
            assert len(limiter) <= 1000
    assert len(limiter) == 1000
    assert hot_statuses == [200] * 5 + [429] * 25

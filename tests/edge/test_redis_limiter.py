"""The Redis limiter decides batches as the in-process limiter decides the same
requests one by one (same admissions, same counts) across several callers and
several limits per request, except the documented cross-slot case. Real
redis-server."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as redis

from tests.harness.redis_server import RedisServer
from tests.harness.waiting import poll_async
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.policy.ratelimits import LimitCheck, LimitResult, MemoryLimiter
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.redis_limiter import RedisLimiter
from vocelio_proxy.settings import RateLimitSettings

NOW = 1_800_000_000.25


def _requests() -> list[list[LimitCheck]]:
    """Three callers interleaved; each request under its tier and, for some, a tight service
    limit and a limit of a shared tenant bucket."""
    out = []
    for i in range(90):
        caller = f"ip:10.0.0.{i % 3}"
        checks = [LimitCheck("standard", caller, 20, 60)]
        if i % 2 == 0:
            checks.append(LimitCheck("service:billing", caller, 9, 10))
        if i % 5 == 0:
            # A limit keyed by another bucket (another hash slot: its own script call).
            checks.append(LimitCheck("tenant", "tenant:acme", 1000, 60))
        out.append(checks)
    return out


async def test_a_concurrent_batch_matches_the_in_process_limiter_request_by_request(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    limiter = RedisLimiter(client, RateLimitSettings(redis_timeout_s=2.0, mode="exact"), ProxyMetrics(lambda: None),
                           MemoryLimiter())
    try:
        requests = _requests()
        # All issued in one loop turn: they share batches (several callers, several limits each).
        decided = await asyncio.gather(*(limiter.decide(checks, NOW) for checks in requests))
        reference = MemoryLimiter()
        expected = [reference.decide(checks, NOW) for checks in requests]

        def per_caller(results: list[list[LimitResult]]) -> list[list[tuple[bool, int]]]:
            return [[(r.allowed, r.remaining) for r in rs if r.check.name != "tenant"] for rs in results]

        # The per-caller limits decide exactly as in process (the tenant limit never refuses).
        assert per_caller(decided) == per_caller(expected)
        # The tenant bucket is another slot, decided by its own script call: it counts every
        # request it admitted, including those another bucket refused (documented: an
        # increment in one slot cannot be undone atomically from another).
        tenant = [r.remaining for rs in decided for r in rs if r.check.name == "tenant"]
        assert tenant == [1000 - k for k in range(1, len(tenant) + 1)]
        admitted = sum(all(r.allowed for r in rs) for rs in decided)
        assert 0 < admitted < len(requests)  # the service limit bit for some callers
        assert not limiter.fallback_active
        # A later batch continues from the counts Redis kept.
        again = await limiter.decide([LimitCheck("standard", "ip:10.0.0.1", 20, 60)], NOW + 1)
        assert again == reference.decide([LimitCheck("standard", "ip:10.0.0.1", 20, 60)], NOW + 1)
    finally:
        await limiter.close()
        await client.aclose()


async def test_in_lease_mode_redis_counts_exactly_the_admitted_requests_once_leftovers_are_given_back(
        redis_server: RedisServer) -> None:
    """Leases are counted in Redis when granted; closing the limiter gives the unspent
    units back, so Redis's bucket holds the admitted requests, no more, no fewer."""
    client = redis.Redis.from_url(redis_server.url)
    settings = RateLimitSettings(redis_timeout_s=2.0, mode="lease", lease_fraction=0.1, lease_max=100)
    limiter = RedisLimiter(client, settings, ProxyMetrics(lambda: None), MemoryLimiter())
    check = LimitCheck("standard", "ip:10.0.0.9", 1000, 3600)
    now = time.time()
    try:
        decided = await asyncio.gather(*(limiter.decide([check], now) for _ in range(37)))
        assert all(r.allowed for rs in decided for r in rs)
        assert limiter.leases is not None
        held = limiter.leases.held()
        assert held > 0  # units were leased ahead
        key = f"vrl:{{{check.bucket}}}:{check.name}:{check.window_s}:{check.window_index(now)}"
        assert int(await client.get(key) or -1) == 37 + held
    finally:
        await limiter.close()
    try:
        assert int(await client.get(key) or -1) == 37
    finally:
        await client.aclose()


async def test_a_failing_lease_sync_is_logged_once_shown_in_a_metric_and_recovers(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """Redis dies while a process holds unspent units: the sync task's returns fail,
    `vocelio_ratelimit_sync_failing` goes to 1 with one error log however many rounds
    fail; once Redis is back, returns work, the gauge goes to 0 with one recovery log."""
    client = redis.Redis.from_url(redis_server.url)
    metrics = ProxyMetrics(lambda: None)
    settings = RateLimitSettings(redis_timeout_s=0.5, mode="lease", lease_fraction=0.1, lease_max=100,
                                 sync_interval_s=0.05, retry_redis_after_s=0.05)
    limiter = RedisLimiter(client, settings, metrics, MemoryLimiter())

    def failing() -> float | None:
        return metrics.registry.get_sample_value("vocelio_ratelimit_sync_failing")

    def held(caller: str) -> LimitCheck:
        return LimitCheck("standard", caller, 1000, 3600)

    try:
        caplog.set_level(logging.WARNING, logger="vocelio.proxy.ratelimit")
        callers = [held(f"ip:{k}") for k in range(4)]
        for check in callers:
            assert (await limiter.decide([check], time.time()))[0].allowed
        redis_server.kill()
        errors_before = metrics.registry.get_sample_value("vocelio_ratelimit_backend_errors_total") or 0.0
        # Callers stop one after another (the others keep spending their held units), so each
        # of several sync rounds has an idle lease to give back, and fails.
        for step in range(1, 4):
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                for check in callers[step:]:
                    assert (await limiter.decide([check], time.time()))[0].allowed
                await asyncio.sleep(0.01)
        await poll_async("the sync failing", lambda: _is(failing(), 1.0), 10)
        failed_rounds = (metrics.registry.get_sample_value("vocelio_ratelimit_backend_errors_total") or 0.0)
        assert failed_rounds - errors_before >= 3
        errors = [r for r in caplog.records if "lease sync failed" in r.getMessage()]
        assert len(errors) == 1
        redis_server.start()

        async def recovered() -> bool:
            # New leases (Redis is back) go idle and are given back by the next round.
            await limiter.decide([held(f"ip:{time.monotonic()}")], time.time())
            return failing() == 0.0

        await poll_async("the sync recovered", recovered, 10)
        assert len([r for r in caplog.records if "lease sync recovered" in r.getMessage()]) == 1
    finally:
        await limiter.close()
        await client.aclose()


async def _is(value: float | None, expected: float) -> bool:
    return value == expected


def _retry_after(results: list[LimitResult]) -> float:
    """What the edge sends as Retry-After for a refused request (pipeline.edge)."""
    return max(r.retry_after_s for r in results if not r.allowed)


@pytest.mark.parametrize("engine", ["in-process", "exact", "lease"])
async def test_retry_after_of_a_refusal_comes_from_the_limit_that_refused(redis_server: RedisServer,
                                                                         engine: str) -> None:
    """A request under a tight per-minute tier and a roomy per-hour service limit is refused by
    the tier: Retry-After is when the tier admits again (under a minute), not the end of the
    hour the service limit is counted in. A limit with room never tells a client to wait."""
    tier = LimitCheck("tier", "ip:10.9.0.1", 2, 60)
    service = LimitCheck("service:s", "ip:10.9.0.1", 1000, 3600)
    start = 1_800_000_000.0 // 3600 * 3600 + 5.0  # 5 s into an hour (and into a minute)
    clock = ManualClock(start=0.0, wall_offset=start)  # lease replies are booked at the limiter's clock
    client = redis.Redis.from_url(redis_server.url)
    limiter: RedisLimiter | MemoryLimiter
    if engine == "in-process":
        limiter = MemoryLimiter()
    else:
        limiter = RedisLimiter(client, RateLimitSettings(redis_timeout_s=2.0, mode=engine, key_prefix=f"ra{engine}"),
                               ProxyMetrics(lambda: None), MemoryLimiter(), clock)
    try:
        for _ in range(2):
            admitted = limiter.decide([tier, service], clock.wall())
            results = admitted if isinstance(admitted, list) else await admitted
            assert all(r.allowed for r in results)
        for attempt in range(3):  # the store's refusal, then the cached or blocked one
            clock.now = attempt
            refused = limiter.decide([tier, service], clock.wall())
            results = refused if isinstance(refused, list) else await refused
            assert not all(r.allowed for r in results)
            assert 1.0 <= _retry_after(results) <= 60.0 - 5.0 - attempt, (attempt, results)
            by_name = {r.check.name: r for r in results}
            assert by_name["tier"].remaining == 0
            if "service:s" in by_name:
                assert by_name["service:s"].retry_after_s == 0.0
    finally:
        if isinstance(limiter, RedisLimiter):
            await limiter.close()
        await client.aclose()

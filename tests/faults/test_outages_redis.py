"""Redis killed (SIGKILL) in the middle of a request load while the Redis rate
limiter is configured, then restarted on the same port.

Expected figures: with `fail_mode: open` no request is lost, failed or slow:
decisions move to the in-process limiter (`vocelio_ratelimit_fallback_active`
1) and back to Redis after the restart. With `fail_mode: closed` every request
decided during the outage is a 503 JSON envelope (at most one request per
client worker, in flight at the kill, still gets its 200), none is lost or
slow, and once Redis is back (after `retry_redis_after_s`) every request is a
200 again. In lease mode (each test runs in both modes) the units a gateway held
at the kill are spent first: they are already counted in Redis.
Skipped without redis-server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, service
from tests.harness.redis_server import RedisServer
from tests.harness.reload_tools import while_loaded
from tests.harness.waiting import poll_async
from vocelio_contract.config import GatewayConfig, RateTier, TierMatch
from vocelio_proxy.policy.ratelimit_leases import lease_size

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")]

WORKERS = 6
SLOW_S = 1.0
PATHS = ["/api/v1/svc/x"]
# Generous: the test is about the store failing, not about callers being limited.
TIERS = [RateTier(name="anonymous", requests=1_000_000, window_s=60, key_by="ip",
                  match=TierMatch(kind="anonymous"))]


#: Lease mode: units one gateway can hold for the caller when Redis dies (a lease and
#: the half lease it had left when it fetched the next), already counted in Redis.
HELD = lease_size(TIERS[0].requests, 0.01, 100) * 3 // 2


async def gateway(gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, redis_server: RedisServer,
                  mode: str, limiter: str = "exact") -> Gateway:
    up = await upstream_factory()
    return await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=TIERS),
                                 redis_url=redis_server.url,
                                 rate_limit={"fail_mode": mode, "retry_redis_after_s": 0.2, "redis_timeout_s": 0.2,
                                             "mode": limiter, "lease_fraction": 0.01, "lease_max": 100})


async def fallback_gauge(gw: Gateway) -> float:
    for line in (await gw.get("/metrics"))[2].decode().splitlines():
        if line.startswith("vocelio_ratelimit_fallback_active "):
            return float(line.split()[1])
    raise AssertionError("no fallback gauge")


@pytest.mark.parametrize("limiter", ["exact", "lease"])
async def test_redis_killed_mid_load_fails_open_without_losing_a_request(gateway_factory: GatewayFactory,
                                                                         upstream_factory: UpstreamFactory,
                                                                         redis_server: RedisServer,
                                                                         limiter: str) -> None:
    gw = await gateway(gateway_factory, upstream_factory, redis_server, "open", limiter)
    seen: dict[str, float] = {}

    async def scenario() -> None:
        await asyncio.sleep(1.0)
        redis_server.kill()
        await asyncio.sleep(1.0)
        seen["during"] = await fallback_gauge(gw)
        redis_server.start()

        async def back() -> bool:
            return await fallback_gauge(gw) == 0.0

        await poll_async("limiter back on Redis", back, 10)
        await asyncio.sleep(1.0)

    stats = await while_loaded(gw.url, PATHS, scenario, workers=WORKERS, slow_s=SLOW_S)
    metrics = (await gw.get("/metrics"))[2].decode()
    print(f"\nredis killed mid-load (fail open): {stats.line()}")
    assert stats.sent > 500
    assert not stats.capped  # the load ran for the whole scenario
    assert (stats.lost, stats.failed, stats.unexpected, stats.slow) == (0, 0, 0, 0), stats.line()
    assert seen["during"] == 1.0
    assert "vocelio_ratelimit_backend_errors_total" in metrics
    # After the restart Redis decides again: its fresh counters count the requests since.
    status, headers, _ = await gw.get("/api/v1/svc/x")
    assert status == 200
    assert int(headers["X-RateLimit-Remaining"]) > 1_000_000 - stats.sent


@pytest.mark.parametrize("limiter", ["exact", "lease"])
async def test_redis_killed_mid_load_fails_closed_with_503_envelopes_then_recovers(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, redis_server: RedisServer,
        limiter: str) -> None:
    gw = await gateway(gateway_factory, upstream_factory, redis_server, "closed", limiter)
    phase = ["before"]
    by_phase: dict[str, Counter[int]] = {p: Counter() for p in ("before", "outage", "recovering", "after")}

    def check(path: str, status: int, body: bytes) -> None:
        by_phase[phase[0]][status] += 1
        if status == 503:
            envelope = json.loads(body)
            assert envelope["status_code"] == 503
            assert envelope["request_id"]

    async def scenario() -> None:
        await asyncio.sleep(1.0)
        redis_server.kill()
        phase[0] = "outage"
        await asyncio.sleep(1.0)
        status, headers, _ = await gw.get("/api/v1/svc/x")
        assert status == 503
        assert "Retry-After" in headers
        phase[0] = "recovering"
        redis_server.start()

        async def admitted() -> bool:
            return (await gw.get("/api/v1/svc/x"))[0] == 200

        await poll_async("requests admitted again", admitted, 10)
        await asyncio.sleep(0.3)  # let requests decided before recovery drain
        phase[0] = "after"
        await asyncio.sleep(1.0)

    stats = await while_loaded(gw.url, PATHS, scenario, workers=WORKERS, slow_s=SLOW_S, check=check)
    print(f"\nredis killed mid-load (fail closed): {stats.line()}; by phase "
          f"{ {p: dict(c) for p, c in by_phase.items()} }")
    assert not stats.capped
    assert (stats.lost, stats.unexpected, stats.slow) == (0, 0, 0), stats.line()
    # Every failed request is one of the outage's 503 envelopes; none before or after it.
    assert stats.failed == by_phase["outage"][503] + by_phase["recovering"][503]
    assert set(by_phase["before"]) == {200}
    assert set(by_phase["after"]) == {200}
    assert by_phase["outage"][503] > 50
    assert set(by_phase["outage"]) <= {200, 503}
    # Only requests decided before the kill, and in lease mode the units held at the kill.
    assert by_phase["outage"][200] <= WORKERS + (HELD if limiter == "lease" else 0)
    assert set(by_phase["recovering"]) <= {200, 503}

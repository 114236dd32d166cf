"""The documented bounds of each rate-limit mode, measured on a fleet: three
gateway processes (`vocelio-proxy serve`) share one real redis-server, one
caller's requests go round-robin through all of them, and the 2xx answers are
counted per window (the window each decision was made in, from
`X-RateLimit-Reset`). Windows alternate: a light one (well under the limit, so
every process holds unspent units when it ends) and a saturating one (far more
requests than the limit allows).

Per window, admissions never exceed the limit in either mode (leases are
counted in Redis before they are spent and never spent in another window: no
overshoot), and in every saturating window they reach at least
`limit - 1 - N x (lease + lease // 2)` in lease mode (unspent units other
processes hold when the window ends) and `limit - 1` in exact mode, less one
for the load's granularity, so an over-blocking limiter fails too."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.harness.app_fixtures import UpstreamFactory, service
from tests.harness.controlplane import free_port
from tests.harness.redis_server import RedisServer
from tests.harness.waiting import poll_async
from vocelio_contract.config import GatewayConfig, RateTier, TierMatch
from vocelio_proxy.policy.ratelimit_leases import lease_size

pytestmark = pytest.mark.redis

PROCESSES = 3
LIMIT = 100
WINDOW_S = 2
FRACTION = 0.05
LEASE_MAX = 100
CLIENTS_PER_GATEWAY = 3
LIGHT_PAUSE_S = WINDOW_S * PROCESSES * CLIENTS_PER_GATEWAY / (0.6 * LIMIT)


#: The load's own granularity: the last unit of a window frees up in its final tens of
#: milliseconds (the previous window decays to zero only at the end), and a request has
#: to arrive then.
LOAD_SLACK = 1


def lower_bound(mode: str) -> int:
    if mode == "exact":
        return LIMIT - 1 - LOAD_SLACK
    lease = lease_size(LIMIT, FRACTION, LEASE_MAX)
    return LIMIT - 1 - PROCESSES * (lease + lease // 2) - LOAD_SLACK


@pytest.mark.parametrize("mode", ["exact", "lease"])
async def test_a_fleet_sharing_redis_admits_within_the_documented_bound_per_window(
        upstream_factory: UpstreamFactory, tmp_path: Path, redis_server: RedisServer, mode: str) -> None:
    up = await upstream_factory()
    tiers = [RateTier(name="anonymous", requests=LIMIT, window_s=WINDOW_S, key_by="ip",
                      match=TierMatch(kind="anonymous"))]
    config = GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})], rate_tiers=tiers)
    (tmp_path / "gateway.json").write_text(config.seal().to_json())
    (tmp_path / "settings.yaml").write_text(
        f"redis_url: {redis_server.url}\naccess_log: false\nlog_level: warning\n"
        f"rate_limit: {{mode: {mode}, lease_fraction: {FRACTION}, lease_max: {LEASE_MAX}, sync_interval_s: 1.0, "
        f"redis_timeout_s: 1.0}}\n")
    ports = [free_port() for _ in range(PROCESSES)]
    procs = [await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(tmp_path / "gateway.json"),
        "--settings", str(tmp_path / "settings.yaml"), "--host", "127.0.0.1", "--port", str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True) for port in ports]
    try:
        connector = aiohttp.TCPConnector(limit=PROCESSES * CLIENTS_PER_GATEWAY)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def ready(port: int) -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            async def all_ready() -> bool:
                return all([await ready(p) for p in ports])

            await poll_async("every gateway ready", all_ready, 30)
            # Start at a window's beginning: light, saturating, light, saturating, light.
            first = int(time.time() // WINDOW_S + 1) * WINDOW_S
            await asyncio.sleep(first - time.time())
            stop = first + 5 * WINDOW_S
            ok: Counter[int] = Counter()
            refused: Counter[int] = Counter()
            unexpected: Counter[int] = Counter()
            untruthful: list[tuple[int, dict[str, str]]] = []

            async def client(port: int) -> None:
                while (now := time.time()) < stop:
                    if int((now - first) // WINDOW_S) % 2 == 0:
                        await asyncio.sleep(LIGHT_PAUSE_S)  # light: about 60% of the limit over the fleet
                    async with session.get(f"http://127.0.0.1:{port}/api/v1/svc/x") as resp:
                        await resp.read()
                        window_end = int(resp.headers["X-RateLimit-Reset"])
                        remaining = int(resp.headers["X-RateLimit-Remaining"])
                        if resp.status == 200:
                            ok[window_end] += 1
                            if not 0 <= remaining < LIMIT:  # this request is counted: never the whole limit
                                untruthful.append((resp.status, dict(resp.headers)))
                        elif resp.status == 429:
                            refused[window_end] += 1
                            if remaining != 0 or int(resp.headers["Retry-After"]) < 1:
                                untruthful.append((resp.status, dict(resp.headers)))
                        else:
                            unexpected[resp.status] += 1

            await asyncio.gather(*(client(port) for port in ports for _ in range(CLIENTS_PER_GATEWAY)))
        saturated = [first + 2 * WINDOW_S, first + 4 * WINDOW_S]  # the windows' ends, as X-RateLimit-Reset says
        print(f"\nmode {mode}: 2xx per window {sorted(ok.items())}, 429 per window {sorted(refused.items())}, "
              f"bounds [{lower_bound(mode)}, {LIMIT}]")
        assert not unexpected
        assert not untruthful, untruthful[:3]
        assert all(count <= LIMIT for count in ok.values()), ok
        for window_end in saturated:
            assert refused[window_end] > 0, "the load did not exceed the limit: the test proves nothing"
            assert lower_bound(mode) <= ok[window_end] <= LIMIT, (window_end, ok)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 15)

"""Rate-limit modes side by side, without HTTP: one process's limiter deciding
for C concurrent callers' loops (one caller bucket, the bench's tier: far above
the load) on a local redis-server, per mode: decisions per second, mean time a
decision takes (what a request waits), and Redis script calls per 1,000
decisions. The in-process limiter is the floor. A script, not a test; compare
rows of one run only.

Usage: python bench/ratelimit_modes.py [--seconds S] [--connections 8 64]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import free_port  # type: ignore[import-not-found]  # a sibling script

from vocelio_proxy.policy.ratelimits import LimitCheck, MemoryLimiter
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.redis_limiter import RedisLimiter
from vocelio_proxy.settings import RateLimitSettings

CHECK = LimitCheck("anonymous", "ip:127.0.0.1", 10**9, 3600)


async def script_calls(client: redis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def measure(mode: str, connections: int, seconds: float, url: str) -> tuple[float, float, float]:
    client = redis.Redis.from_url(url, max_connections=8)
    memory = MemoryLimiter()
    limiter = None if mode == "memory" else RedisLimiter(
        client, RateLimitSettings(mode=mode), ProxyMetrics(lambda: None), memory)
    done = 0
    waited = 0.0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done, waited
        while time.perf_counter() < stop:
            started = time.perf_counter()
            if limiter is None:
                memory.decide([CHECK], time.time())
            else:
                await limiter.decide([CHECK], time.time())
            waited += time.perf_counter() - started
            done += 1
            await asyncio.sleep(0)  # the rest of a request: other connections get the loop

    before = await script_calls(client)
    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    calls = await script_calls(client) - before
    if limiter is not None:
        await limiter.close()
    await client.aclose()
    return done / elapsed, 1e6 * waited / done, 1000 * calls / done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(50):
            try:
                await redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                await asyncio.sleep(0.1)
        print(f"{'mode':8} {'conns':>5} {'decisions/s':>12} {'us waited':>10} {'redis calls/1000':>17}")
        for connections in args.connections:
            for mode in ("memory", "exact", "lease"):
                rate, waited, calls = await measure(mode, connections, args.seconds, url)
                print(f"{mode:8} {connections:>5} {rate:>12.0f} {waited:>10.1f} {calls:>17.1f}")
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


if __name__ == "__main__":
    asyncio.run(main())

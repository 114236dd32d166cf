"""The Redis limiter decides batches as the in-process limiter decides the same
requests one by one (same admissions, same counts) across several callers and
several limits per request, except the documented cross-slot case. Real
redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as redis

from tests.harness.redis_server import RedisServer
from tests.harness.waiting import poll_async
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.policy.ratelimits import LimitCheck, LimitResult, MemoryLimiter
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.redis_limiter import RETURN_LUA, RedisLimiter
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


def _first_command_length(data: bytes) -> int:
    """Bytes of the first RESP command (an array of bulk strings) at the start of `data`."""
    end = data.index(b"\r\n")
    count, at = int(data[1:end]), end + 2
    for _ in range(count):
        end = data.index(b"\r\n", at)
        at = end + 2 + int(data[at + 1:end]) + 2
    return at


class _SplittingProxy:
    """A TCP relay to Redis that, once armed, forwards the first command of the next pipelined
    write, waits for Redis's reply to it, runs `between` (another client's command), then
    forwards the rest: what Redis does when a large pipelined write arrives in two reads and
    another process's command lands between them."""

    def __init__(self, port: int, between: Callable[[], Awaitable[object]], marker: bytes) -> None:
        self.redis_port = port
        self.marker = marker
        self.between = between
        self.armed = False
        self.split = 0
        #: What Redis answered on the connection whose write was split (NOSCRIPT, then the rest's replies).
        self.answers: bytearray | None = None
        self.mark = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        answers = bytearray()
        down = asyncio.ensure_future(self._pipe(up_reader, writer, answers))
        self.tasks.add(down)
        try:
            while data := await reader.read(65536):
                if self.armed and data.startswith(b"*5\r\n") and self.marker in data:  # a write of returns
                    self.armed = False
                    first = _first_command_length(data)
                    self.mark = len(answers)  # answers from here on are to this write
                    up_writer.write(data[:first])
                    await up_writer.drain()
                    # Redis answers the first command alone before anything else of the write arrives.
                    await poll_async("Redis's answer to the first command",
                                     lambda: asyncio.sleep(0, b"\r\n" in answers[self.mark:]), 10, 0.01)
                    await self.between()
                    self.answers = answers
                    up_writer.write(data[first:])
                    await up_writer.drain()
                    self.split += 1
                    continue
                up_writer.write(data)
                await up_writer.drain()
        finally:
            # The client is gone: Redis still answers what reached it, then closes on our EOF.
            with contextlib.suppress(OSError):
                up_writer.write_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(down), 5)
            up_writer.close()
            down.cancel()
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: bytearray) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                seen.extend(data)  # kept (and reading goes on) even when the client has gone
                if not writer.is_closing():
                    writer.write(data)
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()

    async def close(self) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_unspent_units_are_given_back_at_most_once_even_when_another_process_reloads_the_scripts_mid_write(
        redis_server: RedisServer) -> None:
    """After Redis lost its scripts (a restart), a pipelined write of returns can fail with
    NOSCRIPT on its first command while another process's SCRIPT LOAD lands before the rest,
    which then run. Re-sending the whole write would give those units back twice and lower the
    count below the admitted requests (an overshoot): each bucket must end holding exactly
    the requests it admitted."""
    direct = redis.Redis.from_url(redis_server.url)
    proxy = _SplittingProxy(redis_server.port, lambda: direct.script_load(RETURN_LUA), b"twice:")
    port = await proxy.start()
    client = redis.Redis(host="127.0.0.1", port=port)
    settings = RateLimitSettings(redis_timeout_s=2.0, mode="lease", lease_fraction=0.1, lease_max=100,
                                 key_prefix="twice")
    limiter = RedisLimiter(client, settings, ProxyMetrics(lambda: None), MemoryLimiter())
    checks = [LimitCheck("standard", f"ip:10.7.0.{i}", 1000, 3600) for i in range(2)]
    now = time.time()
    try:
        for check in checks:
            decided = await asyncio.gather(*(limiter.decide([check], now) for _ in range(5)))
            assert all(r.allowed for rs in decided for r in rs)
        assert limiter.leases is not None
        assert limiter.leases.held() > 0
        await direct.script_flush()
        proxy.armed = True
        await limiter.close()
        # The write was split as described and Redis answered both parts (by hash, the first
        # answer was NOSCRIPT and the whole write was sent again).
        await poll_async("Redis's answers to the split write", lambda: asyncio.sleep(
            0, proxy.answers is not None and proxy.answers[proxy.mark:].count(b"\r\n") >= 2), 10)
        for check in checks:
            key = f"twice:{{{check.bucket}}}:{check.name}:{check.window_s}:{check.window_index(now)}"
            # Exactly the 5 admitted: every unspent unit given back once (twice would leave fewer).
            assert int(await direct.get(key) or -1) == 5, key
    finally:
        await client.aclose()
        await proxy.close()
        await direct.aclose()


async def _commands_processed(client: redis.Redis) -> int:
    """Commands Redis has processed so far (the INFO call that reads it counts as one)."""
    return int((await client.info("stats"))["total_commands_processed"])


async def test_a_request_decided_from_held_units_sends_nothing_to_redis_and_answers_as_decide_would(
        redis_server: RedisServer) -> None:
    """`decide_held` is the synchronous path the edge policy takes first: it answers from
    held units with no command to Redis, and says None (ask `decide`) when it holds none."""
    client = redis.Redis.from_url(redis_server.url)
    settings = RateLimitSettings(redis_timeout_s=2.0, mode="lease", lease_fraction=0.5, lease_max=40,
                                 sync_interval_s=60)
    limiter = RedisLimiter(client, settings, ProxyMetrics(lambda: None), MemoryLimiter())
    check = LimitCheck("standard", "ip:10.0.0.7", 80, 3600)
    now = time.time()
    try:
        assert limiter.decide_held([check], now) is None  # nothing held yet: only `decide` can answer
        first = await limiter.decide([check], now)
        assert first[0].allowed
        assert limiter.leases is not None
        assert limiter.leases.held() == 39
        before = await _commands_processed(client)
        held = [limiter.decide_held([check], now) for _ in range(10)]
        assert await _commands_processed(client) == before + 1  # only the second INFO itself
        assert all(rs is not None and rs[0].allowed for rs in held)
        remaining = [rs[0].remaining for rs in held if rs is not None]
        assert remaining == sorted(remaining, reverse=True)
        assert len(set(remaining)) == 10
        assert limiter.leases.held() == 29
        # The same instant through `decide`: the same answer as the held path gives next.
        probe = LimitCheck("standard", "ip:10.0.0.8", 80, 3600)
        await limiter.decide([probe], now)
        via_decide = await limiter.decide([probe], now)
        via_held = limiter.decide_held([probe], now)
        assert via_held is not None
        held_result, decided = via_held[0], via_decide[0]
        assert (held_result.check, held_result.allowed, held_result.remaining + 1, held_result.reset_at,
                held_result.retry_after_s) == (decided.check, decided.allowed, decided.remaining, decided.reset_at,
                                               decided.retry_after_s)
    finally:
        await limiter.close()
        await client.aclose()


async def test_in_exact_mode_only_a_remembered_refusal_is_decided_without_redis(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    limiter = RedisLimiter(client, RateLimitSettings(redis_timeout_s=2.0, mode="exact"), ProxyMetrics(lambda: None),
                           MemoryLimiter())
    check = LimitCheck("tight", "ip:10.0.0.9", 2, 3600)
    now = time.time()
    try:
        assert limiter.decide_held([check], now) is None
        assert [rs[0].allowed for rs in [await limiter.decide([check], now) for _ in range(3)]] == [True, True, False]
        refused = await limiter.decide([check], now)
        before = await _commands_processed(client)
        held = limiter.decide_held([check], now)
        assert await _commands_processed(client) == before + 1
        assert held == refused
        assert not held[0].allowed
    finally:
        await limiter.close()
        await client.aclose()

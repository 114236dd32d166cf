"""Global rate limiting on Redis: a server-side script decides each request's
limits atomically, and the decisions of concurrent requests are batched: one
script call per caller bucket per batch, all calls in one write (one round
trip), at most two batches on the wire. Keys carry the caller bucket as a hash tag, so every key a script
touches lives in one Redis Cluster slot. When Redis fails or is slow, the
configured policy falls back to the in-process limiter (fail-open) or refuses
(fail-closed) and retries Redis after a pause, with no restart.
Owned by the edge policy; the Redis client comes from the app's cleanup context."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from vocelio_proxy.policy.ratelimits import LimitCheck, LimitResult, MemoryLimiter, result_for
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.settings import RateLimitSettings

log = logging.getLogger("vocelio.proxy.ratelimit")

# One call decides, in order and atomically, a run of requests of one caller bucket
# (so all its keys share one hash slot). Each distinct limit of the run appears once.
# KEYS: per distinct check i: its current bucket key, then its previous one.
# ARGV: now_ms, n, then per check i: limit, window_ms; then per request: a bitmask of
#       the checks it is subject to (bit i-1 for check i).
# Returns: prev per check, then per request: allowed, then cur of each of its checks
# (in check order; cur includes the request when allowed).
SLIDING_WINDOW_LUA = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local cur, limit, window, decayed, touched = {}, {}, {}, {}, {}
local out = {}
for i = 1, n do
  cur[i] = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  limit[i] = tonumber(ARGV[1 + 2 * i])
  window[i] = tonumber(ARGV[2 + 2 * i])
  decayed[i] = prev * (1 - (now % window[i]) / window[i])
  out[i] = prev
end
for r = 3 + 2 * n, #ARGV do
  local mask = tonumber(ARGV[r])
  local allowed = 1
  for i = 1, n do
    if math.floor(mask / 2 ^ (i - 1)) % 2 == 1 and decayed[i] + cur[i] + 1 > limit[i] then allowed = 0 end
  end
  out[#out + 1] = allowed
  for i = 1, n do
    if math.floor(mask / 2 ^ (i - 1)) % 2 == 1 then
      if allowed == 1 then
        cur[i] = cur[i] + 1
        touched[i] = true
      end
      out[#out + 1] = cur[i]
    end
  end
end
for i = 1, n do
  if touched[i] then redis.call('SET', KEYS[2 * i - 1], cur[i], 'PX', 2 * window[i] + 1000) end
end
return out
"""

#: Requests and distinct checks per script call at most (bounds one call's time in Redis).
_MAX_RUN = 256
#: Batches on the wire at once: a second one keeps requests that arrive during a round
#: trip from waiting for it (at 8 connections batches held ~4 requests and every
#: request waited for two round trips); more would only shrink batches.
_MAX_IN_FLIGHT = 2
_MAX_CHECKS = 30


def _pack(*args: bytes | str | int) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class LimiterUnavailable(Exception):
    """Redis is unreachable and the policy is fail-closed."""


@dataclass(slots=True)
class _Pending:
    checks: Sequence[LimitCheck]
    now: float
    future: asyncio.Future[list[LimitResult]]


@dataclass(slots=True)
class _Call:
    """One script call: its distinct checks and the requests it decides, in order
    (batch position, then (check position in the call, check index) per check)."""

    now_ms: int
    checks: dict[LimitCheck, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)
    runs: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)
    #: Per run: the bitmask of the call's checks that request is subject to.
    masks: list[int] = field(default_factory=list)


class RedisLimiter:
    def __init__(self, client: redis.Redis, settings: RateLimitSettings, metrics: ProxyMetrics,
                 fallback: MemoryLimiter) -> None:
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._fallback = fallback
        self._sha: str | None = None
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._batches: set[asyncio.Task[None]] = set()
        self._down_until = 0.0
        self.fallback_active = False

    def _key(self, check: LimitCheck, index: int) -> str:
        return f"{self._settings.key_prefix}:{{{check.bucket}}}:{check.name}:{check.window_s}:{index}"

    async def decide(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        if not checks:
            return []
        if self._down_until and time.monotonic() < self._down_until:
            return self._degraded(checks, now)
        loop = asyncio.get_running_loop()
        pending = _Pending(checks, now, loop.create_future())
        self._pending.append(pending)
        if not self._scheduled and len(self._batches) < _MAX_IN_FLIGHT:
            # Started on the next loop turn, so requests arriving in this turn share the pipeline.
            self._scheduled = True
            loop.call_soon(self._start_batch)
        try:
            return await pending.future
        except (RedisError, OSError, TimeoutError):
            return self._degraded(checks, now)

    def _start_batch(self) -> None:
        self._scheduled = False
        if not self._pending or len(self._batches) >= _MAX_IN_FLIGHT:
            return
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if self._pending and not self._scheduled:
            # Requests that queued while every batch was in flight go next.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_batch)

    async def close(self) -> None:
        """Cancel in-flight batches (their callers fall back per policy) before the client closes."""
        tasks = list(self._batches)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(RedisError("rate limiter closed"))
        self._pending.clear()

    def _degraded(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        if self._settings.fail_mode == "closed":
            raise LimiterUnavailable("rate-limit store unavailable")
        return self._fallback.decide(checks, now)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            await self._run_batch(batch)
            self._recovered()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            self._fail_all(batch, exc)
        except asyncio.CancelledError:
            self._fail_all(batch, RedisError("rate limiter closed"))
            raise

    @staticmethod
    def _fail_all(batch: list[_Pending], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        if self._sha is None:
            async with asyncio.timeout(self._settings.redis_timeout_s):
                self._sha = await self._client.script_load(SLIDING_WINDOW_LUA)
        started = time.perf_counter()
        calls = self._plan(batch)
        try:
            replies = await self._execute(calls)
        except NoScriptError:
            self._sha = None  # Redis restarted and lost its script cache
            async with asyncio.timeout(self._settings.redis_timeout_s):
                self._sha = await self._client.script_load(SLIDING_WINDOW_LUA)
            replies = await self._execute(calls)
        self._metrics.ratelimit_latency.observe(time.perf_counter() - started)
        # Per request: (check index, prev, cur) for each of its checks, and whether every call admitted it.
        found: list[list[tuple[int, int, int]]] = [[] for _ in batch]
        admitted = [True] * len(batch)
        for call, reply in zip(calls, replies, strict=True):
            cursor = len(call.checks)
            for item_id, positions in call.runs:
                if int(reply[cursor]) != 1:
                    admitted[item_id] = False
                cursor += 1
                rows = found[item_id]
                for distinct, index in positions:
                    rows.append((index, int(reply[distinct]), int(reply[cursor])))
                    cursor += 1
        for item_id, item in enumerate(batch):
            # When limits of different callers' buckets (different slots) disagree, the
            # admitting bucket's increment stands: it cannot be undone atomically.
            results = found[item_id]
            if len(results) > 1:
                results.sort()
            if not item.future.done():
                item.future.set_result([result_for(item.checks[index], prev, cur, item.now, admitted[item_id])
                                        for index, prev, cur in results])

    def _plan(self, batch: list[_Pending]) -> list[_Call]:
        """Group the batch into script calls: per caller bucket, its requests in arrival
        order, each distinct limit once. The batch's first arrival time stands for all
        of it (they arrived within one Redis round trip)."""
        now = batch[0].now
        calls: dict[str, _Call] = {}
        planned: list[_Call] = []
        for item_id, item in enumerate(batch):
            checks = item.checks
            bucket = checks[0].bucket
            groups: Iterable[tuple[str, Sequence[int]]]
            if len(checks) == 1 or all(c.bucket == bucket for c in checks):
                groups = ((bucket, range(len(checks))),)  # the common case: one caller key
            else:
                by_bucket: dict[str, list[int]] = {}
                for index, check in enumerate(checks):
                    by_bucket.setdefault(check.bucket, []).append(index)
                groups = by_bucket.items()
            for group_bucket, indexes in groups:
                call = calls.get(group_bucket)
                if call is None or len(call.runs) >= _MAX_RUN or len(call.checks) + len(indexes) > _MAX_CHECKS:
                    call = calls[group_bucket] = _Call(int(now * 1000))
                    planned.append(call)
                positions = []
                mask = 0
                for index in indexes:
                    check = checks[index]
                    distinct = call.checks.get(check)
                    if distinct is None:
                        distinct = call.checks[check] = len(call.checks)
                        window_index = check.window_index(now)
                        call.keys.append(self._key(check, window_index))
                        call.keys.append(self._key(check, window_index - 1))
                        call.limits.append(check.limit)
                        call.limits.append(check.window_s * 1000)
                    positions.append((distinct, index))
                    mask |= 1 << distinct
                if len(positions) > 1:
                    positions.sort()
                call.runs.append((item_id, positions))
                call.masks.append(mask)
        return planned

    async def _execute(self, calls: list[_Call]) -> list[list[int]]:
        """Send the batch's script calls in one write on one pooled connection and read
        their replies. (redis-py's Pipeline object cost more per batch than the calls.)"""
        assert self._sha is not None
        sha = self._sha.encode()
        packed = b"".join(_pack(b"EVALSHA", sha, len(call.keys), *call.keys, call.now_ms, len(call.checks),
                                *call.limits, *call.masks)
                          for call in calls)
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        try:
            async with asyncio.timeout(self._settings.redis_timeout_s):
                await conn.send_packed_command(packed, check_health=False)
                replies = [await conn.read_response() for _ in calls]
        except BaseException:
            # Replies may still be in flight: this connection cannot be reused.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return [list(r) for r in replies]

    def _failed(self, exc: BaseException) -> None:
        self._metrics.ratelimit_backend_errors.inc()
        self._down_until = time.monotonic() + self._settings.retry_redis_after_s
        if not self.fallback_active:
            self.fallback_active = True
            self._metrics.ratelimit_fallback.set(1 if self._settings.fail_mode == "open" else 0)
            log.error("rate-limit store failed", extra={"fields": {
                "error": type(exc).__name__, "policy": "fail-" + self._settings.fail_mode}})

    def _recovered(self) -> None:
        self._down_until = 0.0
        if self.fallback_active:
            self.fallback_active = False
            self._metrics.ratelimit_fallback.set(0)
            log.warning("rate-limit store recovered")


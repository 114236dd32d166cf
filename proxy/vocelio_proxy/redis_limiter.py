"""Global rate limiting on Redis: one server-side script per caller decides all
of a request's limits atomically, and the decisions of concurrent requests are
batched into one pipeline (one round trip, one client call) instead of one
call each. Keys carry the caller bucket as a hash tag, so every key a script
touches lives in one Redis Cluster slot. When Redis fails or is slow, the
configured policy falls back to the in-process limiter (fail-open) or refuses
(fail-closed) and retries Redis after a pause, with no restart.
Owned by the edge policy; the Redis client comes from the app's cleanup context."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from .metrics import ProxyMetrics
from .ratelimits import LimitCheck, LimitResult, MemoryLimiter, result_for
from .settings import RateLimitSettings

log = logging.getLogger("vocelio.proxy.ratelimit")

# One call decides a run of requests of one caller bucket, in order, each atomically.
# KEYS: per check of each request, its current bucket key then its previous one.
# ARGV: per request: now_ms, n (its number of checks), then per check: limit, window_ms.
# Returns, per request: allowed, then prev, cur per check; cur includes the request when allowed.
SLIDING_WINDOW_LUA = """
local out = {}
local a = 1
local k = 0
while a <= #ARGV do
  local now = tonumber(ARGV[a])
  a = a + 1
  local n = tonumber(ARGV[a])
  local allowed = 1
  local counts = {}
  for i = 1, n do
    local cur = tonumber(redis.call('GET', KEYS[k + 2 * i - 1]) or '0')
    local prev = tonumber(redis.call('GET', KEYS[k + 2 * i]) or '0')
    local limit = tonumber(ARGV[a + 2 * i - 1])
    local window = tonumber(ARGV[a + 2 * i])
    local elapsed = now % window
    if prev * (1 - elapsed / window) + cur + 1 > limit then allowed = 0 end
    counts[2 * i - 1] = prev
    counts[2 * i] = cur
  end
  if allowed == 1 then
    for i = 1, n do
      counts[2 * i] = redis.call('INCR', KEYS[k + 2 * i - 1])
      redis.call('PEXPIRE', KEYS[k + 2 * i - 1], 2 * tonumber(ARGV[a + 2 * i]) + 1000)
    end
  end
  out[#out + 1] = allowed
  for i = 1, 2 * n do out[#out + 1] = counts[i] end
  k = k + 2 * n
  a = a + 1 + 2 * n
end
return out
"""

#: Requests decided by one script call at most (bounds the time Redis spends in one script).
_MAX_RUN = 128


class LimiterUnavailable(Exception):
    """Redis is unreachable and the policy is fail-closed."""


@dataclass(slots=True)
class _Pending:
    checks: Sequence[LimitCheck]
    now: float
    future: asyncio.Future[list[LimitResult]]


@dataclass(slots=True)
class _Call:
    """One script call: the requests (batch position, check indexes) it decides, in order."""

    keys: list[str] = field(default_factory=list)
    args: list[int] = field(default_factory=list)
    runs: list[tuple[int, list[int]]] = field(default_factory=list)


class RedisLimiter:
    def __init__(self, client: redis.Redis, settings: RateLimitSettings, metrics: ProxyMetrics,
                 fallback: MemoryLimiter) -> None:
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._fallback = fallback
        self._sha: str | None = None
        self._pending: list[_Pending] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self.fallback_active = False

    def _key(self, check: LimitCheck, index: int) -> str:
        return f"{self._settings.key_prefix}:{{{check.bucket}}}:{check.name}:{check.window_s}:{index}"

    async def decide(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        if not checks:
            return []
        if time.monotonic() < self._down_until:
            return self._degraded(checks, now)
        loop = asyncio.get_running_loop()
        pending = _Pending(checks, now, loop.create_future())
        self._pending.append(pending)
        if not self._flushing:
            # Started on the next loop turn, so requests arriving in this turn share the pipeline.
            self._flushing = True
            loop.call_soon(self._start_flush)
        try:
            return await pending.future
        except (RedisError, OSError, TimeoutError):
            return self._degraded(checks, now)

    def _start_flush(self) -> None:
        self._flush_task = asyncio.ensure_future(self._flush())

    async def close(self) -> None:
        """Cancel an in-flight batch (its callers fall back per policy) before the client closes."""
        task = self._flush_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(RedisError("rate limiter closed"))
        self._pending.clear()

    def _degraded(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        if self._settings.fail_mode == "closed":
            raise LimiterUnavailable("rate-limit store unavailable")
        return self._fallback.decide(checks, now)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._run_batch(batch)
                    self._recovered()
                except (RedisError, OSError, TimeoutError) as exc:
                    self._failed(exc)
                    self._fail_all(batch, exc)
                except asyncio.CancelledError:
                    self._fail_all(batch, RedisError("rate limiter closed"))
                    raise
        finally:
            self._flushing = False

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
        # Per request: one reply segment per bucket its checks use.
        segments: dict[int, list[tuple[list[int], list[int]]]] = {}
        for call, reply in zip(calls, replies, strict=True):
            cursor = 0
            for item_id, indexes in call.runs:
                width = 1 + 2 * len(indexes)
                segments.setdefault(item_id, []).append((indexes, reply[cursor:cursor + width]))
                cursor += width
        for item_id, item in enumerate(batch):
            parts = segments.get(item_id, [])
            allowed_all = all(int(part[0]) == 1 for _, part in parts)
            results: list[LimitResult | None] = [None] * len(item.checks)
            for indexes, part in parts:
                for position, index in enumerate(indexes):
                    # When limits of different callers' buckets (different slots) disagree, the
                    # admitting bucket's increment stands: it cannot be undone atomically.
                    results[index] = result_for(item.checks[index], int(part[1 + 2 * position]),
                                                int(part[2 + 2 * position]), item.now, allowed_all)
            if not item.future.done():
                item.future.set_result([r for r in results if r is not None])

    def _plan(self, batch: list[_Pending]) -> list[_Call]:
        """Group the batch's checks into script calls: one per caller bucket (one hash
        slot), each deciding that bucket's requests in arrival order."""
        calls: dict[str, _Call] = {}
        planned: list[_Call] = []
        for item_id, item in enumerate(batch):
            by_bucket: dict[str, list[int]] = {}
            for index, check in enumerate(item.checks):
                by_bucket.setdefault(check.bucket, []).append(index)
            now_ms = int(item.now * 1000)
            for bucket, indexes in by_bucket.items():
                call = calls.get(bucket)
                if call is None or len(call.runs) >= _MAX_RUN:
                    call = calls[bucket] = _Call()
                    planned.append(call)
                call.args.append(now_ms)
                call.args.append(len(indexes))
                for index in indexes:
                    check = item.checks[index]
                    window_index = check.window_index(item.now)
                    call.keys.append(self._key(check, window_index))
                    call.keys.append(self._key(check, window_index - 1))
                    call.args.append(check.limit)
                    call.args.append(check.window_s * 1000)
                call.runs.append((item_id, indexes))
        return planned

    async def _execute(self, calls: list[_Call]) -> list[list[int]]:
        assert self._sha is not None
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self._sha, len(call.keys), *call.keys, *call.args)
        async with asyncio.timeout(self._settings.redis_timeout_s):
            replies = await pipe.execute(raise_on_error=True)
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
        if self.fallback_active:
            self.fallback_active = False
            self._metrics.ratelimit_fallback.set(0)
            log.warning("rate-limit store recovered")


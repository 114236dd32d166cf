"""Global rate limiting on Redis: a server-side script decides each request's
limits atomically, and the decisions of concurrent requests are batched: one
script call per caller bucket per batch, all calls in one write (one round
trip), at most two batches on the wire. Keys carry the caller bucket as a hash tag, so every key a script
touches lives in one Redis Cluster slot. When Redis fails or is slow, the
configured policy falls back to the in-process limiter (fail-open) or refuses
(fail-closed) and retries Redis after a pause, with no restart.

`rate_limit.mode` chooses how a decision uses Redis (docs/rate-limiting.md):
`exact` asks the script above for every request (refusals are remembered in the
over-limit cache until the counts Redis returned allow another request);
`lease` admits from budget slices taken with `GRANT_LUA` (`policy.ratelimit_leases`
keeps the accounting) and only waits for Redis when it holds no units for a
caller. Next slices are fetched in the background in the same batches; a sync
task owned here gives unspent units back (`RETURN_LUA`) every
`sync_interval_s`, logs once per change between reaching Redis and not, and
shows it in `vocelio_ratelimit_sync_failing`; a crash of it is supervised.
Owned by the edge policy; the Redis client comes from the app's cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from vocelio_proxy.clock import Clock, SystemClock
from vocelio_proxy.policy.ratelimit_leases import LeaseBook, Leftover, OverLimitCache, Take, exhausted, refusal
from vocelio_proxy.policy.ratelimits import LimitCheck, LimitResult, MemoryLimiter, result_for
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.supervision import WatcherStatus, supervise
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

# A budget slice for one (limit, caller): as many of `want` units as the sliding-window
# estimate leaves (policy.ratelimit_leases.grant_units is the same arithmetic), counted
# in the current bucket at once. KEYS: current bucket, previous bucket.
# ARGV: now_ms, limit, window_ms, want. Returns: prev, cur (after the grant), granted.
GRANT_LUA = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local grant = math.floor(limit - prev * (1 - (now % window) / window) - cur)
if grant > want then grant = want end
if grant < 0 then grant = 0 end
if grant > 0 then
  cur = cur + grant
  redis.call('SET', KEYS[1], cur, 'PX', 2 * window + 1000)
end
return {prev, cur, grant}
"""

# Unspent units back to the bucket they were granted from (never below zero; the
# bucket keeps its expiry). KEYS: that bucket. ARGV: units. Returns: units taken back.
RETURN_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local units = tonumber(ARGV[1])
if cur <= 0 then return 0 end
if units > cur then units = cur end
redis.call('SET', KEYS[1], cur - units, 'KEEPTTL')
return units
"""

#: Lease mode: rounds of fetch-then-take for one request before Redis decides it
#: exactly (many concurrent requests of one caller can spend each grant before it).
_MAX_LEASE_ROUNDS = 4

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
class _Fetch:
    """One lease fetch on the wire: the check, the window it is for, how many units."""

    check: LimitCheck
    index: int
    want: int
    now: float
    future: asyncio.Future[None]


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
                 fallback: MemoryLimiter, clock: Clock | None = None) -> None:
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._fallback = fallback
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._sha: str | None = None
        self._grant_sha: str | None = None
        self._pending: list[_Pending] = []
        self._fetches: list[_Fetch] = []
        self._scheduled = False
        self._batches: set[asyncio.Task[None]] = set()
        self._down_until = 0.0
        self.fallback_active = False
        self._blocks: OverLimitCache | None = (
            OverLimitCache(settings.max_tracked_callers) if settings.over_limit_cache else None)
        self.leases: LeaseBook | None = None
        if settings.mode == "lease":
            self.leases = LeaseBook(settings.lease_fraction, settings.lease_max, settings.max_tracked_callers)
        #: Lease fetches on the wire, by check (one at a time per check; waiters share it).
        self._in_flight: dict[LimitCheck, asyncio.Future[None]] = {}
        self.sync_status = WatcherStatus("ratelimit-sync")
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_up = True

    def _key(self, check: LimitCheck, index: int) -> str:
        return f"{self._settings.key_prefix}:{{{check.bucket}}}:{check.name}:{check.window_s}:{index}"

    def decide_held(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult] | None:
        """The decision when it needs no round trip (None otherwise: then `decide`):
        in lease mode from held units or a held refusal, in exact mode a cached
        refusal. Synchronous, so the common request pays for no coroutine; the
        answers are the ones `decide` would give at the same instant."""
        if not checks:
            return []
        if self.leases is not None:
            take = self._take(self.leases, checks, now)
            return None if take.missing else take.results
        if self._blocks is not None:
            return self._blocks.refused(checks, now)
        return None

    async def decide(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        if not checks:
            return []
        if self.leases is not None:
            return await self._decide_leased(self.leases, checks, now)
        if self._blocks is not None:
            refused = self._blocks.refused(checks, now)
            if refused is not None:
                return refused
        return await self._decide_exact(checks, now)

    def _take(self, book: LeaseBook, checks: Sequence[LimitCheck], now: float) -> Take:
        """One local take; low leases are refilled in the background (not while Redis is
        marked down), and the sync task that returns leftovers runs from the first take."""
        if self._sync_task is None:
            self._sync_task = asyncio.ensure_future(supervise(self.sync_status, self._sync_loop))
        take = book.take(checks, now)
        if take.refill and not (self._down_until and time.monotonic() < self._down_until):
            for check in take.refill:
                if check not in self._in_flight:
                    self._fetch(book, check, now)
        return take

    async def _decide_leased(self, book: LeaseBook, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        """From held units; a missing lease is fetched (requests of one caller share the
        fetch) and the take retried; a caller that keeps losing its units to concurrent
        requests is decided exactly."""
        for _ in range(_MAX_LEASE_ROUNDS):
            take = self._take(book, checks, now)
            if not take.missing:
                return take.results
            if self._down_until and time.monotonic() < self._down_until:
                return self._degraded(checks, now)
            waits = [self._in_flight.get(check) or self._fetch(book, check, now) for check in take.missing]
            try:
                for wait in waits:
                    # Shielded: a caller that goes away must not cancel the fetch others wait for.
                    await asyncio.shield(wait)
            except (RedisError, OSError, TimeoutError):
                return self._degraded(checks, now)
        return await self._decide_exact(checks, now)

    def _fetch(self, book: LeaseBook, check: LimitCheck, now: float) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # Nobody may be waiting (a background refill): its failure is recorded by the batch.
        future.add_done_callback(_consume_exception)
        self._in_flight[check] = future
        self._fetches.append(_Fetch(check, check.window_index(now), book.size(check), now, future))
        self._schedule(loop)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and len(self._batches) < _MAX_IN_FLIGHT:
            # Started on the next loop turn, so requests arriving in this turn share the pipeline.
            self._scheduled = True
            loop.call_soon(self._start_batch)

    async def _decide_exact(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        if self._down_until and time.monotonic() < self._down_until:
            return self._degraded(checks, now)
        loop = asyncio.get_running_loop()
        pending = _Pending(checks, now, loop.create_future())
        self._pending.append(pending)
        self._schedule(loop)
        try:
            return await pending.future
        except (RedisError, OSError, TimeoutError):
            return self._degraded(checks, now)

    def _start_batch(self) -> None:
        self._scheduled = False
        if not (self._pending or self._fetches) or len(self._batches) >= _MAX_IN_FLIGHT:
            return
        batch, self._pending = self._pending, []
        fetches, self._fetches = self._fetches, []
        task = asyncio.ensure_future(self._send(batch, fetches))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if (self._pending or self._fetches) and not self._scheduled:
            # Requests that queued while every batch was in flight go next.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_batch)

    async def close(self) -> None:
        """Cancel the sync task and in-flight batches (their callers fall back per
        policy), then give held units back once (best effort) before the client closes."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        tasks = list(self._batches)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = RedisError("rate limiter closed")
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(closed)
        self._pending.clear()
        self._fail_fetches(self._fetches, closed)
        self._fetches.clear()
        if self.leases is not None and not (self._down_until and time.monotonic() < self._down_until):
            leftovers = self.leases.collect(float("inf"), 0.0)
            if leftovers:
                # Units not given back count as used until their window ends: never an overshoot.
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await self._give_back(leftovers)

    async def _sync_loop(self) -> None:
        """Every `sync_interval_s`: give back the units of ended windows and idle leases.
        A failed return is not retried (a reply lost to a timeout may have been applied:
        a retry could return units twice); those units count as used until their window
        ends. Each change between reaching Redis and not is logged once and shown in
        `vocelio_ratelimit_sync_failing`."""
        book = self.leases
        assert book is not None
        interval = self._settings.sync_interval_s
        while True:
            await asyncio.sleep(interval)
            leftovers = book.collect(self._clock.wall(), interval)
            if not leftovers:
                continue
            try:
                await self._give_back(leftovers)
            except Exception as exc:  # Redis, or a defect: either way logged once and shown, never silent
                self._metrics.ratelimit_backend_errors.inc()
                if self._sync_up:
                    self._sync_up = False
                    self._metrics.ratelimit_sync_failing.set(1)
                    unexpected = not isinstance(exc, (RedisError, OSError, TimeoutError))
                    log.error("rate-limit lease sync failed; unspent units count as used until their window ends",
                              exc_info=exc if unexpected else None,
                              extra={"fields": {"error": type(exc).__name__}})
                continue
            if not self._sync_up:
                self._sync_up = True
                self._metrics.ratelimit_sync_failing.set(0)
                log.warning("rate-limit lease sync recovered")

    async def _give_back(self, leftovers: list[Leftover]) -> None:
        """Returns are sent with the script's text (EVAL), never by its hash: a return must run
        at most once, and a pipelined write of EVALSHA calls after Redis lost its scripts can fail
        with NOSCRIPT on its first calls while the rest run (another process's SCRIPT LOAD lands
        between two reads of the write); re-sending it would give units back twice and lower the
        count below the requests admitted. Returns are off the request path: the bytes are cheap."""
        script = RETURN_LUA.encode()
        commands = [_pack(b"EVAL", script, 1, self._key(row.check, row.window), row.units) for row in leftovers]
        for start in range(0, len(commands), _MAX_RUN):
            await self._execute(commands[start:start + _MAX_RUN])

    def _degraded(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        if self._settings.fail_mode == "closed":
            raise LimiterUnavailable("rate-limit store unavailable")
        return self._fallback.decide(checks, now)

    async def _send(self, batch: list[_Pending], fetches: list[_Fetch]) -> None:
        try:
            await self._run_batch(batch, fetches)
            self._recovered()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            self._fail_all(batch, exc)
            self._fail_fetches(fetches, exc)
        except asyncio.CancelledError:
            self._fail_all(batch, RedisError("rate limiter closed"))
            self._fail_fetches(fetches, RedisError("rate limiter closed"))
            raise
        except Exception as exc:  # a defect here must not leave requests waiting forever
            log.error("rate-limit batch failed", exc_info=exc)
            failure = RedisError(f"rate-limit batch failed: {type(exc).__name__}")
            self._failed(failure)
            self._fail_all(batch, failure)
            self._fail_fetches(fetches, failure)

    @staticmethod
    def _fail_all(batch: list[_Pending], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def _fail_fetches(self, fetches: list[_Fetch], exc: BaseException) -> None:
        for fetch in fetches:
            if self._in_flight.get(fetch.check) is fetch.future:
                del self._in_flight[fetch.check]
            if not fetch.future.done():
                fetch.future.set_exception(exc)

    async def _load_scripts(self, again: bool = False) -> None:
        if again or self._sha is None or self._grant_sha is None:
            async with asyncio.timeout(self._settings.redis_timeout_s):
                self._sha = await self._client.script_load(SLIDING_WINDOW_LUA)
                self._grant_sha = await self._client.script_load(GRANT_LUA)

    def _pack_fetch(self, fetch: _Fetch) -> bytes:
        assert self._grant_sha is not None
        check = fetch.check
        return _pack(b"EVALSHA", self._grant_sha.encode(), 2, self._key(check, fetch.index),
                     self._key(check, fetch.index - 1), int(fetch.now * 1000), check.limit,
                     check.window_s * 1000, fetch.want)

    async def _run_batch(self, batch: list[_Pending], fetches: list[_Fetch] | None = None) -> None:
        fetches = fetches or []
        await self._load_scripts()
        started = time.perf_counter()
        calls = self._plan(batch)
        try:
            replies = await self._execute(self._pack_calls(calls) + [self._pack_fetch(f) for f in fetches])
        except NoScriptError:
            # Redis restarted and lost its script cache. Part of the write may have run (another
            # process's SCRIPT LOAD can land between two reads of it): sending it again may count
            # some requests and grants twice, which can only refuse early, never admit more.
            await self._load_scripts(again=True)
            replies = await self._execute(self._pack_calls(calls) + [self._pack_fetch(f) for f in fetches])
        self._metrics.ratelimit_latency.observe(time.perf_counter() - started)
        if fetches:
            self._granted(fetches, replies[len(calls):])
            replies = replies[:len(calls)]
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
        now_ms = calls[0].now_ms if calls else 0
        for item_id, item in enumerate(batch):
            # When limits of different callers' buckets (different slots) disagree, the
            # admitting bucket's increment stands: it cannot be undone atomically.
            results = found[item_id]
            if len(results) > 1:
                results.sort()
            decided = [result_for(item.checks[index], prev, cur, item.now, admitted[item_id])
                       for index, prev, cur in results]
            if not admitted[item_id]:
                for position, (index, prev, cur) in enumerate(results):
                    check = item.checks[index]
                    # The script's own arithmetic (its clock, in ms) says which limits refused.
                    if exhausted(prev, cur, check.limit, check.window_s * 1000, now_ms):
                        decided[position] = refusal(decided[position])
                        if self._blocks is not None:
                            self._blocks.note(check, prev, cur, item.now)
            if not item.future.done():
                item.future.set_result(decided)

    def _granted(self, fetches: list[_Fetch], replies: list[list[int]]) -> None:
        """Lease fetches answered: the book takes the units, then the waiters wake."""
        book = self.leases
        assert book is not None
        now = self._clock.wall()
        for fetch, reply in zip(fetches, replies, strict=True):
            prev, cur, units = (int(x) for x in reply)
            book.granted(fetch.check, fetch.index, prev, cur, units, now)
            if self._in_flight.get(fetch.check) is fetch.future:
                del self._in_flight[fetch.check]
            if not fetch.future.done():
                fetch.future.set_result(None)

    def _plan(self, batch: list[_Pending]) -> list[_Call]:
        """Group the batch into script calls: per caller bucket, its requests in arrival
        order, each distinct limit once. The batch's first arrival time stands for all
        of it (they arrived within one Redis round trip)."""
        if not batch:
            return []
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

    def _pack_calls(self, calls: list[_Call]) -> list[bytes]:
        assert self._sha is not None
        sha = self._sha.encode()
        return [_pack(b"EVALSHA", sha, len(call.keys), *call.keys, call.now_ms, len(call.checks),
                      *call.limits, *call.masks)
                for call in calls]

    async def _execute(self, commands: list[bytes]) -> list[list[int]]:
        """Send packed script calls in one write on one pooled connection and read
        their replies. (redis-py's Pipeline object cost more per batch than the calls.)"""
        packed = b"".join(commands)
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        try:
            async with asyncio.timeout(self._settings.redis_timeout_s):
                await conn.send_packed_command(packed, check_health=False)
                replies = [await conn.read_response() for _ in commands]
        except BaseException:
            # Replies may still be in flight: this connection cannot be reused.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return [list(r) if isinstance(r, list) else [r] for r in replies]

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



def _consume_exception(future: asyncio.Future[None]) -> None:
    """Marks a lease fetch's failure as seen (it is recorded where the batch failed)."""
    if not future.cancelled():
        future.exception()

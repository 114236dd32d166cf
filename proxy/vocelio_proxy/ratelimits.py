"""Rate-limit arithmetic: tier selection, the sliding-window estimate, the
response headers, and an in-process limiter with the same arithmetic (the
standalone default and the fail-open fallback). Pure; time comes from the caller.

The sliding window keeps two fixed buckets per key (this window and the
previous one) and estimates the requests in the last `window` seconds as
`previous * (1 - elapsed / window) + current`. It assumes the previous
window's requests were spread evenly; at worst (all of them at its very end)
it undercounts them by the elapsed share, so a caller can exceed the limit by
at most that share of the previous window's count, for one window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from .config import RateTier, Service
from .identity import Identity


class LimitCheck(NamedTuple):
    """One limit applied to one caller (a tuple: cheap to build and hash per request)."""

    name: str  # tier name, or "service:<id>"
    bucket: str  # caller key, e.g. "ip:1.2.3.4"
    limit: int
    window_s: int

    def window_index(self, now: float) -> int:
        return int(now // self.window_s)


class LimitResult(NamedTuple):
    check: LimitCheck
    allowed: bool
    remaining: int
    reset_at: int  # epoch seconds when the current window ends
    retry_after_s: float


def matches(tier: RateTier, identity: Identity, route_class: str | None) -> bool:
    kind = tier.match.kind
    if kind == "anonymous":
        return not identity.authenticated
    if kind == "authenticated":
        return identity.method == "jwt"
    if kind == "api-key":
        return identity.method == "api-key"
    if kind == "route-class":
        return route_class is not None and route_class == tier.match.value
    attr = tier.match.attribute or ""
    return identity.attributes.get(attr) == tier.match.value


def select_tier(tiers: Sequence[RateTier], identity: Identity, route_class: str | None) -> RateTier | None:
    """The matching tier with the highest priority (ties: name order), or None."""
    best: RateTier | None = None
    for tier in tiers:
        if matches(tier, identity, route_class) and (
                best is None or (tier.priority, best.name) > (best.priority, tier.name)):
            best = tier
    return best


def checks_for(tiers: Sequence[RateTier], service: Service, identity: Identity) -> list[LimitCheck]:
    checks = []
    tier = select_tier(tiers, identity, service.route_class)
    if tier is not None:
        checks.append(LimitCheck(tier.name, identity.key_for(tier.key_by), tier.requests, tier.window_s))
    if service.rate_limit is not None:
        rl = service.rate_limit
        checks.append(LimitCheck(f"service:{service.id}", identity.key_for(rl.key_by), rl.requests, rl.window_s))
    return checks


def estimate(previous: int, current: int, now: float, window_s: int) -> float:
    elapsed = now - (now // window_s) * window_s
    return previous * (1 - elapsed / window_s) + current


def result_for(check: LimitCheck, previous: int, current: int, now: float, allowed: bool) -> LimitResult:
    """`current` includes this request when it was admitted."""
    used = estimate(previous, current, now, check.window_s)
    window_end = (check.window_index(now) + 1) * check.window_s
    remaining = max(0, math.floor(check.limit - used))
    retry_after = 0.0
    if not allowed:
        # When the previous bucket has decayed enough for one more request, or the window rolls over.
        elapsed = now - check.window_index(now) * check.window_s
        if previous > 0:
            need = (previous * (1 - elapsed / check.window_s) + current + 1 - check.limit) / previous
            retry_after = min(max(need * check.window_s, 1.0), window_end - now)
        else:
            retry_after = max(window_end - now, 1.0)
    return LimitResult(check, allowed, remaining, math.ceil(window_end), retry_after)


def headers_for(results: Sequence[LimitResult]) -> dict[str, str]:
    """X-RateLimit-* for the most restrictive limit, and the IETF RateLimit fields for all."""
    if not results:
        return {}
    if len(results) == 1:  # the common case, per request: no sorting or joining
        only = results[0]
        check = only.check
        return {
            "X-RateLimit-Limit": str(check.limit),
            "X-RateLimit-Remaining": str(only.remaining),
            "X-RateLimit-Reset": str(only.reset_at),
            "RateLimit-Policy": f'"{check.name}";q={check.limit};w={check.window_s}',
        }
    tightest = min(results, key=lambda r: (r.allowed, r.remaining))
    now_reset = tightest.reset_at
    headers = {
        "X-RateLimit-Limit": str(tightest.check.limit),
        "X-RateLimit-Remaining": str(tightest.remaining),
        "X-RateLimit-Reset": str(now_reset),
        "RateLimit-Policy": ", ".join(f'"{r.check.name}";q={r.check.limit};w={r.check.window_s}' for r in results),
    }
    return headers


def ietf_ratelimit(results: Sequence[LimitResult], now: float) -> str:
    return ", ".join(f'"{r.check.name}";r={r.remaining};t={max(0, int(r.reset_at - now))}' for r in results)


class MemoryLimiter:
    """Per-process sliding windows with the same arithmetic as the Redis script."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int, int], int] = {}
        self._decisions = 0

    def decide(self, checks: Sequence[LimitCheck], now: float) -> list[LimitResult]:
        rows = []
        for check in checks:
            idx = check.window_index(now)
            prev = self._counts.get((check.name, check.bucket, check.window_s, idx - 1), 0)
            cur = self._counts.get((check.name, check.bucket, check.window_s, idx), 0)
            rows.append((check, prev, cur, idx))
        allowed = all(estimate(p, c + 1, now, ch.window_s) <= ch.limit for ch, p, c, _ in rows)
        out = []
        for check, prev, cur, idx in rows:
            if allowed:
                cur += 1
                self._counts[(check.name, check.bucket, check.window_s, idx)] = cur
            out.append(result_for(check, prev, cur, now, allowed))
        self._decisions += 1
        if self._decisions % 4096 == 0:
            self._prune(now)
        return out

    def _prune(self, now: float) -> None:
        """Drop buckets older than the previous window."""
        self._counts = {k: v for k, v in self._counts.items() if k[3] >= int(now // k[2]) - 1}

    def __len__(self) -> int:
        return len(self._counts)

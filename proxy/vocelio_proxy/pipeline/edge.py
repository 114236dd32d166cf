"""The edge policy run before forwarding: authenticate (JWT or API key, else
anonymous by client IP), authorize against the route's policy, apply the
caller's rate tier and the service's own limit, and return the identity
headers for the upstream, or the refusal to answer. Built by the composition
root (`lifecycle.app`), which owns its clients (Redis, the JWKS fetcher) and
passes them in; `Proxy` calls it as its `EdgePolicy`.

Credentials are read in one meaning: `Authorization` (Bearer only) or
`X-API-Key`, each at most once, never both (401 otherwise); header names with
`_` never authenticate (the server keeps `X_API_Key` as its own name, and the
pipeline drops it by default). Every 401 for presented credentials costs the
caller one failure in `auth.failure_limit` (the rate limiter's store: Redis
when configured, else in-process); once the caller has used its failures,
requests from it that carry credentials get 429 with Retry-After before any
verification, until the limit would admit another failure. The caller is the
client address's network as one party holds it (`failure_key`): an IPv4
address (/32; IPv4-mapped IPv6 counts as IPv4), an IPv6 /64 (the smallest
prefix a site is given, RFC 6177; one host picks any of its 2^64 addresses).
Identity headers follow `auth.claim_encoding` (see `identity`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.auth.apikeys import ApiKeyStore, load_store
from vocelio_proxy.policy.auth.identity import AuthError, Identity, authorize, identity_headers
from vocelio_proxy.policy.auth.jwks import JwksCache
from vocelio_proxy.policy.auth.tokens import peek, verify_token
from vocelio_proxy.policy.error_envelope import Refusal
from vocelio_proxy.policy.ratelimits import (
    LimitCheck,
    LimitResult,
    MemoryLimiter,
    checks_for,
    headers_for,
    ietf_ratelimit,
)
from vocelio_proxy.policy.routing import RouteMatch
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.redis_limiter import LimiterUnavailable, RedisLimiter
from vocelio_proxy.process.routing_state import GatewayRuntime
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.settings import ProxySettings
from vocelio_proxy.wire.exchange import Exchange

log = logging.getLogger("vocelio.proxy.auth")

#: An edge policy (auth + rate limiting) run before forwarding. It returns a
#: refusal to answer instead, or the identity headers to add upstream.
EdgePolicy = Callable[[Exchange, RouteMatch], Awaitable[Refusal | dict[str, str]]]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="vocelio"'}
_INVALID = {"WWW-Authenticate": 'Bearer realm="vocelio", error="invalid_token"'}
_FAILURE_TIER = "auth-failures"
#: Anonymous callers remembered by address (their `Identity` and, per service, their limit
#: checks), dropped whole past this many: building them per request cost about 1.5 µs.
_ANONYMOUS_MEMO = 4096


def failure_key(ip: str) -> str:
    """The key a client address's failed authentications count under: the IPv4
    address itself, or the /64 of an IPv6 address (an IPv4-mapped one counts as
    its IPv4 address). Text that is not an IP address (never produced by the
    pipeline) is its own key."""
    if ":" not in ip:
        return ip  # IPv4, already canonical (the peer or `ForwardedTrust.client`)
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))


class FailureBlocks:
    """Client addresses refused for failed authentications, each until a wall time.
    Bounded: past `max_entries`, expired entries go, then the oldest."""

    def __init__(self, max_entries: int = 65536) -> None:
        self._until: dict[str, float] = {}
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._until)

    def remaining(self, ip: str, now: float) -> float:
        """Seconds `ip` stays refused (0: not refused)."""
        until = self._until.get(ip)
        if until is None:
            return 0.0
        if until <= now:
            del self._until[ip]
            return 0.0
        return until - now

    def block(self, ip: str, until: float, now: float) -> None:
        if ip not in self._until and len(self._until) >= self._max:
            self._until = {k: v for k, v in self._until.items() if v > now}
            while len(self._until) >= self._max:
                del self._until[next(iter(self._until))]
        self._until[ip] = max(until, self._until.get(ip, 0.0))


class ApiKeyFile:
    """API-key hashes from a mounted Secret or a local file, reloaded when it changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.store = ApiKeyStore([])
        self._stamp: object = None
        self.error = ""

    def refresh(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.store = load_store(self.path)
            self.error = ""
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            log.error("API key file rejected; keeping the previous keys", extra={"fields": {"error": self.error}})


class EdgeGate:
    """The edge policy (an `EdgePolicy`): takes the settings, clock, metrics and
    gateway state it reads, and its clients: the JWKS cache, the Redis limiter
    (None without Redis), the in-process limiter and the API-key file."""

    def __init__(self, settings: ProxySettings, clock: Clock, metrics: ProxyMetrics, state: GatewayState,
                 jwks: JwksCache, limiter: RedisLimiter | None, memory: MemoryLimiter, key_file: ApiKeyFile) -> None:
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._state = state
        self._jwks = jwks
        self._limiter = limiter
        self._memory = memory
        self.key_file = key_file
        self._encoding = self._settings.auth.claim_encoding
        self._blocks = FailureBlocks()
        #: Identities are immutable: one per anonymous address serves all its requests.
        self._anonymous: dict[str, Identity] = {}
        #: An anonymous caller's limit checks depend only on its address, the service and the
        #: runtime's tiers: keyed by address and service id, valid for the runtime `_checks_of`
        #: (a reload starts a new table: the same service may have other limits).
        self._anonymous_checks: dict[tuple[str, str], list[LimitCheck]] = {}
        self._checks_of: GatewayRuntime | None = None

    async def authenticate(self, ex: Exchange) -> Identity:
        ip = ex.client_ip
        auth = _single(ex, "authorization")
        api_key = _single(ex, "x-api-key")
        if auth is not None and api_key is not None:
            raise AuthError("ambiguous", "Send one credential: a bearer token or an API key, not both")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise AuthError("malformed", "Authorization must be 'Bearer <token>'")
            settings = self._settings.auth
            peeked = peek(token, settings)
            await self._jwks.ensure(peeked.issuer, peeked.kid)
            identity = verify_token(token, settings, self._jwks.lookup, self._clock.wall(), peeked)
            return dataclasses.replace(identity, ip=ip)
        if api_key is not None:
            self.key_file.refresh()
            now = dt.datetime.fromtimestamp(self._clock.wall(), dt.UTC)
            return self.key_file.store.authenticate(api_key.strip(), ip, now)
        return Identity(method="anonymous", ip=ip)

    async def _count_failure(self, caller: str) -> None:
        """One failed authentication for `caller` (a `failure_key`) in the failure limit;
        block it when used up."""
        limit = self._settings.auth.failure_limit
        if not limit.requests:
            return
        now = self._clock.wall()
        checks = [LimitCheck(_FAILURE_TIER, f"ip:{caller}", limit.requests, limit.window_s)]
        results: list[LimitResult]
        try:
            results = await self._limiter.decide(checks, now) if self._limiter is not None else []
        except LimiterUnavailable:
            results = []
        if not results:
            results = self._memory.decide(checks, now)
        result = results[0]
        if not result.allowed:
            self._blocks.block(caller, now + result.retry_after_s, now)
        elif result.remaining == 0:
            self._blocks.block(caller, max(float(result.reset_at), now + 1.0), now)

    async def __call__(self, ex: Exchange, match: RouteMatch) -> Refusal | dict[str, str]:
        lookup = ex.lookup
        if "authorization" in lookup or "x-api-key" in lookup:
            caller = failure_key(ex.client_ip)
            if self._settings.auth.failure_limit.requests:
                left = self._blocks.remaining(caller, self._clock.wall())
                if left > 0:
                    self._metrics.ratelimit_decisions.inc((_FAILURE_TIER, "limited"))
                    return Refusal(429, "Too many failed authentications from your address; try again later",
                                   retry_after=left)
            try:
                identity = await self.authenticate(ex)
                upstream = identity_headers(identity, self._encoding)
                ex.caller = identity  # for the access log: user, tenant, key id (never the credential)
            except AuthError as exc:
                self._metrics.auth_failures.labels(exc.reason).inc()
                await self._count_failure(caller)
                return Refusal(401, str(exc), headers=_INVALID)
        else:  # anonymous: no coroutine on the most common path
            anonymous = self._anonymous
            known = anonymous.get(ex.client_ip)
            if known is None:
                if len(anonymous) >= _ANONYMOUS_MEMO:
                    anonymous.clear()
                known = anonymous[ex.client_ip] = Identity(method="anonymous", ip=ex.client_ip)
            identity = known
            upstream = identity_headers(identity, self._encoding)
        decision = authorize(match.service.auth, identity)
        if not decision.allowed:
            self._metrics.auth_failures.labels("forbidden" if decision.status == 403 else "missing").inc()
            return Refusal(decision.status, decision.message, headers=_CHALLENGE if decision.status == 401 else None)
        rt = self._state.runtime
        settings = self._settings.rate_limit
        if settings.enabled and rt is not None:
            if identity.method == "anonymous":
                checks = self._anonymous_limits(rt, match, identity)
            else:
                checks = checks_for(rt.config.rate_tiers, match.service, identity)
            now = self._clock.wall()
            try:
                if self._limiter is not None:
                    # Most requests are decided from held units: no coroutine, no round trip.
                    held = self._limiter.decide_held(checks, now)
                    results = held if held is not None else await self._limiter.decide(checks, now)
                else:
                    results = self._memory.decide(checks, now)
            except LimiterUnavailable:
                return Refusal(503, "Rate limiting is unavailable; try again shortly",
                               retry_after=settings.retry_redis_after_s)
            if results:
                headers = headers_for(results)
                headers["RateLimit"] = ietf_ratelimit(results, now)
                ex.extra_headers = headers
                allowed = all(r.allowed for r in results)
                outcome = "allowed" if allowed else "limited"
                for r in results:
                    self._metrics.ratelimit_decisions.inc((r.check.name, outcome))
                if not allowed:
                    retry = max(r.retry_after_s for r in results if not r.allowed)
                    return Refusal(429, "Rate limit exceeded", retry_after=retry, headers=headers)
        return upstream

    def _anonymous_limits(self, rt: GatewayRuntime, match: RouteMatch, identity: Identity) -> list[LimitCheck]:
        """`checks_for` an anonymous caller, remembered per (address, service) for runtime `rt`
        (the checks are read, never changed, by the limiters)."""
        table = self._anonymous_checks
        if rt is not self._checks_of:
            table.clear()
            self._checks_of = rt
        key = (identity.ip, match.service.id)
        checks = table.get(key)
        if checks is None:
            if len(table) >= _ANONYMOUS_MEMO:
                table.clear()
            checks = table[key] = checks_for(rt.config.rate_tiers, match.service, identity)
        return checks


def _single(ex: Exchange, name: str) -> str | None:
    """The one value of header `name` (lower-case), None when absent; a header sent
    more than once is refused (the server joins repeats with ", ", and neither a
    bearer token nor an API key holds a comma)."""
    value = ex.lookup.get(name)
    if value is not None and "," in value and sum(1 for k, _ in ex.headers if k.lower() == name) > 1:
        raise AuthError("duplicate", f"The {name} header is sent more than once")
    return value

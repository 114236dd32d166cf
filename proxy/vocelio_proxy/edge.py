"""The edge policy run before forwarding: authenticate (JWT or API key, else
anonymous by client IP), authorize against the route's policy, apply the
caller's rate tier and the service's own limit, and return the identity
headers for the upstream, or the refusal to answer. Installed by `install_edge`
as the app's `EDGE_POLICY`; its clients (Redis, JWKS fetcher) live in the
app's cleanup context."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import redis.asyncio as redis
from aiohttp import web

from . import keys
from .apikeys import ApiKeyStore, load_store
from .errors import Refusal
from .exchange import Exchange
from .identity import AuthError, Identity, authorize
from .jwks import JwksCache
from .ratelimits import MemoryLimiter, checks_for, headers_for, ietf_ratelimit
from .redis_limiter import LimiterUnavailable, RedisLimiter
from .routing import RouteMatch
from .tokens import peek, verify_token

log = logging.getLogger("vocelio.proxy.auth")


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
    def __init__(self, app: web.Application, jwks: JwksCache, limiter: RedisLimiter | None,
                 memory: MemoryLimiter, key_file: ApiKeyFile) -> None:
        self._app = app
        self._settings = app[keys.SETTINGS]
        self._clock = app[keys.CLOCK]
        self._metrics = app[keys.METRICS]
        self._state = app[keys.STATE]
        self._jwks = jwks
        self._limiter = limiter
        self._memory = memory
        self.key_file = key_file

    async def authenticate(self, ex: Exchange) -> Identity:
        ip = ex.client_ip
        auth = ex.lookup.get("authorization")
        api_key = ex.lookup.get("x-api-key")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("malformed", "Authorization must be 'Bearer <token>'")
            token = token.strip()
            settings = self._settings.auth
            header, claims = peek(token, settings)
            for issuer in settings.issuers:
                if issuer.issuer == claims.get("iss"):
                    await self._jwks.ensure(issuer, header.get("kid"))
            identity = verify_token(token, settings, self._jwks.lookup, self._clock.wall(), (header, claims))
            return dataclasses.replace(identity, ip=ip)
        if api_key is not None:
            self.key_file.refresh()
            now = dt.datetime.fromtimestamp(self._clock.wall(), dt.UTC)
            return self.key_file.store.authenticate(api_key.strip(), ip, now)
        return Identity(method="anonymous", ip=ip)

    async def __call__(self, ex: Exchange, match: RouteMatch) -> Refusal | dict[str, str]:
        try:
            lookup = ex.lookup
            if "authorization" in lookup or "x-api-key" in lookup:
                identity = await self.authenticate(ex)
            else:  # anonymous: no coroutine on the most common path
                identity = Identity(method="anonymous", ip=ex.client_ip)
        except AuthError as exc:
            self._metrics.auth_failures.labels(exc.reason).inc()
            return Refusal(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="vocelio"'})
        decision = authorize(match.service.auth, identity)
        if not decision.allowed:
            self._metrics.auth_failures.labels("forbidden" if decision.status == 403 else "missing").inc()
            extra = {"WWW-Authenticate": 'Bearer realm="vocelio"'} if decision.status == 401 else None
            return Refusal(decision.status, decision.message, headers=extra)
        rt = self._state.runtime
        settings = self._settings.rate_limit
        if settings.enabled and rt is not None:
            checks = checks_for(rt.config.rate_tiers, match.service, identity)
            now = self._clock.wall()
            try:
                if self._limiter is not None:
                    results = await self._limiter.decide(checks, now)
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
        return identity.upstream_headers()


def install_edge(app: web.Application) -> AsyncIterator[None]:
    """A cleanup-context body: builds the edge policy with its clients and closes them on shutdown."""

    async def lifecycle() -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        session = aiohttp.ClientSession()
        client = None
        limiter = None
        memory = MemoryLimiter()
        if settings.redis_url:
            timeout = settings.rate_limit.redis_timeout_s
            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                          health_check_interval=0, max_connections=8)
            limiter = RedisLimiter(client, settings.rate_limit, app[keys.METRICS], memory)
        jwks = JwksCache(session, settings.auth.jwks_refresh_min_interval_s, app[keys.CLOCK])
        policy = EdgeGate(app, jwks, limiter, memory, ApiKeyFile(settings.api_keys_path))
        policy.key_file.refresh()
        gate: keys.EdgePolicy = policy
        app[keys.EDGE_POLICY] = gate
        app[keys.EDGE_GATE] = policy
        yield
        await session.close()
        if limiter is not None:
            await limiter.close()
        if client is not None:
            await client.aclose()

    return lifecycle()

"""JWKS key cache per issuer: fetched with the app's HTTP client, refreshed
when a token names an unknown `kid` (at most once per configured interval, so a
flood of forged kids cannot hammer the issuer), keeping previous keys through a
rotation. Owned by the edge policy."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from .clock import Clock
from .settings import JwtIssuer
from .tokens import public_key_from_jwk

log = logging.getLogger("vocelio.proxy.auth")


class JwksCache:
    def __init__(self, session: aiohttp.ClientSession, min_interval_s: float, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self._min_interval_s = min_interval_s
        self._keys: dict[str, dict[str | None, Any]] = {}
        self._fetched_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lookup(self, issuer: JwtIssuer, kid: str | None) -> Any:
        if kid is not None and kid in issuer.public_keys:
            return issuer.public_keys[kid]
        if kid is None and len(issuer.public_keys) == 1:
            return next(iter(issuer.public_keys.values()))
        keys = self._keys.get(issuer.issuer, {})
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    async def ensure(self, issuer: JwtIssuer, kid: str | None) -> None:
        """Fetch the JWKS if the kid is unknown and the refresh interval allows."""
        if not issuer.jwks_url or self.lookup(issuer, kid) is not None:
            return
        lock = self._locks.setdefault(issuer.issuer, asyncio.Lock())
        async with lock:
            if self.lookup(issuer, kid) is not None:
                return
            last = self._fetched_at.get(issuer.issuer, float("-inf"))
            now = self._clock.monotonic()
            if now - last < self._min_interval_s:
                return
            self._fetched_at[issuer.issuer] = now
            try:
                async with self._session.get(issuer.jwks_url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    resp.raise_for_status()
                    document = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("JWKS fetch failed", extra={"fields": {"issuer": issuer.issuer, "error": str(exc)}})
                return
            keys = dict(self._keys.get(issuer.issuer, {}))  # previous keys survive a rotation
            for jwk in document.get("keys", []) if isinstance(document, dict) else []:
                try:
                    key = public_key_from_jwk(jwk)
                except (ValueError, TypeError, KeyError):
                    continue
                if key is not None:
                    keys[jwk.get("kid")] = key
            self._keys[issuer.issuer] = keys

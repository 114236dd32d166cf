"""Verification keys per issuer: the static PEM keys of the settings (parsed
once, on first use) and a JWKS cache filled through the `JwksFetch` it is given
(the composition root passes one over the app's HTTP client),
refreshed when a token names an unknown `kid` (at most once per configured
interval, so a flood of forged kids cannot hammer the issuer), keeping previous
keys through a rotation. A JWKS document is hostile input too: entries that are
not RSA/EC signature keys with a string `kid` (or none) are skipped, a document
of the wrong shape changes nothing. Owned by the edge policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.auth.tokens import PublicKey, public_key_from_jwk, public_key_from_pem
from vocelio_proxy.settings import JwtIssuer

log = logging.getLogger("vocelio.proxy.auth")


class JwksUnavailable(Exception):
    """The JWKS document could not be fetched or decoded (the fetcher's one error)."""


#: Fetches and decodes the JSON document at a JWKS URL; raises `JwksUnavailable`.
JwksFetch = Callable[[str], Awaitable[Any]]


class JwksCache:
    def __init__(self, fetch: JwksFetch, min_interval_s: float, clock: Clock) -> None:
        self._fetch = fetch
        self._clock = clock
        self._min_interval_s = min_interval_s
        self._keys: dict[str, dict[str | None, PublicKey]] = {}
        self._static: dict[str, dict[str, PublicKey]] = {}
        self._fetched_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _static_keys(self, issuer: JwtIssuer) -> dict[str, PublicKey]:
        keys = self._static.get(issuer.issuer)
        if keys is None:
            # The settings validated every PEM; one that still fails to load is left out.
            keys = {kid: key for kid, pem in issuer.public_keys.items()
                    if (key := public_key_from_pem(pem)) is not None}
            self._static[issuer.issuer] = keys
        return keys

    def lookup(self, issuer: JwtIssuer, kid: str | None) -> PublicKey | None:
        static = self._static_keys(issuer)
        if kid is not None and kid in static:
            return static[kid]
        if kid is None and len(static) == 1:
            return next(iter(static.values()))
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
                document = await self._fetch(issuer.jwks_url)
            except JwksUnavailable as exc:
                log.warning("JWKS fetch failed", extra={"fields": {"issuer": issuer.issuer, "error": str(exc)}})
                return
            self._keys[issuer.issuer] = merge_jwks(self._keys.get(issuer.issuer, {}), document)


def merge_jwks(previous: dict[str | None, PublicKey], document: Any) -> dict[str | None, PublicKey]:
    """The keys after a fetch: the previous ones (they survive a rotation) plus the
    document's usable entries."""
    keys = dict(previous)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        log.warning("JWKS document has no list of keys; keeping the previous keys")
        return keys
    for jwk in entries:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        key = public_key_from_jwk(jwk)
        if key is not None:
            keys[kid] = key
    return keys

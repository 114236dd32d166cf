"""Response compression: picks brotli or gzip from the client's preferences for
compressible types above a minimum size, when the upstream did not compress.
Used by the proxy handler for buffered bodies (streamed bodies use aiohttp's
gzip stream)."""

from __future__ import annotations

import gzip

import brotli

from vocelio_proxy.settings import CompressionSettings


def _accepted(accept_encoding: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if name:
            out[name.strip().lower()] = q
    return out


def choose_encoding(settings: CompressionSettings, accept_encoding: str | None, content_type: str | None,
                    content_encoding: str | None, length: int | None) -> str | None:
    if not settings.enabled or not accept_encoding or content_encoding or not content_type:
        return None
    if length is not None and length < settings.min_bytes:
        return None
    ctype = content_type.split(";")[0].strip().lower()
    if not any(ctype.startswith(t) for t in settings.types):
        return None
    accepted = _accepted(accept_encoding)
    choices = [(accepted.get(enc, 0.0), rank, enc) for rank, enc in ((2, "br"), (1, "gzip"))]
    q, _, enc = max(choices)
    return enc if q > 0 else None


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "br":
        return bytes(brotli.compress(body, quality=4))
    return gzip.compress(body, compresslevel=5)

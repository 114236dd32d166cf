"""CORS decisions: which origins may call, preflight answers, and the headers
added to actual responses. Pure; the request pipeline applies them.

`*` never goes with credentials (the settings refuse it at load), so the
allowed origin is either `*` (no credentials) or the caller's exact, listed
origin; an origin is never reflected because it asked."""

from __future__ import annotations

from vocelio_proxy.settings import CorsSettings


def origin_allowed(settings: CorsSettings, origin: str) -> bool:
    return "*" in settings.allow_origins or origin in settings.allow_origins


def _allowed_origin(settings: CorsSettings, origin: str) -> str:
    # Listed exactly: echo it (caches must vary on Origin); else the wildcard, which the
    # settings never pair with credentials.
    return origin if origin in settings.allow_origins else "*"


def preflight_headers(settings: CorsSettings, origin: str, method: str, requested: str) -> dict[str, str] | None:
    """Headers for a preflight answer, or None when the origin or method is not allowed."""
    if not origin_allowed(settings, origin) or method.upper() not in settings.allow_methods:
        return None
    allowed = {h.lower() for h in settings.allow_headers}
    asked = [h.strip() for h in requested.split(",") if h.strip()]
    if any(h.lower() not in allowed for h in asked):
        return None
    headers = {
        "Access-Control-Allow-Origin": _allowed_origin(settings, origin),
        "Access-Control-Allow-Methods": ", ".join(settings.allow_methods),
        "Access-Control-Allow-Headers": ", ".join(settings.allow_headers),
        "Access-Control-Max-Age": str(settings.max_age_s),
        "Vary": "Origin",
    }
    if settings.allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def response_headers(settings: CorsSettings, origin: str) -> dict[str, str]:
    if not origin_allowed(settings, origin):
        return {}
    headers = {
        "Access-Control-Allow-Origin": _allowed_origin(settings, origin),
        "Access-Control-Expose-Headers": ", ".join(settings.expose_headers),
        "Vary": "Origin",
    }
    if settings.allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers

"""The outermost aiohttp middleware and response hooks: request ids, client
address, trusted hosts, the catch-all error envelope, security headers, one
JSON access-log line and the request metrics per request. Installed by
`app.create_app`."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from . import keys
from .cors import preflight_headers, response_headers
from .forwarding import accept_request_id, client_address
from .responses import error_response
from .settings import ProxySettings

log = logging.getLogger("vocelio.proxy")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CODE_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
)


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    app = request.app
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    request[keys.REQUEST_ID] = accept_request_id(request.headers.get("X-Request-ID"))
    peer = request.transport.get_extra_info("peername") if request.transport else None
    remote = peer[0] if peer else "0.0.0.0"
    request[keys.CLIENT_IP] = client_address(remote, request.headers.get("X-Forwarded-For"),
                                             settings.trusted_proxies)
    metrics.in_flight_count += 1
    try:
        rejected = _reject_early(request, settings)
        response: web.StreamResponse = rejected if rejected is not None else await handler(request)
    except web.HTTPException as exc:
        response = error_response(request, exc.status, exc.reason or "Request rejected")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", extra={"fields": {"request_id": request[keys.REQUEST_ID]}})
        response = error_response(request, 500, "The gateway failed to handle the request")
    finally:
        metrics.in_flight_count -= 1
    service = request.get(keys.SERVICE_LABEL, "gateway")
    method = request.method if request.method in _METHODS else "OTHER"
    status = response.status
    elapsed = time.perf_counter() - started
    metrics.count_request(service, method, _CODE_CLASS.get(status // 100, "5xx"), elapsed)
    if settings.access_log:
        # The query string is never logged: clients put tokens there.
        app[keys.ACCESS_LOG].write({
            "ts": round(time.time(), 3), "level": "info", "logger": "vocelio.access",
            "request_id": request[keys.REQUEST_ID], "method": request.method,
            "path": request.raw_path.partition("?")[0],
            "service": service, "status": status, "duration_ms": round(elapsed * 1000, 3),
            "upstream": request.get(keys.UPSTREAM), "attempts": request.get(keys.ATTEMPTS, 0),
            "client": request[keys.CLIENT_IP],
        })
    return response


def _reject_early(request: web.Request, settings: ProxySettings) -> web.StreamResponse | None:
    """Hardening checks before any routing: host, URL and header limits, CORS preflight, body size."""
    if settings.trusted_hosts and request.host.split(":")[0].lower() not in settings.trusted_hosts:
        return error_response(request, 421, "Unknown host")
    limits = settings.limits
    if len(request.raw_path) > limits.max_url_bytes:
        return error_response(request, 414, f"The URL exceeds {limits.max_url_bytes} bytes")
    raw_headers = request.raw_headers
    if len(raw_headers) > limits.max_headers:
        return error_response(request, 431, f"More than {limits.max_headers} request headers")
    if sum(len(k) + len(v) for k, v in raw_headers) > limits.max_header_bytes:
        return error_response(request, 431, f"Request headers exceed {limits.max_header_bytes} bytes")
    origin = request.headers.get("Origin")
    if origin is not None:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            allowed = preflight_headers(settings.cors, origin, request.headers["Access-Control-Request-Method"],
                                        request.headers.get("Access-Control-Request-Headers", ""))
            if allowed is None:
                return error_response(request, 403, "Cross-origin request not allowed")
            return web.Response(status=204, headers=allowed)
        extra = response_headers(settings.cors, origin)
        if extra:
            request[keys.CORS_HEADERS] = extra
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        return error_response(request, 413, f"Request body exceeds {limits.max_body_bytes} bytes")
    return None


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["X-Request-ID"] = request.get(keys.REQUEST_ID) or "unknown"
    for name, value in SECURITY_HEADERS:
        # Upstreams that set these deliberately keep their values.
        headers.setdefault(name, value)
    extra = request.get(keys.RESPONSE_EXTRA_HEADERS)
    if extra:
        for name, value in extra.items():
            headers.setdefault(name, value)
    cors = request.get(keys.CORS_HEADERS)
    if cors:
        for name, value in cors.items():
            headers.setdefault(name, value)

"""The request pipeline every client request goes through, in order: request
id and client address, early refusals (method, host, CORS preflight, declared
body size), path normalisation, the gateway's own endpoints or the proxy, a
catch-all error envelope, then the request metrics and one JSON access-log
line. Built once per application by `app.start_gateway` and called by the
server for each `Exchange`."""

from __future__ import annotations

import asyncio
import logging
import time
from json.encoder import encode_basestring_ascii

from aiohttp import web

from . import keys
from .cors import preflight_headers, response_headers
from .endpoints import ENDPOINTS
from .errors import Refusal
from .exchange import BodyError, Exchange
from .forwarding import accept_request_id, client_address
from .paths import PathError, normalize_path
from .proxying import Proxy
from .responses import send_error, send_reply
from .server import HttpConnection

log = logging.getLogger("vocelio.proxy")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CODE_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_ENDPOINT_METHODS = frozenset({"GET", "HEAD"})


class GatewayHandler:
    def __init__(self, app: web.Application) -> None:
        settings = app[keys.SETTINGS]
        self._app = app
        self._settings = settings
        self._metrics = app[keys.METRICS]
        self._clock = app[keys.CLOCK]
        self._access_log = app[keys.ACCESS_LOG] if settings.access_log else None
        self._trusted_hops = settings.trusted_proxies
        self._trusted_hosts = frozenset(settings.trusted_hosts)
        self._max_body = settings.limits.max_body_bytes
        self._proxy = Proxy(app)

    async def __call__(self, ex: Exchange, out: HttpConnection) -> None:
        started = time.perf_counter()
        lookup = ex.lookup
        ex.request_id = accept_request_id(lookup.get("x-request-id"))
        if self._trusted_hops:
            ex.client_ip = client_address(ex.peer, lookup.get("x-forwarded-for"), self._trusted_hops)
        metrics = self._metrics
        metrics.in_flight_count += 1
        try:
            await self._dispatch(ex, out)
        except asyncio.CancelledError:  # the server cancels the request of a client that left
            _client_gone(ex, out)
            raise
        except ConnectionError:
            _client_gone(ex, out)
        except BodyError as exc:
            # The client's body broke (framing, stall): answer if nothing was sent, then close.
            if ex.status == 0:
                self._refuse(out, ex, exc.status, exc.message)
            out.close()
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": ex.request_id}})
            if ex.status == 0:
                self._refuse(out, ex, 500, "The gateway failed to handle the request")
            else:
                out.abort()
        finally:
            metrics.in_flight_count -= 1
            self._record(ex, time.perf_counter() - started)

    def _refuse(self, out: HttpConnection, ex: Exchange, status: int, message: str,
                headers: dict[str, str] | None = None) -> None:
        send_error(out, ex, self._clock.wall(), Refusal(status, message, headers=headers))

    async def _dispatch(self, ex: Exchange, out: HttpConnection) -> None:
        if self._refused_early(ex, out):
            return
        try:
            path = normalize_path(ex.path)
        except PathError as exc:
            self._refuse(out, ex, 400, f"Invalid request path: {exc}")
            return
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            await self._proxy.handle(ex, out, path)
            return
        if ex.method not in _ENDPOINT_METHODS:
            self._refuse(out, ex, 405, f"{path} answers GET and HEAD only", {"Allow": "GET, HEAD"})
            return
        reply = endpoint(self._app)
        send_reply(out, ex, reply.status, reply.body, reply.content_type, reply.headers)

    def _refused_early(self, ex: Exchange, out: HttpConnection) -> bool:
        """Hardening before routing: method, host, CORS preflight, declared body size.
        (URL and header sizes are enforced by the server while it parses.)"""
        if ex.method == "CONNECT":
            self._refuse(out, ex, 405, "CONNECT is not supported: this is a reverse proxy")
            return True
        lookup = ex.lookup
        if self._trusted_hosts and lookup.get("host", "").split(":")[0].lower() not in self._trusted_hosts:
            self._refuse(out, ex, 421, "Unknown host")
            return True
        origin = lookup.get("origin")
        if origin is not None:
            cors = self._settings.cors
            if ex.method == "OPTIONS" and "access-control-request-method" in lookup:
                allowed = preflight_headers(cors, origin, lookup["access-control-request-method"],
                                            lookup.get("access-control-request-headers", ""))
                if allowed is None:
                    self._refuse(out, ex, 403, "Cross-origin request not allowed")
                else:
                    send_reply(out, ex, 204, b"", None, allowed)
                return True
            ex.cors_headers = response_headers(cors, origin) or None
        length = ex.content_length
        if length is not None and length > self._max_body:
            self._refuse(out, ex, 413, f"Request body exceeds {self._max_body} bytes")
            return True
        return False

    def _record(self, ex: Exchange, elapsed: float) -> None:
        status = ex.status
        method = ex.method if ex.method in _METHODS else "OTHER"
        self._metrics.count_request(ex.service_label, method, _CODE_CLASS.get(status // 100, "5xx"), elapsed)
        if self._access_log is not None:
            # Built by hand: only the path can hold characters JSON must escape (the
            # request id, method, service and addresses are validated tokens).
            # The query string is never logged: clients put tokens there.
            upstream = f'"{ex.upstream}"' if ex.upstream else "null"
            self._access_log.write_line(
                f'{{"ts": {time.time():.3f}, "level": "info", "logger": "vocelio.access", '
                f'"request_id": "{ex.request_id}", "method": {encode_basestring_ascii(ex.method)}, '
                f'"path": {encode_basestring_ascii(ex.path)}, "service": {encode_basestring_ascii(ex.service_label)}, '
                f'"status": {status}, "duration_ms": {elapsed * 1000:.3f}, "upstream": {upstream}, '
                f'"attempts": {ex.attempts}, "client": "{ex.client_ip}"}}')


def _client_gone(ex: Exchange, out: HttpConnection) -> None:
    """Before any answer, a client that left is recorded as nginx's 499 (client closed
    request): a 4xx, so disconnects never read as gateway errors."""
    out.abort()
    if ex.status == 0:
        ex.status = 499

"""The proxy handler: routes a client request, runs the edge policy, asks the
breaker, picks an endpoint, forwards through the upstream pool with retries,
and streams the answer back through the client's connection; upgrade requests
become tunnels. Policy decisions are delegated to the pure modules (routing,
balancing, breakers, retries, forwarding); this module moves bytes and records
outcomes. Built once per application by `handling.GatewayHandler`."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import Any

from aiohttp import web

from . import keys
from .compression import choose_encoding, compress
from .errors import Refusal
from .exchange import BodySource, Exchange
from .forwarding import child_traceparent, response_head, upstream_request_headers
from .health import EndpointState, record_passive_result
from .responses import add_gateway_headers, send_error
from .retries import is_retryable_status, may_retry_method
from .routing import RouteMatch
from .runtime import ServiceRuntime
from .server import HttpConnection, status_line
from .tunnel import open_upgrade
from .upstream import LAST_CHUNK, UpstreamConnection, UpstreamError, encode_chunk, request_head

log = logging.getLogger("vocelio.proxy")

_SMALL_BODY = 64 * 1024
_NO_TRIES: frozenset[str] = frozenset()


class _BodyTooLarge(Exception):
    pass


class Proxy:
    def __init__(self, app: web.Application) -> None:
        settings = app[keys.SETTINGS]
        self._state = app[keys.STATE]
        self._pool = app[keys.POOL]
        self._metrics = app[keys.METRICS]
        self._clock = app[keys.CLOCK]
        self._gate = app.get(keys.EDGE_POLICY)
        self._trusted_hops = settings.trusted_proxies
        self._max_body = settings.limits.max_body_bytes
        self._compression = settings.compression

    def _refuse(self, out: HttpConnection, ex: Exchange, status: int, message: str,
                retry_after: float | None = None) -> None:
        send_error(out, ex, self._clock.wall(), Refusal(status, message, retry_after))

    async def handle(self, ex: Exchange, out: HttpConnection, path: str) -> None:
        """Serve `ex`, whose normalised path is `path`, from the routed service."""
        rt = self._state.runtime
        if rt is None:
            self._refuse(out, ex, 503, "The gateway has not loaded a configuration yet", 5)
            return
        match = rt.router.match(path)
        if match is None:
            self._refuse(out, ex, 404, f"No service is routed at {path}")
            return
        svc = rt.services[match.service.id]
        ex.service_label = match.service.name
        gate = self._gate
        identity: dict[str, str] = {}
        if gate is not None:
            outcome = await gate(ex, match)
            if isinstance(outcome, Refusal):
                send_error(out, ex, self._clock.wall(), outcome)
                return
            identity = outcome
        elif match.service.auth.mode != "public":
            # Fail closed: a protected route is never served without the auth layer.
            self._refuse(out, ex, 401, "Authentication is required and not configured on this gateway")
            return
        if ex.upgrade:
            await self._tunnel(ex, out, svc, match, identity)
        else:
            await self._forward(ex, out, svc, match, identity)

    def _upstream_headers(self, ex: Exchange, identity: dict[str, str]) -> list[tuple[str, str]]:
        lookup = ex.lookup
        return upstream_request_headers(
            ex.headers, remote=ex.client_ip, scheme="http", host=lookup.get("host", ""),
            trusted_hops=self._trusted_hops, request_id=ex.request_id,
            traceparent=child_traceparent(lookup.get("traceparent")), identity=identity)

    async def _forward(self, ex: Exchange, out: HttpConnection, svc: ServiceRuntime, match: RouteMatch,
                       identity: dict[str, str]) -> None:
        service = svc.service
        admission = svc.breaker.allow()
        if not admission.allowed:
            self._refuse(out, ex, 503, f"The {service.name} service is temporarily unavailable "
                         "(circuit breaker open)", admission.retry_after_s)
            return
        method = ex.method
        body = ex.body
        length = ex.content_length if body is not None else 0
        replayable = may_retry_method(service.retry, method, body is not None)
        headers = self._upstream_headers(ex, identity)
        target = _upstream_target(ex, match)
        body_limit = self._max_body if service.max_body_bytes is None else min(self._max_body,
                                                                                service.max_body_bytes)
        timeouts = service.timeouts
        pool = self._pool
        metrics = self._metrics
        svc.budget.record_request()
        tried: set[str] = set()
        attempts = service.retry.attempts
        attempt = 0
        probe = admission.probe
        while True:
            attempt += 1
            ep = svc.balancer.pick(frozenset(tried) if tried else _NO_TRIES)
            if ep is None and tried:
                ep = svc.balancer.pick()
            if ep is None:
                svc.breaker.record(False, probe)
                self._refuse(out, ex, 503, f"The {service.name} service has no healthy endpoint", 5)
                return
            key = ep.key
            tried.add(key)
            ex.upstream = key
            ex.attempts = attempt
            ep.in_flight += 1
            started = time.perf_counter()
            conn: UpstreamConnection | None = None
            try:
                conn = pool.acquire_idle(key) or await pool.acquire(ep.endpoint.address, ep.endpoint.port,
                                                                    timeouts.connect_s)
                fut = conn.start_request(request_head(method, target, ex.host, headers, length), method,
                                         timeouts.request_s)
                if body is not None:
                    try:
                        await _send_body(body, conn, fut, length, body_limit)
                    except UpstreamError:
                        # An upstream may answer (413, 401...) and close before reading the body.
                        if not (fut.done() and fut.exception() is None):
                            raise
                        conn.keep_alive = False
                upstream = await fut
            except UpstreamError as exc:
                ep.in_flight -= 1
                if conn is not None:
                    conn.abort()
                _record_outcome(svc, ep, False, self._clock.monotonic())
                metrics.upstream_errors.labels(service.name, exc.kind).inc()
                stale = exc.reused and exc.kind == "reset" and not exc.response_started
                retry_ok = (exc.kind == "connect" or replayable) and attempt < attempts + (1 if stale else 0)
                if retry_ok and (stale or svc.budget.try_acquire()):
                    metrics.retries.labels(service.name, "stale" if stale else exc.kind).inc()
                    continue
                svc.breaker.record(False, probe)
                if exc.kind == "timeout":
                    self._refuse(out, ex, 504, f"The {service.name} service did not answer in time")
                else:
                    self._refuse(out, ex, 502, f"The {service.name} service failed: {exc}")
                return
            except _BodyTooLarge as exc:
                ep.in_flight -= 1
                if conn is not None:
                    conn.abort()
                self._refuse(out, ex, 413, str(exc))
                return
            except (asyncio.CancelledError, ConnectionResetError):
                ep.in_flight -= 1
                if conn is not None:
                    conn.abort()
                raise
            metrics.observe_upstream(service.name, time.perf_counter() - started)
            status = upstream.status
            server_error = status >= 500
            if (is_retryable_status(service.retry, status) and replayable
                    and attempt < attempts and svc.budget.try_acquire()):
                ep.in_flight -= 1
                conn.abort()
                _record_outcome(svc, ep, False, self._clock.monotonic())
                metrics.retries.labels(service.name, str(status)).inc()
                continue
            try:
                await self._respond(ex, out, conn, status, upstream.headers, timeouts.idle_s)
            except UpstreamError as exc:
                # The head is already with the client: all that is left is to cut the
                # stream, so the client sees a truncated response, never a complete one.
                server_error = True
                metrics.upstream_errors.labels(service.name, exc.kind).inc()
                log.warning("upstream failed mid-response", extra={"fields": {
                    "service": service.id, "endpoint": key, "error": str(exc), "request_id": ex.request_id}})
                out.abort()
            finally:
                ep.in_flight -= 1
                pool.release(conn)
                _record_outcome(svc, ep, not server_error, self._clock.monotonic())
                svc.breaker.record(not server_error, probe)
            return

    async def _respond(self, ex: Exchange, out: HttpConnection, conn: UpstreamConnection, status: int,
                       upstream_headers: list[tuple[str, str]], idle_s: float) -> None:
        head = response_head(upstream_headers)
        headers = head.headers
        add_gateway_headers(ex, headers, head.present)
        body = conn.body_complete_buffered()
        accept = ex.lookup.get("accept-encoding")
        encoding = None
        if accept is not None and status == 200 and ex.method != "HEAD":
            size = len(body) if body is not None else head.declared_length
            encoding = choose_encoding(self._compression, accept, head.content_type, head.content_encoding, size)
        if body is not None and len(body) <= _SMALL_BODY:
            if encoding is not None:
                body = compress(body, encoding)
                headers.append(("Content-Encoding", encoding))
                headers.append(("Vary", "Accept-Encoding"))
            out.send(ex, status, headers, body, head.declared_length if ex.method == "HEAD" else None)
            return
        compressor = None
        if encoding is not None and "gzip" in (accept or ""):
            # Streamed bodies are gzipped incrementally: no whole-body buffering.
            compressor = zlib.compressobj(5, zlib.DEFLATED, 31)
            headers.append(("Content-Encoding", "gzip"))
            headers.append(("Vary", "Accept-Encoding"))
            out.start(ex, status, headers, None)
        else:
            out.start(ex, status, headers, head.declared_length)
        if body:
            out.write(compressor.compress(body) if compressor else body)
        else:
            async for chunk in conn.iter_body(idle_s):
                out.write(compressor.compress(chunk) if compressor else chunk)
                await out.drain()
        if compressor is not None:
            out.write(compressor.flush())
        out.finish()

    async def _tunnel(self, ex: Exchange, out: HttpConnection, svc: ServiceRuntime, match: RouteMatch,
                      identity: dict[str, str]) -> None:
        """Forward an upgrade request; after a 101, relay bytes both ways until either side closes."""
        service = svc.service
        ep = svc.balancer.pick()
        if ep is None:
            self._refuse(out, ex, 503, f"The {service.name} service has no healthy endpoint", 5)
            return
        headers = self._upstream_headers(ex, identity)
        headers.append(("Connection", "Upgrade"))
        headers.append(("Upgrade", ex.lookup.get("upgrade", "")))
        target = _upstream_target(ex, match)
        ex.upstream = ep.key
        ex.attempts = 1
        try:
            transport, upstream, answer = await open_upgrade(
                ep.endpoint.address, ep.endpoint.port, request_head(ex.method, target, ex.host, headers, 0),
                service.timeouts.connect_s, service.timeouts.request_s)
        except UpstreamError as exc:
            _record_outcome(svc, ep, False, self._clock.monotonic())
            if exc.kind == "timeout":
                self._refuse(out, ex, 504, f"The {service.name} service did not answer the upgrade in time")
            else:
                self._refuse(out, ex, 502, f"Upgrade to {service.name} failed: {exc}")
            return
        try:
            if answer.status != 101:
                refused = response_head(answer.headers)
                add_gateway_headers(ex, refused.headers, refused.present)
                out.send(ex, answer.status, refused.headers, answer.body)
                return
            lines = [f"{k}: {v}\r\n" for k, v in answer.headers if k.lower() != "x-request-id"]
            head = status_line(101) + "".join(lines) + f"X-Request-ID: {ex.request_id}\r\n\r\n"
            closed = out.start_tunnel(ex, head.encode("latin-1"), transport)
            upstream.attach(out)
            await closed
        finally:
            transport.close()


def _upstream_target(ex: Exchange, match: RouteMatch) -> str:
    """The rewritten path plus the client's query string, as sent."""
    query = ex.target.find("?")
    return match.upstream_path if query < 0 else match.upstream_path + ex.target[query:]


def _record_outcome(svc: ServiceRuntime, ep: EndpointState, ok: bool, now: float) -> None:
    if record_passive_result(ep, ok, now, svc.service.passive_health):
        log.warning("endpoint ejected", extra={"fields": {
            "service": svc.service.id, "endpoint": ep.key, "ejections": ep.ejections}})


async def _send_body(body: BodySource, conn: UpstreamConnection, answered: asyncio.Future[Any],
                     length: int | None, limit: int | None) -> None:
    sent = 0
    chunked = length is None
    if limit is not None and length is not None and length > limit:
        raise _BodyTooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes")
    async for chunk in body.chunks():
        sent += len(chunk)
        if limit is not None and sent > limit:
            raise _BodyTooLarge(f"Request body exceeds the limit of {limit} bytes")
        if answered.done():
            conn.keep_alive = False
            return
        conn.write(encode_chunk(chunk) if chunked else chunk)
        await conn.drain_ready()
    if chunked:
        conn.write(LAST_CHUNK)

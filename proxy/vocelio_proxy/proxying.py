"""The proxy handler: routes a client request, runs the edge policy, asks the
breaker, picks an endpoint, forwards through the upstream pool with retries,
and streams the answer back through the client's connection; upgrade requests
become tunnels. Policy decisions are delegated to the pure modules (routing,
balancing, breakers, retries, forwarding, upgrades); this module moves bytes
and records outcomes.

Three rules hold on every path here: each breaker admission is settled in one
`finally` (a verdict about the upstream, or a release when there is none);
a request's attempts share one deadline (`timeouts.request_s` from routing to
the response head); and client envelopes say what failed, never where (the
address and the error text go to the log with the request id). Built once per
application by `handling.GatewayHandler`."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import Any

from aiohttp import web

from . import keys
from .compression import choose_encoding, compress
from .config import Service
from .errors import Refusal
from .exchange import BodySource, Exchange
from .forwarding import child_traceparent, response_head, upstream_request_headers
from .health import EndpointState, record_passive_result
from .paths import PathError
from .responses import add_gateway_headers, send_error
from .retries import attempt_budget, connect_budget, is_retryable_status, may_retry_method, may_start_retry
from .routing import RouteMatch
from .runtime import ServiceRuntime
from .server import HttpConnection, status_line
from .tunnel import open_upgrade
from .upgrades import H2C_HEADERS, offered_upgrade, offers_websocket, switch_problem, valid_websocket_key
from .upstream import LAST_CHUNK, UpstreamConnection, UpstreamError, encode_chunk, request_head

log = logging.getLogger("vocelio.proxy")

_SMALL_BODY = 64 * 1024
_NO_TRIES: frozenset[str] = frozenset()


class _BodyTooLarge(Exception):
    pass


#: What the client is told for each kind of upstream failure: what happened, never
#: where (addresses, ports and exception text go to the log with the request id).
_FAILURE_MESSAGES = {
    "connect": "could not be reached",
    "reset": "closed the connection before answering",
    "protocol": "sent an invalid response",
}


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
        # Deadlines run on the event loop's clock, the one the upstream timers use.
        self._now = asyncio.get_running_loop().time

    def _refuse(self, out: HttpConnection, ex: Exchange, status: int, message: str,
                retry_after: float | None = None) -> None:
        send_error(out, ex, self._clock.wall(), Refusal(status, message, retry_after))

    async def handle(self, ex: Exchange, out: HttpConnection, path: str) -> None:
        """Serve `ex`, whose normalised path is `path`, from the routed service."""
        routed_at = self._now()
        rt = self._state.runtime
        if rt is None:
            self._refuse(out, ex, 503, "The gateway has not loaded a configuration yet", 5)
            return
        try:
            match = rt.router.resolve(path)
        except PathError as exc:
            self._refuse(out, ex, 400, f"Invalid request path: {exc}")
            return
        if match is None:
            self._refuse(out, ex, 404, f"No service is routed at {path}")
            return
        svc = rt.services[match.service.id]
        ex.service_label = match.service.name
        offered = None
        if ex.upgrade:
            if ex.body is not None:
                # The parser hands bytes after an upgrade head to the tunnel, while RFC 9110
                # reads them as the body first: two meanings, so neither is served.
                self._refuse(out, ex, 400, "An upgrade request cannot carry a body")
                return
            offered = offered_upgrade(match.service.upgrades, ex.lookup.get("upgrade", ""))
            if offered is not None and offers_websocket(offered) and not valid_websocket_key(
                    ex.lookup.get("sec-websocket-key")):
                self._refuse(out, ex, 400, "Invalid WebSocket handshake: Sec-WebSocket-Key must be "
                             "base64 of 16 bytes")
                return
            # Without an allowed protocol the Upgrade is ignored (RFC 9110 7.8): a plain request.
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
        deadline = routed_at + match.service.timeouts.request_s
        if offered is not None:
            await self._tunnel(ex, out, svc, match, identity, offered, deadline)
        else:
            await self._forward(ex, out, svc, match, identity, deadline)

    def _upstream_headers(self, ex: Exchange, identity: dict[str, str]) -> list[tuple[str, str]]:
        lookup = ex.lookup
        headers = upstream_request_headers(
            ex.headers, remote=ex.client_ip, scheme="http", host=lookup.get("host", ""),
            trusted_hops=self._trusted_hops, request_id=ex.request_id,
            traceparent=child_traceparent(lookup.get("traceparent")), identity=identity)
        if "http2-settings" in lookup:
            # Part of an h2c upgrade, which is never forwarded (even when Connection did not list it).
            headers = [(k, v) for k, v in headers if k.lower() not in H2C_HEADERS]
        return headers

    def _upstream_failed(self, out: HttpConnection, ex: Exchange, service: Service, endpoint: str,
                         exc: UpstreamError) -> None:
        """Answer an upstream failure: the envelope says what happened, the log says where."""
        timed_out = exc.kind == "timeout" or isinstance(exc.__cause__, TimeoutError)
        log.warning("upstream request failed", extra={"fields": {
            "request_id": ex.request_id, "service": service.id, "endpoint": endpoint, "kind": exc.kind,
            "error": str(exc), "attempts": ex.attempts}})
        if timed_out:
            self._refuse(out, ex, 504, f"The {service.name} service did not answer in time")
        else:
            what = _FAILURE_MESSAGES.get(exc.kind, "failed")
            self._refuse(out, ex, 502, f"The {service.name} service {what}")

    async def _forward(self, ex: Exchange, out: HttpConnection, svc: ServiceRuntime, match: RouteMatch,
                       identity: dict[str, str], deadline: float) -> None:
        service = svc.service
        breaker = svc.breaker
        admission = breaker.allow()
        if not admission.allowed:
            self._refuse(out, ex, 503, f"The {service.name} service is temporarily unavailable "
                         "(circuit breaker open)", admission.retry_after_s)
            return
        # The admission is settled in the `finally` below on every exit: with the verdict
        # about the upstream when there is one, else released (client gone, body broken,
        # gateway error). The breaker can therefore never keep a slot for a dead request.
        verdict: bool | None = None
        try:
            method = ex.method
            body = ex.body
            length = ex.content_length if body is not None else 0
            replayable = may_retry_method(service.retry, method, body is not None)
            head = request_head(method, _upstream_target(ex, match), ex.host,
                                self._upstream_headers(ex, identity), length)
            body_limit = self._max_body if service.max_body_bytes is None else min(self._max_body,
                                                                                    service.max_body_bytes)
            timeouts = service.timeouts
            pool = self._pool
            metrics = self._metrics
            now = self._now
            svc.budget.record_request()
            tried: set[str] = set()
            attempts = service.retry.attempts
            attempt = 0
            while True:
                attempt += 1
                ep = svc.balancer.pick(frozenset(tried) if tried else _NO_TRIES)
                if ep is None and tried:
                    ep = svc.balancer.pick()
                if ep is None:
                    verdict = False
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
                    begun = now()
                    budget = attempt_budget(timeouts, deadline - begun)
                    conn = pool.acquire_idle(key)
                    if conn is None:
                        conn = await pool.acquire(ep.endpoint.address, ep.endpoint.port,
                                                  connect_budget(timeouts, budget))
                        # Connect time counts: the attempt keeps what is left of its budget.
                        budget -= now() - begun
                    fut = conn.start_request(head, method, budget if budget > 0.001 else 0.001)
                    if body is not None:
                        await _send_body(body, conn, fut, length, body_limit)
                    upstream = await fut
                except UpstreamError as exc:
                    ep.in_flight -= 1
                    if conn is not None:
                        conn.abort()
                    _record_outcome(svc, ep, False, self._clock.monotonic())
                    metrics.upstream_errors.labels(service.name, exc.kind).inc()
                    stale = exc.reused and exc.kind == "reset" and not exc.response_started
                    retry_ok = ((exc.kind == "connect" or replayable) and attempt < attempts + (1 if stale else 0)
                                and may_start_retry(timeouts, deadline - now()))
                    if retry_ok and (stale or svc.budget.try_acquire()):
                        metrics.retries.labels(service.name, "stale" if stale else exc.kind).inc()
                        continue
                    verdict = False
                    self._upstream_failed(out, ex, service, key, exc)
                    return
                except _BodyTooLarge as exc:
                    ep.in_flight -= 1
                    if conn is not None:
                        conn.abort()
                    self._refuse(out, ex, 413, str(exc))
                    return
                except BaseException:
                    # The client left or its body broke (BodyError), or the gateway failed:
                    # no verdict about the upstream; free what this attempt held.
                    ep.in_flight -= 1
                    if conn is not None:
                        conn.abort()
                    raise
                metrics.observe_upstream(service.name, time.perf_counter() - started)
                status = upstream.status
                if status < 200:
                    # A 101 (or a stray 1xx) to a request that asked for no upgrade: never a tunnel.
                    ep.in_flight -= 1
                    conn.abort()
                    _record_outcome(svc, ep, False, self._clock.monotonic())
                    metrics.upstream_errors.labels(service.name, "protocol").inc()
                    metrics.upgrades_refused.labels(service.name).inc()
                    verdict = False
                    self._upstream_failed(out, ex, service, key, UpstreamError(
                        "protocol", f"unexpected {status} to a request without an upgrade"))
                    return
                if (is_retryable_status(service.retry, status) and replayable and attempt < attempts
                        and may_start_retry(timeouts, deadline - now()) and svc.budget.try_acquire()):
                    ep.in_flight -= 1
                    conn.abort()
                    _record_outcome(svc, ep, False, self._clock.monotonic())
                    metrics.retries.labels(service.name, str(status)).inc()
                    continue
                verdict = status < 500
                try:
                    await self._respond(ex, out, conn, status, upstream.headers, timeouts.idle_s)
                except UpstreamError as exc:
                    # The head is already with the client: all that is left is to cut the
                    # stream, so the client sees a truncated response, never a complete one.
                    verdict = False
                    metrics.upstream_errors.labels(service.name, exc.kind).inc()
                    log.warning("upstream failed mid-response", extra={"fields": {
                        "service": service.id, "endpoint": key, "error": str(exc), "request_id": ex.request_id}})
                    out.abort()
                finally:
                    ep.in_flight -= 1
                    pool.release(conn)
                    _record_outcome(svc, ep, verdict is True, self._clock.monotonic())
                return
        finally:
            breaker.settle(admission, verdict)

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
                      identity: dict[str, str], offered: str, deadline: float) -> None:
        """Forward an upgrade request offering `offered` (allowed protocols only); after a
        valid 101, relay bytes both ways until either side closes or the tunnel idles out.
        The tunnel goes through the breaker like any request (its verdict is the upstream's
        answer to the upgrade) and counts in the endpoint's in-flight requests until it closes."""
        service = svc.service
        breaker = svc.breaker
        metrics = self._metrics
        admission = breaker.allow()
        if not admission.allowed:
            self._refuse(out, ex, 503, f"The {service.name} service is temporarily unavailable "
                         "(circuit breaker open)", admission.retry_after_s)
            return
        verdict: bool | None = None
        settled = False
        try:
            ep = svc.balancer.pick()
            if ep is None:
                verdict = False
                self._refuse(out, ex, 503, f"The {service.name} service has no healthy endpoint", 5)
                return
            headers = self._upstream_headers(ex, identity)
            headers.append(("Connection", "Upgrade"))
            headers.append(("Upgrade", offered))
            target = _upstream_target(ex, match)
            ex.upstream = ep.key
            ex.attempts = 1
            ep.in_flight += 1
            try:
                left = deadline - self._now()
                try:
                    transport, upstream, answer = await open_upgrade(
                        ep.endpoint.address, ep.endpoint.port, request_head(ex.method, target, ex.host, headers, 0),
                        connect_budget(service.timeouts, left), left if left > 0.001 else 0.001)
                except UpstreamError as exc:
                    verdict = False
                    _record_outcome(svc, ep, False, self._clock.monotonic())
                    metrics.upstream_errors.labels(service.name, exc.kind).inc()
                    self._upstream_failed(out, ex, service, ep.key, exc)
                    return
                try:
                    if answer.status != 101:
                        verdict = answer.status < 500
                        _record_outcome(svc, ep, verdict is True, self._clock.monotonic())
                        refused = response_head(answer.headers)
                        add_gateway_headers(ex, refused.headers, refused.present)
                        out.send(ex, answer.status, refused.headers, answer.body)
                        return
                    problem = switch_problem(offered, answer.headers, ex.lookup.get("sec-websocket-key"))
                    if problem is not None:
                        verdict = False
                        _record_outcome(svc, ep, False, self._clock.monotonic())
                        metrics.upstream_errors.labels(service.name, "protocol").inc()
                        metrics.upgrades_refused.labels(service.name).inc()
                        transport.abort()
                        self._upstream_failed(out, ex, service, ep.key, UpstreamError("protocol", problem))
                        return
                    # The upstream agreed to switch: that is the verdict, given now so that a
                    # long-lived tunnel never holds a half-open probe slot.
                    settled = True
                    breaker.record(True, admission.probe)
                    _record_outcome(svc, ep, True, self._clock.monotonic())
                    lines = [f"{k}: {v}\r\n" for k, v in answer.headers if k.lower() != "x-request-id"]
                    head = status_line(101) + "".join(lines) + f"X-Request-ID: {ex.request_id}\r\n\r\n"
                    metrics.tunnels.labels(service.name).inc()
                    gauge = metrics.tunnels_open.labels(service.name)
                    gauge.inc()
                    try:
                        closed = out.start_tunnel(ex, head.encode("latin-1"),
                                                  upstream.client_side(service.timeouts.tunnel_idle_s))
                        upstream.attach(out)
                        await closed
                    finally:
                        gauge.dec()
                        upstream.stop_idle_timer()
                        if upstream.idle_closed:
                            metrics.tunnel_idle_closes.labels(service.name).inc()
                finally:
                    transport.close()
            finally:
                ep.in_flight -= 1
        finally:
            if not settled:
                breaker.settle(admission, verdict)


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
    """Stream the client's body upstream. An upstream that stopped reading because it
    already answered (413, 401...) ends the upload; one that failed (its deadline) raises
    its own error, not the write's."""
    sent = 0
    chunked = length is None
    if limit is not None and length is not None and length > limit:
        raise _BodyTooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes")
    try:
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
    except UpstreamError:
        if not answered.done() or answered.cancelled():
            raise
        failure = answered.exception()
        if failure is not None:
            raise failure from None
        conn.keep_alive = False

"""The proxy handler: routes a client request, runs the edge policy, asks the
breaker, picks an endpoint, forwards through the upstream pool with retries,
and streams the answer back through the client's connection; upgrade requests
become tunnels. Policy decisions are delegated to the pure modules (routing,
balancing, breakers, retries, forwarding, upgrades); this module moves bytes
and records outcomes.

Four rules hold on every path here: each breaker admission is settled in one
`finally` (a verdict about the upstream, or a release when there is none);
a request's attempts share one deadline (`timeouts.request_s` from routing to
the response head); client envelopes say what failed, never where (the
address and the error text go to the log with the request id); and the
client's pace is never a verdict about the upstream:

* a request body is read ahead, up to 64 KiB (`_READ_AHEAD`, all of most API
  bodies), before the breaker or an upstream is involved; it must arrive
  within the deadline (else 408), and the deadline is then moved by the time
  spent waiting for it, so the upstream gets all of its time for the rest;
* a body streamed past the read-ahead runs on the upstream's clock: an
  upstream failure or deadline that strikes while the gateway is waiting for
  the client's next bytes is the client's (408 for the deadline, no verdict),
  and a timeout of an attempt whose body was still arriving from the client
  is answered 504 without a verdict (the client's pace shared its time);
* a response cut (reset or idle timeout) after the gateway held the upstream
  back for a client that reads slowly is not a verdict either (an upstream's
  own send timeout may have fired because of that client).

Built once per listener by the composition root (`lifecycle.app.gateway_handler`) and
called by `handling.GatewayHandler`."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from vocelio_contract.config import Service
from vocelio_contract.hosts import request_host
from vocelio_contract.paths import PathError
from vocelio_proxy.clock import Clock
from vocelio_proxy.pipeline.edge import EdgePolicy
from vocelio_proxy.pipeline.h2c_forwarding import H2cForwarder
from vocelio_proxy.pipeline.responses import add_gateway_headers, send_error
from vocelio_proxy.policy.compression import choose_encoding, compress
from vocelio_proxy.policy.error_envelope import Refusal
from vocelio_proxy.policy.forwarded_headers import response_head, upstream_request_headers
from vocelio_proxy.policy.health import EndpointState, record_passive_result
from vocelio_proxy.policy.retries import (
    Attempt,
    attempt_budget,
    connect_budget,
    is_retryable_status,
    may_retry_method,
    retry_after_error,
    retry_after_status,
)
from vocelio_proxy.policy.routing import RouteMatch
from vocelio_proxy.policy.tracecontext import propagate
from vocelio_proxy.policy.upgrades import (
    H2C_HEADERS,
    offered_upgrade,
    offers_websocket,
    switch_problem,
    valid_websocket_key,
)
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.routing_state import ServiceRuntime
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.process.tracing import SpanExporter
from vocelio_proxy.settings import ProxySettings
from vocelio_proxy.wire.exchange import BodySource, Exchange
from vocelio_proxy.wire.h2c_upstream import H2cPool
from vocelio_proxy.wire.http1.heads import status_line
from vocelio_proxy.wire.tunnel import UpgradableWriter, open_upgrade
from vocelio_proxy.wire.upstream import (
    LAST_CHUNK,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    encode_chunk,
    request_head,
)

log = logging.getLogger("vocelio.proxy")

_SMALL_BODY = 64 * 1024
#: Request body bytes read from the client before an upstream is involved.
_READ_AHEAD = 64 * 1024
#: Time the gateway must have waited on a slow-reading client during a response before
#: a cut upstream stream is no longer a verdict about the upstream.
_HELD_S = 0.001
_NO_TRIES: frozenset[str] = frozenset()
_BODY_LATE = "The request body did not arrive in time"


class _BodyTooLarge(Exception):
    pass


class _ClientsPace(Exception):
    """An upstream failure the client's pace may have caused: it struck while the
    gateway was waiting for the client's request body bytes, or it cut a response
    the gateway had held back for a client that reads slowly. Never a verdict."""

    def __init__(self, cause: UpstreamError) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: What the client is told for each kind of upstream failure: what happened, never
#: where (addresses, ports and exception text go to the log with the request id).
_FAILURE_MESSAGES = {
    "connect": "could not be reached",
    "reset": "closed the connection before answering",
    "protocol": "sent an invalid response",
}


class Proxy:
    """Serves routed requests. Takes what it uses: the settings, the gateway state
    (the live runtime), the upstream pool, metrics, the clock, the edge policy (None:
    no authentication or rate limiting) and the span exporter (None: export off)."""

    def __init__(self, settings: ProxySettings, state: GatewayState, pool: UpstreamPool, metrics: ProxyMetrics,
                 clock: Clock, gate: EdgePolicy | None, spans: SpanExporter | None = None,
                 h2c: H2cPool | None = None) -> None:
        self._state = state
        self._pool = pool
        self._metrics = metrics
        self._clock = clock
        self._gate = gate
        self._spans = spans
        self._trusted_hops = settings.trusted_proxies
        self._max_body = settings.limits.max_body_bytes
        self._compression = settings.compression
        #: The scheme clients used on this listener (X-Forwarded-Proto unless a trusted proxy said otherwise).
        self.scheme = "http"
        # Deadlines run on the event loop's clock, the one the upstream timers use.
        self._now = asyncio.get_running_loop().time
        # Services spoken to over h2c (gRPC); None: such services are answered 502.
        self._h2c = None if h2c is None else H2cForwarder(
            h2c, metrics, clock, self._now, self._refuse, self._upstream_failed, self._upstream_headers,
            self._max_body)

    def _refuse(self, out: UpgradableWriter, ex: Exchange, status: int, message: str,
                retry_after: float | None = None) -> None:
        send_error(out, ex, self._clock.wall(), Refusal(status, message, retry_after))

    async def handle(self, ex: Exchange, out: UpgradableWriter, path: str) -> None:
        """Serve `ex`, whose normalised path is `path`, from the routed service."""
        routed_at = self._now()
        rt = self._state.runtime
        if rt is None:
            self._refuse(out, ex, 503, "The gateway has not loaded a configuration yet", 5)
            return
        router = rt.router
        try:
            # The host is normalised once, here, and only when some service names one.
            match = router.resolve(path, request_host(ex.host)) if router.routes_by_host else router.resolve(path)
        except PathError as exc:
            self._refuse(out, ex, 400, f"Invalid request path: {exc}")
            return
        if match is None:
            self._refuse(out, ex, 404, f"No service is routed at {path}")
            return
        svc = rt.services[match.service.id]
        ex.service_label = match.service.name
        offered = None
        h2c = match.service.upstream_protocol == "h2c"
        # An h2c upstream takes no HTTP/1.1 upgrade: the request is served as a plain one.
        if ex.upgrade and not h2c:
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
        if h2c:
            if self._h2c is None:
                self._refuse(out, ex, 502, f"The {match.service.name} service needs h2c, not enabled on this gateway")
                return
            await self._h2c.forward(ex, out, svc, match, identity, routed_at, _upstream_target(ex, match))
            return
        deadline = routed_at + match.service.timeouts.request_s
        if offered is not None:
            await self._tunnel(ex, out, svc, match, identity, offered, deadline)
        else:
            await self._forward(ex, out, svc, match, identity, deadline)

    def _upstream_headers(self, ex: Exchange, identity: dict[str, str]) -> list[tuple[str, str]]:
        lookup = ex.lookup
        if ex.traceparent is None:  # once per request: every retry carries the same context
            if self._spans is None:
                ex.traceparent, ex.tracestate = propagate(lookup.get("traceparent"), lookup.get("tracestate"))
            else:
                ex.traceparent, ex.tracestate, ex.span_parent = self._spans.begin(
                    lookup.get("traceparent"), lookup.get("tracestate"))
        headers = upstream_request_headers(
            ex.headers, remote=ex.client_ip, scheme=self.scheme, host=lookup.get("host", ""),
            trusted_hops=self._trusted_hops, request_id=ex.request_id,
            traceparent=ex.traceparent, identity=identity, tracestate=ex.tracestate)
        if "http2-settings" in lookup:
            # Part of an h2c upgrade, which is never forwarded (even when Connection did not list it).
            headers = [(k, v) for k, v in headers if k.lower() not in H2C_HEADERS]
        return headers

    def _upstream_failed(self, out: UpgradableWriter, ex: Exchange, service: Service, endpoint: str,
                         exc: UpstreamError) -> None:
        """Answer an upstream failure: the envelope says what happened, the log says where."""
        timed_out = exc.timed_out
        log.warning("upstream request failed", extra={"fields": {
            "request_id": ex.request_id, "service": service.id, "endpoint": endpoint, "kind": exc.kind,
            "error": str(exc), "attempts": ex.attempts}})
        if timed_out:
            self._refuse(out, ex, 504, f"The {service.name} service did not answer in time")
        else:
            what = _FAILURE_MESSAGES.get(exc.kind, "failed")
            self._refuse(out, ex, 502, f"The {service.name} service {what}")

    def _paced_out(self, out: UpgradableWriter, ex: Exchange, service: Service, endpoint: str,
                   exc: UpstreamError, waiting_for_client: bool) -> None:
        """Answer an attempt that ended while the client's body was still arriving
        (`_ClientsPace`, or a paced attempt's timeout): no verdict, no health record.
        A deadline that passed while the gateway was waiting for the client's bytes is
        the client's 408; otherwise the client is told what happened upstream."""
        log.info("upstream attempt ended while the client's body was arriving", extra={"fields": {
            "request_id": ex.request_id, "service": service.id, "endpoint": endpoint, "kind": exc.kind,
            "error": str(exc), "waiting_for_client": waiting_for_client}})
        if exc.kind == "timeout" and waiting_for_client:
            self._refuse(out, ex, 408, _BODY_LATE)
        elif exc.kind == "timeout":
            self._refuse(out, ex, 504, f"The {service.name} service did not answer in time")
        else:
            self._refuse(out, ex, 502, f"The {service.name} service {_FAILURE_MESSAGES.get(exc.kind, 'failed')}")

    async def _forward(self, ex: Exchange, out: UpgradableWriter, svc: ServiceRuntime, match: RouteMatch,  # noqa: C901
                       identity: dict[str, str], deadline: float) -> None:
        # One function on purpose: the attempt loop is the proxy's hot path (a call per
        # step costs measurable CPU, bench/cpu_per_request.py); the decisions it takes are
        # the pure policy's (retries, health, breakers).
        service = svc.service
        breaker = svc.breaker
        body = ex.body
        length = ex.content_length if body is not None else 0
        body_limit = self._max_body if service.max_body_bytes is None else min(self._max_body,
                                                                                service.max_body_bytes)
        prefix = b""
        rest: AsyncIterator[bytes] | None = None
        if body is not None:
            # The client's time, before the breaker or an upstream is involved: a slow
            # uploader holds neither a probe slot nor an upstream connection, and the
            # upstream's share of the deadline starts once the body is in hand.
            read_from = self._now()
            try:
                prefix, rest = await _read_ahead(body, length, body_limit, deadline)
            except _BodyTooLarge as too_large:
                self._refuse(out, ex, 413, str(too_large))
                return
            except _BodyLate:
                self._refuse(out, ex, 408, _BODY_LATE)
                return
            deadline += self._now() - read_from
        admission = breaker.allow()
        if not admission.allowed:
            self._refuse(out, ex, 503, f"The {service.name} service is temporarily unavailable "
                         "(circuit breaker open)", admission.retry_after_s)
            return
        # The admission is settled in the `finally` below on every exit: with the verdict
        # about the upstream when there is one, else released (client gone, body broken,
        # the client's pace, gateway error). The breaker can therefore never keep a slot
        # for a dead request, and never judges the upstream by a client's speed.
        verdict: bool | None = None
        try:
            method = ex.method
            replayable = may_retry_method(service.retry, method, body is not None)
            head = request_head(method, _upstream_target(ex, match), ex.host,
                                self._upstream_headers(ex, identity), length)
            chunked = length is None
            timeouts = service.timeouts
            pool = self._pool
            metrics = self._metrics
            now = self._now
            svc.budget.record_request()
            tried: set[str] = set()
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
                # The attempt's clock includes the client's pace when the body is still arriving.
                paced = False
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
                        paced = rest is not None and not body.complete
                        await _send_body(conn, fut, prefix, rest, chunked, body_limit)
                    upstream = await fut
                except _ClientsPace as pace:
                    ep.in_flight -= 1
                    if conn is not None:
                        conn.abort()
                    self._paced_out(out, ex, service, key, pace.cause, True)
                    return
                except UpstreamError as failure:
                    ep.in_flight -= 1
                    if conn is not None:
                        conn.abort()
                    if paced and failure.kind == "timeout":
                        # The deadline passed while the gateway waited on the upstream, but the
                        # client's pace had spent part of this attempt's time: the client is
                        # told the truth (504), the upstream is not judged.
                        self._paced_out(out, ex, service, key, failure, False)
                        return
                    _record_outcome(svc, ep, False, self._clock.monotonic())
                    metrics.upstream_errors.labels(service.name, failure.kind).inc()
                    reason = retry_after_error(service.retry, timeouts, svc.budget,
                                               Attempt(attempt, replayable, deadline - now()), kind=failure.kind,
                                               reused=failure.reused, response_started=failure.response_started)
                    if reason is not None:
                        metrics.retries.labels(service.name, reason).inc()
                        continue
                    verdict = False
                    self._upstream_failed(out, ex, service, key, failure)
                    return
                except _BodyTooLarge as too_large:
                    ep.in_flight -= 1
                    if conn is not None:
                        conn.abort()
                    self._refuse(out, ex, 413, str(too_large))
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
                # Most answers are not retryable: the Attempt (and the clock read) only for those that are.
                if is_retryable_status(service.retry, status) and retry_after_status(
                        service.retry, timeouts, svc.budget, Attempt(attempt, replayable, deadline - now()), status):
                    ep.in_flight -= 1
                    conn.abort()
                    _record_outcome(svc, ep, False, self._clock.monotonic())
                    metrics.retries.labels(service.name, str(status)).inc()
                    continue
                verdict = status < 500
                try:
                    await self._respond(ex, out, conn, status, upstream.headers, timeouts.idle_s)
                except _ClientsPace as pace:
                    # Cut after the gateway held the upstream back for a slow-reading client:
                    # the stream is cut for the client as below, the upstream is not judged.
                    verdict = None
                    log.info("upstream stream cut after a slow-reading client held it back", extra={"fields": {
                        "service": service.id, "endpoint": key, "kind": pace.cause.kind, "error": str(pace),
                        "request_id": ex.request_id}})
                    out.abort()
                except UpstreamError as failure:
                    # The head is already with the client: all that is left is to cut the
                    # stream, so the client sees a truncated response, never a complete one.
                    verdict = False
                    metrics.upstream_errors.labels(service.name, failure.kind).inc()
                    log.warning("upstream failed mid-response", extra={"fields": {
                        "service": service.id, "endpoint": key, "error": str(failure), "request_id": ex.request_id}})
                    out.abort()
                finally:
                    ep.in_flight -= 1
                    pool.release(conn)
                    if verdict is not None:
                        _record_outcome(svc, ep, verdict, self._clock.monotonic())
                return
        finally:
            breaker.settle(admission, verdict)

    async def _respond(self, ex: Exchange, out: UpgradableWriter, conn: UpstreamConnection, status: int,
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
            # Time spent waiting for the client to take bytes: the upstream is held back
            # meanwhile (its reads pause), which may make it give up on its side.
            held = 0.0
            now = self._now
            try:
                async for chunk in conn.iter_body(idle_s):
                    out.write(compressor.compress(chunk) if compressor else chunk)
                    waited_from = now()
                    await out.drain()
                    held += now() - waited_from
            except UpstreamError as exc:
                if held >= _HELD_S and exc.kind != "protocol":
                    raise _ClientsPace(exc) from exc
                raise
        if compressor is not None:
            out.write(compressor.flush())
        out.finish()

    async def _tunnel(self, ex: Exchange, out: UpgradableWriter, svc: ServiceRuntime, match: RouteMatch,
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


class _BodyLate(Exception):
    """The request's deadline passed while the gateway was reading the body ahead."""


async def _read_ahead(body: BodySource, length: int | None, limit: int | None,
                      deadline: float) -> tuple[bytes, AsyncIterator[bytes] | None]:
    """Read the client's body until it ends, or `_READ_AHEAD` bytes are in hand while
    more is still to come, by the loop-clock `deadline` (else `_BodyLate`). Returns the
    bytes read and, when the body goes on, the iterator for the rest. Over `limit`
    is `_BodyTooLarge`; the limit is also checked as bytes arrive."""
    if limit is not None and length is not None and length > limit:
        raise _BodyTooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes")
    chunks = body.chunks()
    parts: list[bytes] = []
    size = 0
    more = True
    if body.complete:
        # Everything has arrived (the common small body): it is all in memory already,
        # there is no waiting, so no timer.
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
        more = False
    else:
        timer = asyncio.timeout_at(deadline)
        try:
            async with timer:
                async for chunk in chunks:
                    parts.append(chunk)
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise _BodyTooLarge(f"Request body exceeds the limit of {limit} bytes")
                    # Past the read-ahead, a body that is still arriving is streamed.
                    if size >= _READ_AHEAD and not body.complete:
                        break
                else:
                    more = False
        except TimeoutError:
            if timer.expired():
                raise _BodyLate from None
            raise
    if limit is not None and size > limit:
        raise _BodyTooLarge(f"Request body exceeds the limit of {limit} bytes")
    return b"".join(parts) if len(parts) != 1 else parts[0], chunks if more else None


async def _send_body(conn: UpstreamConnection, answered: asyncio.Future[Any], prefix: bytes,
                     rest: AsyncIterator[bytes] | None, chunked: bool, limit: int | None) -> None:
    """Send the body read ahead, then stream the rest as the client sends it. An
    upstream that stopped reading because it already answered (413, 401...) ends the
    upload; one that failed (its deadline) raises its own error, not the write's, and
    `_ClientsPace` when it failed while the gateway was waiting for the client."""
    try:
        if prefix:
            conn.write(encode_chunk(prefix) if chunked else prefix)
        if rest is not None:
            sent = len(prefix)
            while True:
                chunk = await anext(rest, None)
                if answered.done():
                    # Settled while the gateway waited for the client's bytes.
                    _answered_early(answered, conn, waiting_for_client=True)
                    return
                if chunk is None:
                    break
                sent += len(chunk)
                if limit is not None and sent > limit:
                    raise _BodyTooLarge(f"Request body exceeds the limit of {limit} bytes")
                conn.write(encode_chunk(chunk) if chunked else chunk)
                await conn.drain_ready()
                if answered.done():
                    _answered_early(answered, conn, waiting_for_client=False)
                    return
        if chunked:
            conn.write(LAST_CHUNK)
    except UpstreamError:
        if not answered.done() or answered.cancelled():
            raise
        _answered_early(answered, conn, waiting_for_client=False)


def _answered_early(answered: asyncio.Future[Any], conn: UpstreamConnection, *, waiting_for_client: bool) -> None:
    """The upstream settled the request before the body was all sent: an answer ends
    the upload (the connection is not reused: the upstream did not read it all); a
    failure is raised, as `_ClientsPace` when it struck while the gateway was
    waiting for the client's bytes."""
    if answered.cancelled():
        raise UpstreamError("reset", "the upstream request was abandoned")
    failure = answered.exception()
    if failure is None:
        conn.keep_alive = False
        return
    if waiting_for_client and isinstance(failure, UpstreamError):
        raise _ClientsPace(failure)
    raise failure

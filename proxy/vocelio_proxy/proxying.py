"""The proxy handler: the aiohttp edge that routes a client request, asks the
breaker, picks an endpoint, forwards through the upstream pool with retries,
and streams the answer back. Policy decisions are delegated to the pure
modules (routing, balancing, breakers, retries, forwarding); this module only
moves bytes and records outcomes. Registered by `app.create_app`."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from . import keys
from .compression import choose_encoding, compress
from .forwarding import child_traceparent, downstream_response_headers, upstream_request_headers
from .health import EndpointState, record_passive_result
from .paths import PathError, normalize_path
from .responses import error_response
from .retries import is_retryable_status, may_retry_method
from .routing import RouteMatch
from .settings import CompressionSettings
from .upstream import LAST_CHUNK, UpstreamConnection, UpstreamError, encode_chunk, request_head

if TYPE_CHECKING:
    from .runtime import ServiceRuntime

log = logging.getLogger("vocelio.proxy")

_SMALL_BODY = 64 * 1024


async def handle_proxy(request: web.Request) -> web.StreamResponse:
    app = request.app
    state = app[keys.STATE]
    rt = state.runtime
    if rt is None:
        return error_response(request, 503, "The gateway has not loaded a configuration yet", retry_after=5)
    raw_path = request.raw_path
    qpos = raw_path.find("?")
    path_only = raw_path if qpos < 0 else raw_path[:qpos]
    try:
        path = normalize_path(path_only)
    except PathError as exc:
        return error_response(request, 400, f"Invalid request path: {exc}")
    match = rt.router.match(path)
    if match is None:
        return error_response(request, 404, f"No service is routed at {path}")
    svc = rt.services[match.service.id]
    request[keys.SERVICE_LABEL] = match.service.name
    gate = app.get(keys.EDGE_POLICY)
    extra_headers: dict[str, str] = {}
    if gate is not None:
        outcome = await gate(request, match)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        extra_headers = outcome
    elif match.service.auth.mode != "public":
        # Fail closed: a protected route is never served without the auth layer.
        return error_response(request, 401, "Authentication is required and not configured on this gateway")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _proxy_websocket(request, svc, match, extra_headers)
    response = await _forward(request, svc, match, qpos, raw_path, extra_headers)
    return response


def _target(match: RouteMatch, raw_path: str, qpos: int) -> str:
    return match.upstream_path if qpos < 0 else match.upstream_path + raw_path[qpos:]


async def _forward(request: web.Request, svc: ServiceRuntime, match: RouteMatch, qpos: int,
                   raw_path: str, identity: dict[str, str]) -> web.StreamResponse:
    app = request.app
    pool = app[keys.POOL]
    metrics = app[keys.METRICS]
    clock = app[keys.CLOCK]
    settings = app[keys.SETTINGS]
    service = svc.service
    admission = svc.breaker.allow()
    if not admission.allowed:
        return error_response(request, 503, f"The {service.name} service is temporarily unavailable "
                              "(circuit breaker open)", retry_after=admission.retry_after_s)
    method = request.method
    has_body = request.body_exists
    length = request.content_length
    replayable = may_retry_method(service.retry, method, has_body)
    rid = request[keys.REQUEST_ID]
    headers = upstream_request_headers(
        request.headers.items(), remote=request[keys.CLIENT_IP], scheme=request.scheme,
        host=request.host, trusted_hops=settings.trusted_proxies, request_id=rid,
        traceparent=child_traceparent(request.headers.get("traceparent")), identity=identity)
    target = _target(match, raw_path, qpos)
    body_limit = settings.limits.max_body_bytes
    if service.max_body_bytes is not None:
        body_limit = min(body_limit, service.max_body_bytes)
    svc.budget.record_request()
    tried: set[str] = set()
    attempts = service.retry.attempts
    attempt = 0
    last_error = "no healthy endpoint"
    last_status = 503
    probe = admission.probe
    while True:
        attempt += 1
        ep = svc.balancer.pick(frozenset(tried))
        if ep is None and tried:
            ep = svc.balancer.pick()
        if ep is None:
            svc.breaker.record(False, probe)
            return error_response(request, 503, f"The {service.name} service has no healthy endpoint",
                                  retry_after=5)
        tried.add(ep.key)
        request[keys.UPSTREAM] = ep.key
        request[keys.ATTEMPTS] = attempt
        ep.in_flight += 1
        started = time.perf_counter()
        conn: UpstreamConnection | None = None
        try:
            conn = await pool.acquire(ep.endpoint.address, ep.endpoint.port, service.timeouts.connect_s)
            head = request_head(method, target, request.host, headers, length if has_body else 0)
            fut = conn.start_request(head, method, service.timeouts.request_s)
            if has_body:
                try:
                    await _send_body(request, conn, fut, length, body_limit)
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
            _record_outcome(svc, ep, False, clock.monotonic())
            metrics.upstream_errors.labels(service.name, exc.kind).inc()
            last_error, last_status = str(exc), 504 if exc.kind == "timeout" else 502
            stale = exc.reused and exc.kind == "reset" and not exc.response_started
            retry_ok = (exc.kind == "connect" or replayable) and attempt < attempts + (1 if stale else 0)
            if retry_ok and (stale or svc.budget.try_acquire()):
                metrics.retries.labels(service.name, "stale" if stale else exc.kind).inc()
                continue
            svc.breaker.record(False, probe)
            if last_status == 504:
                return error_response(request, 504, f"The {service.name} service did not answer in time")
            return error_response(request, 502, f"The {service.name} service failed: {last_error}")
        except _BodyTooLarge as exc:
            ep.in_flight -= 1
            if conn is not None:
                conn.abort()
            return error_response(request, 413, str(exc))
        except (asyncio.CancelledError, ConnectionResetError, aiohttp.ClientPayloadError):
            ep.in_flight -= 1
            if conn is not None:
                conn.abort()
            raise
        metrics.observe_upstream(service.name, time.perf_counter() - started)
        status = upstream.status
        server_error = status >= 500
        if (is_retryable_status(service.retry, status) and replayable and attempt < attempts
                and svc.budget.try_acquire()):
            ep.in_flight -= 1
            conn.abort()
            _record_outcome(svc, ep, False, clock.monotonic())
            metrics.retries.labels(service.name, str(status)).inc()
            continue
        try:
            return await _respond(request, conn, upstream.status, upstream.headers, service.timeouts.idle_s,
                                  settings.compression)
        finally:
            ep.in_flight -= 1
            pool.release(conn)
            _record_outcome(svc, ep, not server_error, clock.monotonic())
            svc.breaker.record(not server_error, probe)
    # Unreachable: the loop returns or continues.
    raise AssertionError(last_error, last_status)


def _record_outcome(svc: ServiceRuntime, ep: EndpointState, ok: bool, now: float) -> None:
    if record_passive_result(ep, ok, now, svc.service.passive_health):
        log.warning("endpoint ejected", extra={"fields": {
            "service": svc.service.id, "endpoint": ep.key, "ejections": ep.ejections}})


class _BodyTooLarge(Exception):
    pass


async def _send_body(request: web.Request, conn: UpstreamConnection, answered: asyncio.Future[Any],
                     length: int | None, limit: int | None) -> None:
    sent = 0
    chunked = length is None
    if limit is not None and length is not None and length > limit:
        raise _BodyTooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes")
    async for chunk in request.content.iter_any():
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


async def _respond(request: web.Request, conn: UpstreamConnection, status: int,
                   upstream_headers: list[tuple[str, str]], idle_s: float,
                   compression: CompressionSettings) -> web.StreamResponse:
    headers = downstream_response_headers(upstream_headers)
    ctype = cenc = None
    declared: int | None = None
    for k, v in upstream_headers:
        lower = k.lower()
        if lower == "content-type":
            ctype = v
        elif lower == "content-encoding":
            cenc = v
        elif lower == "content-length":
            declared = int(v) if v.isdigit() else None
    body = conn.body_complete_buffered()
    accept = request.headers.get("Accept-Encoding")
    if body is not None and len(body) <= _SMALL_BODY:
        resp = web.Response(status=status, body=body)
        resp.headers.extend(headers)
        if request.method == "HEAD":
            if declared is not None:
                resp.headers["Content-Length"] = str(declared)
            return resp
        encoding = choose_encoding(compression, accept, ctype, cenc, len(body)) if status == 200 else None
        if encoding is not None:
            resp.body = compress(body, encoding)
            resp.headers["Content-Encoding"] = encoding
            resp.headers.add("Vary", "Accept-Encoding")
        return resp
    stream = web.StreamResponse(status=status)
    stream.headers.extend(headers)
    encoding = choose_encoding(compression, accept, ctype, cenc, declared) if status == 200 else None
    if encoding is not None and request.method != "HEAD":
        # Streamed bodies use aiohttp's incremental gzip (no whole-body buffering).
        if "gzip" in (accept or ""):
            stream.enable_compression(web.ContentCoding.gzip)
            stream.headers.add("Vary", "Accept-Encoding")
    elif declared is not None and request.method != "HEAD":
        stream.content_length = declared
    await stream.prepare(request)
    if body:
        await stream.write(body)
    else:
        async for chunk in conn.iter_body(idle_s):
            await stream.write(chunk)
    await stream.write_eof()
    return stream


async def _relay(source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                 sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    """Copy text and binary frames one way until the source closes, then close the sink."""
    async for msg in source:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
    await sink.close()


_WS_SKIP = frozenset({"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                      "sec-websocket-extensions", "sec-websocket-accept", "content-length"})


async def _proxy_websocket(request: web.Request, svc: ServiceRuntime, match: RouteMatch,
                           identity: dict[str, str]) -> web.StreamResponse:
    """Relay a WebSocket session frame by frame (aiohttp client on the upstream side)."""
    session = request.app[keys.WS_SESSION]
    ep = svc.balancer.pick()
    if ep is None:
        return error_response(request, 503, f"The {svc.service.name} service has no healthy endpoint",
                              retry_after=5)
    raw = request.raw_path
    qpos = raw.find("?")
    url = f"http://{ep.endpoint.address}:{ep.endpoint.port}{_target(match, raw, qpos)}"
    fwd = {k: v for k, v in request.headers.items()
           if k.lower() not in _WS_SKIP and not k.lower().startswith("x-vocelio-")}
    fwd.update(identity)
    fwd["X-Request-ID"] = request[keys.REQUEST_ID]
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    fwd.pop("Sec-WebSocket-Protocol", None)
    try:
        upstream = await session.ws_connect(url, headers=fwd, protocols=protocols,
                                            timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return error_response(request, 502, f"WebSocket upgrade to {svc.service.name} failed: {exc}")
    request[keys.UPSTREAM] = ep.key
    downstream = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
    await downstream.prepare(request)

    tasks = [asyncio.create_task(_relay(downstream, upstream)), asyncio.create_task(_relay(upstream, downstream))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await downstream.close()
    return downstream

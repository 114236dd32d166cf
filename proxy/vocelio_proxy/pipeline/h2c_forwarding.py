"""Forwarding to services spoken to over h2c (`upstream_protocol: h2c`, gRPC):
one upstream HTTP/2 stream per client request, the request body streamed as it
arrives (no read-ahead: a bidirectional call's first message must reach the
upstream before its answer can come back), the response head, body and
trailers streamed back as they arrive.

The same rules as the HTTP/1.1 path (`proxying`), adapted to streams:

* the breaker admission is settled in one `finally`: a verdict about the
  upstream (its answer's status, or a transport failure: connect, reset,
  protocol, a response head later than the deadline, a body pause longer than
  `timeouts.idle_s`), or a release when the request ended for the client's
  reasons (it left, its body broke or passed the limit, its own gRPC deadline
  passed);
* the endpoint's in-flight count and the upstream stream are released on every
  exit; a client that goes away resets the upstream stream (RST_STREAM CANCEL);
* only a failed connect is retried (on another endpoint, per the retry policy
  and budget): nothing of the request was sent, so a streaming body is never
  replayed;
* deadlines: the response head is due within `timeouts.request_s` of routing;
  a gRPC request's `grpc-timeout` bounds the whole call, capped by that route
  timeout, and the upstream is sent what is left of it as its `grpc-timeout`;
* errors: before the response head, a gateway error (gRPC requests get it as a
  Trailers-Only answer through `responses.send_error`); after it, a gRPC call
  ends with trailers carrying the status (UNAVAILABLE for a cut upstream,
  DEADLINE_EXCEEDED for the call deadline) and other requests are cut. An
  upstream answer to a gRPC call without `grpc-status` gets the one its HTTP
  status maps to (`policy.grpc_status`).

Built by `proxying.Proxy` when the application gives it an `H2cPool`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from vocelio_contract.config import Service
from vocelio_proxy.clock import Clock
from vocelio_proxy.pipeline.responses import add_gateway_headers
from vocelio_proxy.policy.forwarded_headers import response_head
from vocelio_proxy.policy.grpc_status import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    UNAVAILABLE,
    code_for_http,
    encode_message,
    format_timeout,
    is_grpc,
    parse_timeout,
    replace_status,
    status_problem,
)
from vocelio_proxy.policy.health import EndpointState, record_passive_result
from vocelio_proxy.policy.retries import Attempt, connect_budget, retry_after_error
from vocelio_proxy.policy.routing import RouteMatch
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.routing_state import ServiceRuntime
from vocelio_proxy.wire.exchange import BodyError, BodySource, Exchange
from vocelio_proxy.wire.h2c_upstream import H2cPool, H2cStream, request_headers
from vocelio_proxy.wire.tunnel import UpgradableWriter
from vocelio_proxy.wire.upstream import UpstreamError

log = logging.getLogger("vocelio.proxy")
_T = TypeVar("_T")

Refuse = Callable[[UpgradableWriter, Exchange, int, str, float | None], None]
Failed = Callable[[UpgradableWriter, Exchange, Service, str, UpstreamError], None]
Headers = Callable[[Exchange, dict[str, str]], list[tuple[str, str]]]


class _ClientsEnd(Exception):
    """The request ended for the client's reasons while its body was being sent:
    `status` and `message` for the client when nothing was answered yet."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _CallDeadline(Exception):
    """The gRPC call's own deadline (its `grpc-timeout`) passed."""


class H2cForwarder:
    """Serves routed requests of h2c services (see the module docstring). Takes
    the pool, metrics and clock, the loop clock `now`, and the proxy's own ways to
    refuse, to answer an upstream failure and to build the upstream headers."""

    def __init__(self, pool: H2cPool, metrics: ProxyMetrics, clock: Clock, now: Callable[[], float],
                 refuse: Refuse, failed: Failed, upstream_headers: Headers, max_body: int) -> None:
        self._pool = pool
        self._metrics = metrics
        self._clock = clock
        self._now = now
        self._refuse = refuse
        self._failed = failed
        self._headers = upstream_headers
        self._max_body = max_body

    async def forward(self, ex: Exchange, out: UpgradableWriter, svc: ServiceRuntime, match: RouteMatch,  # noqa: C901
                      identity: dict[str, str], routed_at: float, target: str) -> None:
        service = svc.service
        timeouts = service.timeouts
        grpc = is_grpc(ex.lookup.get("content-type"))
        head_deadline = routed_at + timeouts.request_s
        call_deadline: float | None = None
        if grpc and "grpc-timeout" in ex.lookup:
            wanted = parse_timeout(ex.lookup["grpc-timeout"].strip())
            if wanted is None:
                self._refuse(out, ex, 400, "Invalid grpc-timeout header", None)
                return
            call_deadline = routed_at + min(wanted, timeouts.request_s)
            head_deadline = min(head_deadline, call_deadline)
        limit = self._max_body if service.max_body_bytes is None else min(self._max_body, service.max_body_bytes)
        if ex.content_length is not None and ex.content_length > limit:
            self._refuse(out, ex, 413, f"Request body of {ex.content_length} bytes exceeds the limit of "
                                       f"{limit} bytes", None)
            return
        breaker = svc.breaker
        admission = breaker.allow()
        if not admission.allowed:
            self._refuse(out, ex, 503, f"The {service.name} service is temporarily unavailable "
                         "(circuit breaker open)", admission.retry_after_s)
            return
        verdict: bool | None = None
        ep: EndpointState | None = None
        stream: H2cStream | None = None
        pump: asyncio.Task[None] | None = None
        try:
            headers = [(k, v) for k, v in self._headers(ex, identity) if k.lower() != "grpc-timeout"]
            if "trailers" in ex.lookup.get("te", "").lower():
                # The one `TE` HTTP/2 allows, which gRPC servers require; the forwarded-header
                # policy drops TE as hop-by-hop, so the client's wish is carried over here.
                headers.append(("te", "trailers"))
            if call_deadline is not None:
                headers.append(("grpc-timeout", format_timeout(max(call_deadline - self._now(), 0.001))))
            # An HTTP/1.0 request may name no host; HTTP/2 needs an authority.
            block = request_headers(ex.method, "http", ex.host or service.name, target, headers)
            body = ex.body
            svc.budget.record_request()
            tried: set[str] = set()
            attempt = 0
            while True:
                attempt += 1
                ep = svc.balancer.pick(frozenset(tried)) if tried else svc.balancer.pick()
                if ep is None and tried:
                    ep = svc.balancer.pick()
                if ep is None:
                    verdict = False
                    self._refuse(out, ex, 503, f"The {service.name} service has no healthy endpoint", 5)
                    return
                tried.add(ep.key)
                ex.upstream = ep.key
                ex.attempts = attempt
                ep.in_flight += 1
                left = head_deadline - self._now()
                try:
                    stream = await self._pool.open_stream(ep.endpoint.address, ep.endpoint.port, block,
                                                          body is None, connect_budget(timeouts, max(left, 0.001)))
                    break
                except UpstreamError as exc:
                    ep.in_flight -= 1
                    _record(svc, ep, False, self._clock.monotonic())
                    self._metrics.upstream_errors.labels(service.name, exc.kind).inc()
                    reason = retry_after_error(service.retry, timeouts, svc.budget,
                                               Attempt(attempt, False, head_deadline - self._now()),
                                               kind=exc.kind, reused=False, response_started=False)
                    if reason is not None:
                        self._metrics.retries.labels(service.name, reason).inc()
                        ep = None
                        continue
                    ep = None
                    verdict = False
                    self._failed(out, ex, service, ex.upstream or "", exc)
                    return
            if body is not None:
                pump = asyncio.create_task(_send_body(body, stream, limit), name="h2c-request-body")
            started = time.perf_counter()
            try:
                status, upstream_headers = await _within(stream.response(), head_deadline, call_deadline, pump)
            except _ClientsEnd as exc:
                self._refuse(out, ex, exc.status, exc.message, None)
                return
            except _CallDeadline:
                self._refuse(out, ex, 504, f"The {service.name} service did not answer within the call's deadline",
                             None)
                return
            except TimeoutError:
                verdict = False
                _record(svc, ep, False, self._clock.monotonic())
                self._metrics.upstream_errors.labels(service.name, "timeout").inc()
                self._failed(out, ex, service, ep.key, UpstreamError("timeout", "no response head in time"))
                return
            except UpstreamError as exc:
                verdict = False
                _record(svc, ep, False, self._clock.monotonic())
                self._metrics.upstream_errors.labels(service.name, exc.kind).inc()
                self._failed(out, ex, service, ep.key, exc)
                return
            self._metrics.observe_upstream(service.name, time.perf_counter() - started)
            verdict = status < 500
            head = response_head(upstream_headers)
            out_headers = head.headers
            add_gateway_headers(ex, out_headers, head.present)
            has_status = grpc and "grpc-status" in head.present
            if ex.method == "HEAD":
                out.send(ex, status, out_headers, b"", head.declared_length)
                return
            if stream.ended and stream.trailers is None and not stream.buffered:
                # A Trailers-Only answer (a gRPC error): one HEADERS frame that ends the stream.
                if grpc:
                    out_headers = _with_status(out_headers, status)
                out.send(ex, status, out_headers, b"")
                return
            out.start(ex, status, out_headers, None)
            try:
                await self._relay(stream, out, timeouts.idle_s, call_deadline, pump)
            except _ClientsEnd:
                # The response has started: all that is left is to cut it (the client's doing).
                verdict = None
                out.abort()
                return
            except _CallDeadline:
                verdict = None
                self._end(out, grpc, DEADLINE_EXCEEDED, "The call's deadline passed")
                return
            except (UpstreamError, TimeoutError) as exc:
                failure = exc if isinstance(exc, UpstreamError) else UpstreamError("timeout", "upstream stalled")
                verdict = False
                self._metrics.upstream_errors.labels(service.name, failure.kind).inc()
                log.warning("upstream failed mid-response", extra={"fields": {
                    "service": service.id, "endpoint": ep.key, "error": str(failure), "request_id": ex.request_id}})
                self._end(out, grpc, UNAVAILABLE, f"The {service.name} service stopped mid-response")
                return
            trailers = stream.trailers
            if grpc and not has_status:
                # The status is in the trailers: exactly one, a number; or the gateway's own.
                trailers = _with_status(trailers or [], status)
            if trailers:
                out.finish_with_trailers(trailers)
            else:
                out.finish()
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            if stream is not None:
                stream.reset()  # RST_STREAM unless the stream ended both ways
            if ep is not None:
                ep.in_flight -= 1
                if verdict is not None:
                    _record(svc, ep, verdict, self._clock.monotonic())
            breaker.settle(admission, verdict)

    async def _relay(self, stream: H2cStream, out: UpgradableWriter, idle_s: float, call_deadline: float | None,
                     pump: asyncio.Task[None] | None) -> None:
        """Stream the response body to the client: each wait for upstream bytes is
        bounded by `idle_s` (and the call deadline); the time spent waiting for the
        client to take bytes is not (the upstream is held back by flow control)."""
        chunks = stream.iter_body()
        while True:
            try:
                chunk = await _within(anext(chunks, None), self._now() + idle_s, call_deadline, pump)
            except TimeoutError:
                raise UpstreamError("timeout", "upstream paused longer than the idle timeout",
                                    response_started=True) from None
            if chunk is None:
                return
            out.write(chunk)
            await out.drain()

    @staticmethod
    def _end(out: UpgradableWriter, grpc: bool, code: int, message: str) -> None:
        if grpc:
            out.finish_with_trailers([("grpc-status", str(code)), ("grpc-message", encode_message(message))])
        else:
            out.abort()


async def _within(waited: Awaitable[_T], deadline: float, call_deadline: float | None,
                  pump: asyncio.Task[None] | None) -> _T:
    """Await `waited` until `deadline` (TimeoutError) or the call deadline
    (`_CallDeadline`); a request body that failed for the client's reasons ends
    the wait with `_ClientsEnd`."""
    loop = asyncio.get_running_loop()
    until = deadline if call_deadline is None else min(deadline, call_deadline)
    task = asyncio.ensure_future(waited)
    try:
        if pump is None or pump.done():
            _check_pump(pump)
            async with asyncio.timeout_at(until):
                return await task
        done, _ = await asyncio.wait({task, pump}, timeout=max(until - loop.time(), 0),
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if pump in done:
            _check_pump(pump)
            async with asyncio.timeout_at(until):
                return await task
        raise TimeoutError
    except TimeoutError:
        if call_deadline is not None and loop.time() >= call_deadline:
            raise _CallDeadline from None
        raise
    finally:
        if not task.done():
            task.cancel()


def _check_pump(pump: asyncio.Task[None] | None) -> None:
    if pump is None or not pump.done() or pump.cancelled():
        return
    failure = pump.exception()
    if isinstance(failure, _ClientsEnd):
        raise failure
    if isinstance(failure, UpstreamError):
        # The upstream refused the body: the stream's own error says what happened.
        return
    if failure is not None:
        raise failure


async def _send_body(body: BodySource, stream: H2cStream, limit: int | None) -> None:
    """Send the client's body as it arrives, within the upstream's flow control.
    A broken or oversized body resets the upstream stream (`_ClientsEnd`); an
    upstream that stops taking it ends the upload (its answer says the rest)."""
    sent = 0
    try:
        async for chunk in body.chunks():
            sent += len(chunk)
            if limit is not None and sent > limit:
                raise _ClientsEnd(413, f"Request body exceeds the limit of {limit} bytes")
            if chunk:
                await stream.send_data(chunk)
        stream.end_request()
    except BodyError as exc:
        # The forwarder resets the upstream stream when it sees this.
        raise _ClientsEnd(exc.status, exc.message) from exc


def _status_fields(status: int) -> list[tuple[str, str]]:
    """The gRPC status of an upstream answer that carried none: its HTTP status's; a 200
    without a status is a call that did not end properly (INTERNAL, never OK)."""
    if status == 200:
        return [("grpc-status", str(INTERNAL)),
                ("grpc-message", encode_message("the upstream ended the call without a grpc-status"))]
    return [("grpc-status", str(code_for_http(status))),
            ("grpc-message", encode_message(f"upstream answered HTTP {status}"))]


def _with_status(fields: list[tuple[str, str]], status: int) -> list[tuple[str, str]]:
    """`fields` (trailers, or a Trailers-Only head) with one well-formed grpc-status: the
    upstream's when it sent exactly one number, else the gateway's."""
    problem = status_problem(fields)
    if problem is None:
        return fields
    if problem == "missing":
        # An answer without a gRPC status (a proxy's error page, a misrouted call, a cut stream).
        return [*fields, *_status_fields(status)]
    return replace_status(fields, INTERNAL, f"the upstream sent a {problem} grpc-status")


def _record(svc: ServiceRuntime, ep: EndpointState, ok: bool, now: float) -> None:
    if record_passive_result(ep, ok, now, svc.service.passive_health):
        log.warning("endpoint ejected", extra={"fields": {
            "service": svc.service.id, "endpoint": ep.key, "ejections": ep.ejections}})

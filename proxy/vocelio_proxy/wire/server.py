"""The gateway's HTTP/1.1 server: the asyncio shell around the sans-I/O wire
rules in `http1`. It feeds client bytes to a `RequestReader`, runs the
pipeline's handler for each request in order (keep-alive, pipelining), and
writes responses whose heads and framing `http1` builds: whole, streamed with
Content-Length, chunked, or close-delimited for HTTP/1.0; `Expect:
100-continue`; raw tunnels after an upgrade. A connection that negotiated ALPN
`h2`, or (with `http2.cleartext`) opens with the HTTP/2 preface, is handed to
`http2.connection.Http2Connection`, which serves its streams through the same
handler (docs/http2.md).

What it guarantees per connection (docs/security/wire.md):
- bounded memory: reading pauses while the request body buffer is above its
  watermark, while parsed-but-unanswered requests plus unsent answer bytes
  exceed the connection budget, and while the client does not take its
  answers; the next pipelined request is only served once the transport has
  drained, so no write path grows without bound;
- bounded time: a head must arrive within the header timeout (408), a body
  must make progress within the body timeout (408 and close), answers must be
  taken within the send timeout, idle keep-alive connections close;
- every request ends: a body that breaks (malformed, stalled, cut) fails with
  `BodyError` for the handler, and if the handler does not answer it within a
  tick the server answers (or aborts) and closes;
- a connection cap: beyond it, new connections get a 503 envelope and a close;
- a final answer reaches the client even when its request was not read whole
  (a refusal before a large upload, a broken body, a refused head): the close
  is a lingering close (nginx's `lingering_close`): the write side is shut
  after the answer, input is read and dropped for at most
  `limits.lingering_time_s` (and until `limits.lingering_timeout_s` of
  silence), then the connection closes, so the client's kernel does not get a
  reset that would destroy the answer it has not read yet.

Time is read only by the housekeeping tick (once a second), and once when a
lingering close starts: no per-request timers or clock reads. Started by `app.start_gateway`; the handler is
`handling.GatewayHandler`.

Why not aiohttp's server: its per-request objects (Request, CIMultiDict
headers, StreamResponse, signals, middleware wrapping) cost 25-30 us of the
~90 us a request may spend here to meet the throughput bar (see README,
"Performance"); aiohttp still owns the application's lifecycle and clients.

Compiled with mypyc (docs/performance.md): the connection classes are asyncio
protocols by their methods, not by inheritance (asyncio and uvloop, the TLS
layer included, only call them), and a request body is read through an
async-iterator class (`RequestChunks`), not an async generator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from vocelio_proxy.policy.error_envelope import error_body
from vocelio_proxy.policy.forwarded_headers import new_request_id
from vocelio_proxy.settings import Http2Settings, LimitSettings
from vocelio_proxy.wire.exchange import BodyError, Exchange
from vocelio_proxy.wire.http1.body import BodyBuffer
from vocelio_proxy.wire.http1.chunks import LAST_CHUNK, encode_chunk, last_chunk_with_trailers
from vocelio_proxy.wire.http1.framing import WireError, response_framing, response_has_body
from vocelio_proxy.wire.http1.heads import CONTINUE, response_head, status_line
from vocelio_proxy.wire.http1.limits import PIPELINED_SLICE, QUEUED_REQUEST_OVERHEAD, WireLimits
from vocelio_proxy.wire.http1.reader import RequestReader
from vocelio_proxy.wire.http2.connection import Http2Connection
from vocelio_proxy.wire.http2.rules import PREFACE, H2Limits
from vocelio_proxy.wire.tls import HeldProtocol, TlsHandshake

__all__ = ["HttpConnection", "HttpServer", "RequestBody", "status_line"]

log = logging.getLogger("vocelio.proxy.server")

Handler = Callable[[Exchange, "HttpConnection"], Awaitable[None]]


class ClientConnection(Protocol):
    """What the server's housekeeping and drain need of a client connection
    (`HttpConnection`, and `http2.connection.Http2Connection` after a handover)."""

    def tick(self, now: float, header_timeout_s: float, idle_timeout_s: float) -> None: ...

    def shutdown(self) -> None: ...

    def kill(self) -> None: ...

_JSON = [("Content-Type", "application/json")]

# Reasons reading is paused, one bit each; reading resumes when none is left.
_BODY = 1  # the request body buffer is above its high watermark
_QUEUE = 2  # queued requests or unsent answers exceed the connection budget
_TUNNEL = 4  # a tunnel is being set up, or its upstream is not taking bytes
_STOPPED = 8  # the connection will close: nothing more is parsed
_SLOW_READER = 16  # the client is not taking its answers (transport paused writing)
_BACKLOG = 32  # bytes read but not parsed yet are waiting for queue room

# Linux TCP states (tcp_states.h) in which the peer has sent FIN or reset.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_PEER_GONE_STATES = frozenset({7, 8})  # TCP_CLOSE, TCP_CLOSE_WAIT


class BodyReadingControl(Protocol):
    """What a `RequestBody` needs of its connection (`HttpConnection`; tests pass their
    own): reading paused and resumed by the body's watermarks, and the interim
    `100 Continue` written when the handler first reads."""

    def pause_for_body(self) -> None: ...

    def resume_for_body(self) -> None: ...

    def write_raw(self, data: bytes) -> None: ...


class RequestBody(BodyBuffer):
    """A request body arriving from the client, read once by the handler
    (`chunks`). A body that cannot be completed raises `BodyError` (malformed,
    stalled, over budget) or `ConnectionResetError` (the client left)."""

    __slots__ = ("_conn", "_expect_continue", "_waiter")

    def __init__(self, conn: BodyReadingControl, expect_continue: bool, limits: WireLimits) -> None:
        super().__init__(limits.body_high_water, limits.body_low_water)
        self._conn = conn
        self._waiter: asyncio.Future[None] | None = None
        self._expect_continue = expect_continue

    @property
    def awaiting_client(self) -> bool:
        """Body bytes are due from the client now (what the body timeout measures):
        not after the end or a failure, and not while a 100-continue is unasked."""
        return not self.done and self.error is None and not self._expect_continue

    def feed(self, data: bytes) -> None:
        if self.push(data):
            self._conn.pause_for_body()
        self._wake()

    def finish(self) -> None:
        super().finish()
        self._wake()

    def fail(self, error: BaseException) -> None:
        super().fail(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def chunks(self) -> RequestChunks:
        """The body, chunk by chunk as it arrives. The first read asks a client that
        sent `Expect: 100-continue` for the body (not the call: a handler that answers
        without reading never invites it)."""
        return RequestChunks(self)

    def _start_reading(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            # RFC 9110 §10.1.1: no 100 once the final answer is known or the body is here.
            if not self.received and not self.done and self.error is None:
                self._conn.write_raw(CONTINUE)

    def _next_buffered(self) -> bytes | None:
        """The next chunk already here (resuming reading once the buffer drained), or None."""
        chunk, resume = self.pop()
        if resume:
            self._conn.resume_for_body()
        return chunk

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class RequestChunks:
    """`RequestBody.chunks`: an async iterator over a request body (an async-iterator
    class: mypyc compiles no async generators). Nothing is held between chunks, so a
    reader that stops early (a `break` to stream the rest later, a cancellation)
    leaves nothing to clean up; a cancelled wait drops its waiter on the way out."""

    __slots__ = ("_body",)

    def __init__(self, body: RequestBody) -> None:
        self._body = body

    def __aiter__(self) -> RequestChunks:
        return self

    async def __anext__(self) -> bytes:
        body = self._body
        if body._expect_continue:
            body._start_reading()  # the first read (the flag is cleared there)
        while True:
            chunk = body._next_buffered()
            if chunk is not None:
                return chunk
            error = body.error
            if error is not None:
                raise error
            if body.done:
                raise StopAsyncIteration
            await body._wait()


class HttpConnection:
    """One client connection: parses requests, serves them one at a time in
    arrival order, and is the response writer the handler talks to. An
    `asyncio.Protocol` by its methods (the loop and the TLS layer only call them)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self._limits = server.wire_limits
        self._handler = server.handler
        self._loop = server.loop
        self._reader = RequestReader(self, self._limits)
        self._transport: asyncio.Transport | None = None
        # h2c prior knowledge: the first bytes, held until they are or are not the preface.
        self._sniff: bytes | None = None
        self._peer = "0.0.0.0"
        # The request whose head or body is being parsed.
        self._parsing: Exchange | None = None
        # Serving state: the request being answered, then queued ones with their cost in bytes.
        self._current: Exchange | None = None
        # The request whose handler was started last (it records its own outcome).
        self._handled: Exchange | None = None
        self._queue: collections.deque[tuple[Exchange, int]] = collections.deque()
        self._queued_bytes = 0
        self._backlog = b""
        self._task: asyncio.Task[None] | None = None
        self._fatal: tuple[int, str] | None = None
        self._broken = False
        # The server answered a request itself (a broken body) and closes once that is sent.
        self._answered = False
        self._closing = False
        self._eof = False
        self._reading_paused = 0
        self._writable = True
        self._drain_waiter: asyncio.Future[None] | None = None
        # The response being written.
        self._chunked = False
        self._head_only = False
        self._keep = True
        self._response_open = False
        # Upgrades.
        self._upgraded = False
        self._tunnel_buffer: list[bytes] = []
        self._tunnel: asyncio.Transport | None = None
        self._tunnel_done: asyncio.Future[None] | None = None
        # Housekeeping marks, set by `tick` and cleared by progress (no clock reads per request).
        self._reading_head = False
        self._head_since = 0.0
        self._idle_since = 0.0
        self._body_since = 0.0
        self._send_since = 0.0
        self._born = 0.0
        # Lingering close: the write side is shut, input is dropped (`_reading_paused`
        # holds _STOPPED), and the tick ends it (`_linger_tick`).
        self._lingering = False
        self._linger_heard = False
        self._linger_since = 0.0
        self._linger_out = 0.0
        self._linger_heard_at = 0.0
        server.connections.add(self)

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = peer[0]
            self._reader.peer = self._peer
        server = self.server
        if server.http2 is not None and server.http2.enabled:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                self._to_http2(b"")
            elif ssl_object is None and server.http2.cleartext:
                self._sniff = b""

    def _to_http2(self, data: bytes) -> None:
        """Hand the transport to an HTTP/2 connection (ALPN h2, or the h2c preface)."""
        server = self.server
        transport = self._transport
        assert transport is not None
        assert server.http2_limits is not None
        h2 = Http2Connection(server, cast(Any, server.handler), server.http2_limits, self._peer)
        server.connections.add(h2)
        server.forget(self)
        self._transport = None
        transport.set_protocol(h2)
        h2.connection_made(transport)
        if data:
            h2.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._sniff is not None:
            # h2c with prior knowledge: the first bytes decide (RFC 9113 §3.3).
            sniffed = self._sniff + data
            if PREFACE.startswith(sniffed[:len(PREFACE)]):
                if len(sniffed) < len(PREFACE):
                    # A partial preface is a head in progress: the header timeout applies.
                    self._sniff = sniffed
                    if not self._reading_head:
                        self.head_started()  # once: dribbled bytes do not restart the clock
                    return
                self._reading_head = False
                self._sniff = None
                self._to_http2(sniffed)
                return
            self._sniff = None
            data = sniffed
        if self._upgraded:
            if self._tunnel is not None:
                self._tunnel.write(data)
            else:
                self._tunnel_buffer.append(data)
                self._pause(_TUNNEL)
            return
        if self._backlog or self._reading_paused & _STOPPED:
            # Reading is paused; bytes a transport delivered anyway wait their turn (or are dropped).
            if not self._reading_paused & _STOPPED:
                self._backlog += data
            elif self._lingering:
                self._linger_heard = True  # dropped; the tick sees the client is still sending
            return
        reader = self._reader
        try:
            used = reader.feed(data)
        except WireError as exc:
            self._refused(exc)
            return
        if used < len(data) or reader.upgraded:
            self._rest(data, used)

    def _parse(self, data: bytes) -> None:
        reader = self._reader
        try:
            used = reader.feed(data)
        except WireError as exc:
            self._refused(exc)
            return
        self._rest(data, used)

    def _rest(self, data: bytes, used: int) -> None:
        """Bytes the reader did not take: the tunnel's after an upgrade, else held
        back until the connection's budget allows more requests."""
        reader = self._reader
        if reader.upgraded:
            self._upgraded = True
            if used < len(data):
                self._tunnel_buffer.append(data[used:])
        elif used < len(data):
            # The connection's budget is spent: keep the rest unparsed until answers go out.
            self._backlog = data[used:]
            self._pause(_BACKLOG)

    def eof_received(self) -> bool | None:
        if self._upgraded or self._lingering:
            # (Lingering: the client has ended its side too; the transport closes.)
            return None
        self._eof = True
        ex = self._parsing
        if ex is not None and isinstance(ex.body, RequestBody) and not ex.body.done:
            self._break_body(ex, BodyError(400, "The client ended the connection before the request body was complete"))
            return True
        if self._reading_head and not self._backlog:
            self._reading_head = False
            self._fail_request(400, "The client ended the connection before the request head was complete")
            return True
        # Like nginx, a client that ends its side while its request is served has left
        # (499); the transport closes and the request is cancelled.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self._closing = True
        self._writable = True
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self._tunnel is not None:
            self._tunnel.close()
        if self._tunnel_done is not None and not self._tunnel_done.done():
            self._tunnel_done.set_result(None)
            return
        gone = ConnectionResetError("the client closed the connection")
        for ex in (self._parsing, *(queued for queued, _ in self._queue)):
            if ex is not None and isinstance(ex.body, RequestBody):
                ex.body.fail(gone)
        self._queue.clear()
        self._backlog = b""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable = False
        if self._tunnel is not None:
            self._tunnel.pause_reading()
        else:
            # A client that does not read its answers gets no new ones (pipelined floods).
            self._pause(_SLOW_READER)

    def resume_writing(self) -> None:
        self._writable = True
        self._send_since = 0.0
        if self._tunnel is not None:
            self._tunnel.resume_reading()
        else:
            self._resume(_SLOW_READER)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- RequestEvents (called by the reader) ----------------------------------
    def head_started(self) -> None:
        self._reading_head = True
        self._head_since = 0.0
        self._idle_since = 0.0

    def head_received(self, ex: Exchange, has_body: bool, expect_continue: bool) -> None:
        self._reading_head = False
        if has_body:
            ex.body = RequestBody(self, expect_continue, self._limits)
            self._body_since = 0.0
        self._parsing = ex
        if self._task is None:
            self._current = ex
            self._task = self._loop.create_task(self._serve(ex))
            return
        reader = self._reader
        cost = reader.head_bytes + QUEUED_REQUEST_OVERHEAD
        # Pipelining: parse in small slices, so a pause stops within a few requests; for the
        # rest of the connection (were it reset once the queue drains, the next read of the
        # flood would be parsed in one 2 KiB slice: ~60 tiny requests past the budget's pause).
        reader.slice = PIPELINED_SLICE
        self._queue.append((ex, cost))
        self._queued_bytes += cost
        self._check_budget()

    def body_data(self, data: bytes) -> None:
        ex = self._parsing
        if ex is None or not isinstance(ex.body, RequestBody):
            return
        ex.body.feed(data)
        self._body_since = 0.0
        if ex is not self._current:
            # A queued request's body waits in memory: it counts against the budget.
            self._queued_bytes += len(data)
            self._check_budget()

    def message_complete(self) -> None:
        ex = self._parsing
        if ex is not None and isinstance(ex.body, RequestBody):
            ex.body.finish()
        self._parsing = None

    # -- the connection budget ---------------------------------------------------
    def _unsent(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def _check_budget(self) -> None:
        limits = self._limits
        if (len(self._queue) >= limits.max_pipelined
                or self._queued_bytes + self._unsent() > limits.connection_budget_bytes):
            self._reader.paused = True
            self._pause(_QUEUE)

    def _maybe_unblock(self) -> None:
        """Resume parsing and reading once the queue is back under half its budget."""
        if not self._reading_paused & (_QUEUE | _BACKLOG) or self._fatal is not None or self._broken:
            return
        limits = self._limits
        if (len(self._queue) >= limits.max_pipelined
                or self._queued_bytes + self._unsent() > limits.connection_budget_bytes // 2):
            return
        self._reader.paused = False
        self._resume(_QUEUE)
        while self._backlog and not self._reader.paused and not self._closing:
            data, self._backlog = self._backlog, b""
            self._parse(data)
        if not self._backlog:
            self._resume(_BACKLOG)

    # -- serving --------------------------------------------------------------
    async def _serve(self, ex: Exchange) -> None:
        while True:
            self._current = ex
            source = ex.body
            if isinstance(source, RequestBody) and isinstance(source.error, BodyError):
                # Its body broke while it waited its turn: answered without the handler.
                self._answer_broken(ex, source.error)
                return
            self._response_open = False
            self._keep = True
            self._handled = ex
            try:
                await self._handler(ex, self)
            except asyncio.CancelledError:
                self.abort()
                raise
            except Exception:
                log.exception("unhandled error in the request pipeline")
                if ex.status == 0:
                    body = error_body(500, "The gateway failed to handle the request",
                                      ex.request_id or new_request_id(), time.time())
                    self.send(ex, 500, _JSON, body)
                else:
                    self.abort()
            if ex.status == 0 or self._response_open:
                # The handler returned without finishing its response: the stream is unusable.
                self.abort()
                return
            if (not self._keep or self._closing or self._eof or self._transport is None
                    or self._transport.is_closing()):
                self.close()
                return
            if not self._queue:
                break
            if not self._writable:
                # The next answer waits until the client took the previous ones.
                try:
                    await self.drain()
                except ConnectionError:
                    return
                if self._closing or not self._queue:
                    break
            ex, cost = self._queue.popleft()
            self._queued_bytes -= cost + (ex.body.received if isinstance(ex.body, RequestBody) else 0)
            self._maybe_unblock()
        self._task = None
        self._current = None
        if self._fatal is not None:
            self._send_fatal()
            return
        self._maybe_unblock()

    def _refused(self, exc: WireError) -> None:
        """The reader refused what the client sent."""
        ex = self._parsing
        if ex is not None and isinstance(ex.body, RequestBody) and not ex.body.done:
            # The request exists and is (or will be) served: its body ends with the refusal.
            self._break_body(ex, BodyError(exc.status, exc.message))
            return
        self._fail_request(exc.status, exc.message)

    def _break_body(self, ex: Exchange, error: BodyError) -> None:
        """A body that cannot be completed (malformed, stalled, over budget, cut):
        a reader of it gets `error`, nothing more is parsed, and the request ends now
        if it is being served, else when its turn comes (`_serve`)."""
        assert isinstance(ex.body, RequestBody)
        ex.body.fail(error)
        self._parsing = None
        self._broken = True
        self._reading_head = False
        self._pause(_STOPPED)
        if ex is self._current:
            self._answer_broken(ex, error)

    def _answer_broken(self, ex: Exchange, error: BodyError) -> None:
        """End a request whose body broke, whatever its handler is doing: answer with
        the envelope if nothing was sent (else cut the response under way), close, and
        cancel the handler, which releases what it holds on the way out (upstream
        connection, in-flight counts, breaker slot) and records the status sent."""
        if ex is not self._handled:
            self.server.rejected(error.status)  # no handler will record this request
        if ex.status == 0:
            headers = [*_JSON, ("X-Request-ID", ex.request_id)] if ex.request_id else _JSON
            self.send(ex, error.status, headers,
                      error_body(error.status, error.message, ex.request_id or new_request_id(), time.time()))
            self._answered = True
            self.close()
        else:
            self.abort()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _fail_request(self, status: int, message: str) -> None:
        """A request could not be parsed: answer it after the ones before it, then close."""
        self._fatal = (status, message)
        self._pause(_STOPPED)
        if self._task is None:
            self._send_fatal()

    def _send_fatal(self) -> None:
        assert self._fatal is not None
        status, message = self._fatal
        ex = Exchange("GET", "/", "1.1", [], {}, self._peer, False, None, None, False)
        self.send(ex, status, _JSON, error_body(status, message, new_request_id(), time.time()))
        self.server.rejected(status)
        self.close()

    # -- the response writer --------------------------------------------------
    @property
    def date(self) -> str:
        return self.server.date

    def _framing(self, ex: Exchange, status: int, length: int | None) -> str:
        """Connection and length headers for the response head; decides keep-alive."""
        body = ex.body
        keep = (ex.keep_alive and (body is None or body.complete) and not self._closing and not self._eof
                and not ex.upgrade)
        framing, self._chunked, self._keep = response_framing(ex.version, keep, status, length)
        return framing

    def send(self, ex: Exchange, status: int, headers: list[tuple[str, str]], body: bytes,
             length: int | None = None) -> None:
        """A whole response. For HEAD, `length` may give the length a GET would have."""
        with_body = response_has_body(status, ex.method == "HEAD")
        framing = self._framing(ex, status, len(body) if length is None or with_body else length)
        data = response_head(status, headers, framing)
        ex.status = status
        if body and with_body:
            data += body
        ex.sent_bytes += len(data)
        self.write_raw(data)

    def start(self, ex: Exchange, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        """The head of a streamed response; `length` None streams chunked (close-delimited on HTTP/1.0)."""
        self._head_only = not response_has_body(status, ex.method == "HEAD")
        framing = self._framing(ex, status, length)
        if self._head_only:
            self._chunked = False
        data = response_head(status, headers, framing)
        ex.status = status
        ex.sent_bytes += len(data)
        self.write_raw(data)
        self._response_open = True

    def write(self, data: bytes) -> None:
        if not data or self._head_only:
            return
        if self._handled is not None:
            self._handled.sent_bytes += len(data)  # the payload (chunk framing is not counted)
        self.write_raw(encode_chunk(data) if self._chunked else data)

    def finish(self) -> None:
        if self._chunked and not self._head_only:
            self.write_raw(LAST_CHUNK)
        self._response_open = False

    def finish_with_trailers(self, trailers: list[tuple[str, str]]) -> None:
        """Trailers travel only in a chunked body to a client that said `TE: trailers`
        (RFC 9110 §6.5, §10.1.4); otherwise they are dropped and the response ends."""
        ex = self._handled
        if (not self._chunked or self._head_only or not trailers or ex is None
                or "trailers" not in (v.strip().lower() for v in ex.lookup.get("te", "").split(","))):
            self.finish()
            return
        self.write_raw(last_chunk_with_trailers(trailers))
        self._response_open = False

    async def drain(self) -> None:
        if self._writable:
            return
        self._drain_waiter = self._loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the client closed the connection")

    def write_raw(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._lingering:
            transport.write(data)

    def abort(self) -> None:
        if self._answered or self._lingering:
            # The server's own answer is on its way out: close after it, not over it.
            self.close()
            return
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close after what was written; a lingering close when the client may still
        be sending (see `_input_unread`)."""
        self._closing = True
        transport = self._transport
        if transport is None or self._lingering:
            return
        if (self._input_unread() and not self._eof and not self._upgraded and self.server.lingering_time_s > 0
                and not transport.is_closing() and transport.can_write_eof()):
            self._linger(transport)
            return
        transport.close()

    def kill(self) -> None:
        """Drop the connection now, whatever it is doing (the server's shutdown deadline)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    # -- lingering close ------------------------------------------------------------
    def _input_unread(self) -> bool:
        """The client may have sent bytes the gateway has not read (or will send more):
        a request head or body not read whole, requests queued or refused, or reading
        paused (bytes may wait in the kernel). Closing then would make the kernel send
        a reset, and a reset destroys the answer at the client before it is read."""
        return (self._parsing is not None or self._reading_head or self._reading_paused != 0
                or bool(self._backlog) or bool(self._queue) or self._fatal is not None or self._broken)

    def _linger(self, transport: asyncio.Transport) -> None:
        """Shut the write side once the answer is out (FIN after it), then read and
        drop whatever the client still sends until it closes, goes quiet for
        `lingering_timeout_s` or `lingering_time_s` has passed (`_linger_tick`).
        The connection stays counted against `max_client_connections`."""
        self._lingering = True
        self.server.lingering_closes += 1
        paused = self._reading_paused
        # Nothing more is parsed or buffered: data_received drops bytes while _STOPPED.
        self._reading_paused = _STOPPED
        self._backlog = b""
        if paused:
            transport.resume_reading()
        try:
            transport.write_eof()
        except OSError:
            # The peer is already gone (ENOTCONN): there is nothing to linger for.
            transport.abort()
            return
        now = time.monotonic()
        self._linger_since = self._linger_heard_at = now
        self._linger_out = 0.0 if transport.get_write_buffer_size() else now

    def _linger_tick(self, now: float) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        server = self.server
        if self._linger_heard:
            self._linger_heard = False
            self._linger_heard_at = now
        if not self._linger_out:
            if transport.get_write_buffer_size():
                # The answer is still going out: the client must take it within the send timeout.
                if now - self._linger_since > server.send_timeout_s:
                    transport.abort()
                return
            # The answer is out: the lingering time and the silence count from here.
            self._linger_out = self._linger_heard_at = now
        if now - self._linger_out > server.lingering_time_s or now - self._linger_heard_at > server.lingering_timeout_s:
            transport.close()

    # -- tunnels (after a 101 from the upstream) ------------------------------
    def start_tunnel(self, ex: Exchange, head: bytes, peer: asyncio.Transport) -> asyncio.Future[None]:
        """Write the 101 head, then relay raw bytes both ways until either side closes."""
        ex.status = 101
        self._keep = False
        self.write_raw(head)
        self._tunnel = peer
        self._tunnel_done = self._loop.create_future()
        for chunk in self._tunnel_buffer:
            peer.write(chunk)
        self._tunnel_buffer.clear()
        self._resume(_TUNNEL)
        if self._transport is None or self._transport.is_closing():
            self._tunnel_done.set_result(None)
        return self._tunnel_done

    def tunnel_write(self, data: bytes) -> None:
        self.write_raw(data)

    def tunnel_pause(self) -> None:
        self._pause(_TUNNEL)

    def tunnel_resume(self) -> None:
        self._resume(_TUNNEL)

    # -- flow control ------------------------------------------------------------
    def pause_for_body(self) -> None:
        self._pause(_BODY)

    def resume_for_body(self) -> None:
        if self._reading_paused & _BODY:
            self._resume(_BODY)

    def _pause(self, reason: int) -> None:
        if not self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._reading_paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._reading_paused & reason:
            return
        self._reading_paused &= ~reason
        if not self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- housekeeping --------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self._task is None and not self._reading_head and self._parsing is None and not self._backlog

    def tick(self, now: float, header_timeout_s: float, idle_timeout_s: float) -> None:  # noqa: C901 - hot path
        """Enforce the connection's timeouts (called by the server's housekeeping tick):
        head (408), body progress (408), a broken body nobody answered, answers the
        client does not take, and idle keep-alive."""
        if self._transport is None:
            # Accepted but never connected (the transport failed before connection_made).
            if not self._born:
                self._born = now
            elif now - self._born > 10.0:
                self.server.forget(self)
            return
        if self._lingering:
            self._linger_tick(now)
            return
        if self._closing:
            return
        if self._reading_paused and not self._upgraded and self._peer_gone():
            # While reading is paused the transport cannot see the client leave; a client
            # that did leave must not hold its request (and the upstream) until a timeout.
            self.abort()
            return
        server = self.server
        if self._writable or self._upgraded:
            self._send_since = 0.0
        elif not self._send_since:
            self._send_since = now
        elif now - self._send_since > server.send_timeout_s:
            self.abort()
            return
        ex = self._parsing
        if (ex is not None and isinstance(ex.body, RequestBody) and ex.body.awaiting_client and ex.status == 0
                and not self._reading_paused):
            # Only while the gateway is reading and nothing was answered: a paused read is
            # the gateway's doing, and an answered request closes when its answer ends.
            if not self._body_since:
                self._body_since = now
            elif now - self._body_since > server.body_timeout_s:
                self._break_body(ex, BodyError(
                    408, f"The request body did not arrive within {server.body_timeout_s:g} s"))
                return
        else:
            self._body_since = 0.0
        if self._reading_head and self._task is None:
            if not self._head_since:
                self._head_since = now
            elif now - self._head_since > header_timeout_s:
                self._reading_head = False
                self._fail_request(408, f"The request head did not arrive within {header_timeout_s:g} s")
            return
        if self.idle and not self._upgraded:
            if not self._idle_since:
                self._idle_since = now
            elif now - self._idle_since > idle_timeout_s:
                self.close()

    def _peer_gone(self) -> bool:
        if _TCP_INFO is None or self._transport is None:
            return False
        try:
            sock = self._transport.get_extra_info("socket")
            state = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)[0]
        except (OSError, AttributeError, TypeError, IndexError):
            return False
        return state in _PEER_GONE_STATES

    def shutdown(self) -> None:
        """Drain: close now if idle, else after the response being written."""
        self._closing = True
        if self.idle and not self._upgraded:
            self.close()


class _Refusal:
    """A connection over `max_client_connections`: answered with a 503 envelope
    and `Connection: close`, its request (if any) read and dropped so the close
    is a FIN after the answer rather than a reset; the housekeeping tick ends it
    if the client does not close first."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self.transport: asyncio.Transport | None = None
        self.since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self._server
        server.rejected(503)
        server.refused_connections += 1
        body = error_body(503, "The gateway is at its connection limit; retry later", new_request_id(), time.time())
        head = response_head(503, [("Date", server.date), ("Content-Type", "application/json"), ("Retry-After", "1")],
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n")
        out = self.transport
        assert out is not None
        out.write(head + body)
        if len(server.lingering) >= server.max_lingering or not out.can_write_eof():
            out.close()
            return
        try:
            out.write_eof()
        except OSError:
            # The client closed before it was accepted (ENOTCONN): nothing to linger for.
            out.abort()
            return
        server.lingering.add(self)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.lingering.discard(self)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def tick(self, now: float) -> None:
        if not self.since:
            self.since = now
        elif now - self.since > 2.0 and self.transport is not None:
            self.transport.close()
            self._server.lingering.discard(self)


class HttpServer:
    """The listening socket(s), the live connections, the housekeeping tick
    (date header, timeouts) and the drain on shutdown."""

    def __init__(self, handler: Handler, limits: LimitSettings, *, header_timeout_s: float = 10.0,
                 idle_timeout_s: float = 75.0, on_reject: Callable[[int], None] | None = None,
                 http2: Http2Settings | None = None) -> None:
        self.handler = handler
        # HTTP/2 (wire/http2): None serves HTTP/1.1 only.
        self.http2 = http2
        self.http2_limits = http2_limits(http2, limits) if http2 is not None else None
        self.limits = limits
        self.wire_limits = wire_limits(limits)
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.body_timeout_s = limits.client_body_timeout_s
        self.send_timeout_s = limits.client_send_timeout_s
        self.max_connections = limits.max_client_connections
        self.max_lingering = max(16, self.max_connections // 8)
        # Lingering close of connections answered before their input was read (HttpConnection._linger).
        self.lingering_time_s = limits.lingering_time_s
        self.lingering_timeout_s = limits.lingering_timeout_s
        self.lingering_closes = 0
        # The tick is the clock of every timeout: at most a quarter of the shortest one
        # apart (tests use sub-second timeouts), at least once a second.
        self.tick_s = min(1.0, max(0.05, min(header_timeout_s, self.body_timeout_s) / 4))
        self.loop = asyncio.get_running_loop()
        self.connections: set[ClientConnection] = set()
        self.lingering: set[_Refusal] = set()
        self.refused_connections = 0
        self.date = email.utils.formatdate(usegmt=True)
        self._on_reject = on_reject
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._all_closed = asyncio.Event()
        # -- TLS (listen(ssl=...); wire/tls.py) --
        #: Accepted sockets whose TLS handshake is under way (counted against the connection cap).
        self.handshakes: set[TlsHandshake] = set()
        self.handshake_failures: dict[str, int] = {}
        self._tls: tuple[ssl.SSLContext, float] | None = None

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

    def rejected(self, status: int) -> None:
        if self._on_reject is not None:
            self._on_reject(status)

    def _accept(self) -> asyncio.Protocol:
        # Counted when the protocol is made (before connection_made), so a burst of
        # accepts in one loop iteration cannot overshoot the cap.
        # (Protocols by their methods, not subclasses of asyncio.Protocol: the casts say so.)
        if len(self.connections) >= self.max_connections:
            return cast(asyncio.Protocol, _Refusal(self))
        return cast(asyncio.Protocol, HttpConnection(self))

    def _accept_tls(self) -> asyncio.Protocol:
        assert self._tls is not None
        if len(self.connections) + len(self.handshakes) >= self.max_connections:
            # A 503 would cost a handshake at the moment the gateway is busiest: the socket is closed.
            self.refused_connections += 1
            return cast(asyncio.Protocol, _Dropped())
        context, timeout_s = self._tls
        return TlsHandshake(self, context, timeout_s)

    def established(self, transport: asyncio.Transport, held: HeldProtocol) -> None:
        """A TLS handshake ended well: the connection protocol takes the TLS transport
        over, with what arrived in between (`tls.HeldProtocol`)."""
        conn = HttpConnection(self)
        transport.set_protocol(cast(asyncio.Protocol, conn))
        conn.connection_made(transport)
        # connection_made may have handed the transport to HTTP/2 (ALPN h2): replay to its protocol.
        proto = cast(asyncio.Protocol, transport.get_protocol())
        if held.write_paused:
            proto.pause_writing()
        for data in held.data:
            proto.data_received(data)
        if held.eof and not proto.eof_received():
            transport.close()
        if held.lost:
            proto.connection_lost(held.lost_exc)

    def handshake_failed(self, reason: str) -> None:
        self.handshake_failures[reason] = self.handshake_failures.get(reason, 0) + 1

    async def listen(self, host: str, port: int, backlog: int = 1024, ssl: ssl.SSLContext | None = None,
                     reuse_port: bool = False, *, handshake_timeout_s: float = 10.0) -> int:
        """Listen on `host:port` (0: any free port), over TLS with `ssl`: a client must then
        finish its handshake within `handshake_timeout_s` (wire/tls.py). Returns the port."""
        factory = self._accept
        if ssl is not None:
            self._tls = (ssl, handshake_timeout_s)
            factory = self._accept_tls
        # reuse_port: several worker processes share the port; the kernel spreads connections (workers.md).
        self._server = await self.loop.create_server(factory, host, port, backlog=backlog,
                                                     reuse_address=True, reuse_port=reuse_port or None)
        self._ticker = self.loop.create_task(self._tick_forever(), name="http-housekeeping")
        # Read untyped: uvloop's `Server.sockets` is a list where typeshed says tuple, and the
        # compiled module would check the declared type (a TypeError).
        sockets: Any = cast(Any, self._server).sockets
        return int(sockets[0].getsockname()[1])

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.date = email.utils.formatdate(usegmt=True)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.tick(now, self.header_timeout_s, self.idle_timeout_s)
            for refusal in list(self.lingering):
                refusal.tick(now)

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting, let in-flight responses finish for up to `timeout_s`, then abort the rest."""
        if self._server is not None:
            self._server.close()
        self._all_closed.clear()
        for handshake in list(self.handshakes):
            handshake.abort()
        self.handshakes.clear()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for conn in list(self.connections):
            conn.kill()
        for refusal in list(self.lingering):
            if refusal.transport is not None:
                refusal.transport.close()
        self.lingering.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class _Dropped:
    """A TLS connection over the cap: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def wire_limits(limits: LimitSettings) -> WireLimits:
    """The sans-I/O limits of a client connection, from the settings."""
    return WireLimits(
        max_url_bytes=limits.max_url_bytes, max_header_bytes=limits.max_header_bytes,
        max_headers=limits.max_headers, max_body_bytes=limits.max_body_bytes,
        max_pipelined=limits.max_pipelined_requests, connection_budget_bytes=limits.max_connection_buffer_bytes,
    )


def http2_limits(http2: Http2Settings, limits: LimitSettings) -> H2Limits:
    """The sans-I/O limits of an HTTP/2 client connection, from the settings."""
    return H2Limits(
        max_concurrent_streams=http2.max_concurrent_streams, max_header_list_size=http2.max_header_list_size,
        initial_window_size=http2.initial_window_size, connection_window_size=http2.connection_window_size,
        max_header_block_bytes=http2.max_header_block_bytes, max_headers=limits.max_headers,
        budget_window_s=http2.budget_window_s, max_resets=http2.max_resets,
        max_control_frames=http2.max_control_frames,
    )

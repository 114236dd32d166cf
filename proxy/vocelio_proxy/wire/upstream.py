"""The upstream HTTP/1.1 client: a keep-alive connection pool per endpoint and a
response reader on httptools (llhttp), built for the proxy's hot path.

The wire rules come from `http1`: request heads (`heads.request_head`), chunk
encoding, the answer head's fields and limits (`answers.UpstreamHeadReader`,
shared with the tunnel), how a response body is delimited and whether the
connection can be reused (`framing.upstream_body_framing`, RFC 9112 §6.3: a
response with both Content-Length and Transfer-Encoding, several
Content-Lengths or a status outside 100-599 is refused), and the body buffer
with its watermarks (reading pauses while the client is slow). Trailer fields
of a chunked response are dropped.

One connection only ever carries the answer to its own request: bytes after a
complete response, bytes while idle in the pool, and a no-body answer (1xx,
204, 304, HEAD) whose head announced bytes (which may still come, and would
be read as the next request's answer) all make the connection unusable.
Malformed, slow (request and idle deadlines) or truncated answers become
`UpstreamError`.

Owned by the proxy application (one `UpstreamPool` per process, closed on
shutdown); used by the proxy handler and the active health checker.

Compiled with mypyc (docs/performance.md): the connection is an asyncio
protocol by its methods, not by inheritance (the loop only calls them), and a
response body is read through an async-iterator class (`ResponseChunks`),
not an async generator.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httptools

from vocelio_proxy.wire.http1.answers import UpstreamHeadReader
from vocelio_proxy.wire.http1.body import BodyBuffer
from vocelio_proxy.wire.http1.chunks import LAST_CHUNK, encode_chunk
from vocelio_proxy.wire.http1.framing import UNTIL_CLOSE, WireError, upstream_body_framing
from vocelio_proxy.wire.http1.heads import request_head

__all__ = ["LAST_CHUNK", "ResponseChunks", "UpstreamConnection", "UpstreamError", "UpstreamPool",
           "UpstreamResponse", "encode_chunk", "request_head"]

_MAX_IDLE_PER_ENDPOINT = 512


class UpstreamError(Exception):
    """A failure talking to an upstream; `kind` is connect, timeout, reset or protocol.
    `timed_out`: a deadline ended it (a connect that did not complete in time is kind
    connect and timed out). Said in a field, not by a `TimeoutError` as `__cause__`:
    compiled code (mypyc) does not set `__cause__` on `raise ... from`."""

    def __init__(self, kind: str, message: str, *, response_started: bool = False,
                 reused: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.response_started = response_started
        self.reused = reused
        self.timed_out = timed_out or kind == "timeout"


class UpstreamResponse:
    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.headers = headers


class UpstreamConnection:
    """One HTTP/1.1 connection; one request at a time (no pipelining). An
    `asyncio.Protocol` by its methods (the loop only calls them)."""

    def __init__(self, pool: UpstreamPool, key: str) -> None:
        self._pool = pool
        self.key = key
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._parser: Any = None
        self._head = False
        self._informational = False
        # The answer head's fields and limits (shared rules with the tunnel).
        self._head_reader = UpstreamHeadReader()
        self._headers_future: asyncio.Future[UpstreamResponse] | None = None
        self._body = BodyBuffer()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._got_headers = False
        self._close_delimited = False
        self._error: UpstreamError | None = None
        self._paused = False
        # One lazily re-armed timer per connection: a request sets `_deadline`; the timer
        # only moves when it fires early (so keep-alive requests rarely touch the timer heap).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._deadline_what = ""
        self.keep_alive = False
        self._writable = asyncio.Event()
        self._writable.set()

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            # Bytes on an idle connection: the server is misbehaving; drop it.
            self._fail(UpstreamError("protocol", "unexpected data on idle connection"))
            return
        try:
            self._parser.feed_data(data)
            if not self._head_reader.in_body:
                # The head is still incomplete after this read: bound what llhttp buffers.
                self._head_reader.head_read(len(data))
        except WireError as refused:
            self._fail(UpstreamError("protocol", f"invalid upstream response: {refused.message}",
                                     reused=self.reused))
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("protocol", "unexpected protocol upgrade", response_started=True))
        except httptools.HttpParserError as exc:
            if self._done and self._error is None:
                # Bytes after a complete response: the answer stands, the connection does not.
                self.keep_alive = False
                return
            cause = exc.__context__
            reason = cause.message if isinstance(cause, WireError) else str(exc)
            self._fail(UpstreamError("protocol", f"invalid upstream response: {reason}",
                                     response_started=self._got_headers, reused=self.reused))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()
        self._drop_timer()
        if self._parser is None or self._done:
            return
        if self._got_headers and self._close_delimited:
            self._finish()
            return
        self._fail(UpstreamError(
            "reset", "upstream closed the connection" + (f": {exc}" if exc else ""),
            response_started=self._got_headers, reused=self.reused,
        ))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- httptools callbacks ---------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_reader.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._done:
            # A second answer on the connection (its fields were dropped as trailers).
            raise WireError(502, "data after a complete response")
        parser = self._parser
        status = parser.get_status_code()
        head_reader = self._head_reader
        head_reader.in_body = True
        fields = head_reader.fields
        if 100 <= status < 200 and status != 101:
            # An interim answer: its head obeys the same rules (one announcing a body is
            # refused); the final answer's fields come next.
            upstream_body_framing(status, self._head, "1.1", fields)
            self._informational = True
            return
        kind, reusable = upstream_body_framing(status, self._head, parser.get_http_version, fields)
        self._got_headers = True
        self.keep_alive = reusable and parser.should_keep_alive()
        self._close_delimited = kind == UNTIL_CLOSE
        self._cancel_timer()
        fut = self._headers_future
        if fut is not None and not fut.done():
            fut.set_result(UpstreamResponse(status, fields))
        if self._head:
            # llhttp cannot be told the request was HEAD; finish here and use a
            # fresh parser for the next request on this connection.
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._done:
            # Body bytes after an answer that was complete (to HEAD): never reused. (Defence
            # in depth: framing already refuses reuse after a HEAD answer announcing a body.)
            self.keep_alive = False
            return
        if self._body.push(body) and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            # The final answer's fields come next.
            self._informational = False
            self._head_reader.start_head(interim=True)
            return
        if not self._done:
            self._finish()

    # -- internals -----------------------------------------------------------
    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        self._cancel_timer()
        fut = self._headers_future
        if fut is not None and not fut.done():
            fut.set_exception(error)
            # Read by whoever awaits it; mark it seen so an abandoned request does not warn.
            fut.exception()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    def _cancel_timer(self) -> None:
        self._deadline = 0.0

    def _set_deadline(self, timeout_s: float, what: str) -> None:
        deadline = self._loop.time() + timeout_s
        self._deadline = deadline
        self._deadline_what = what
        if self._timer is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if not deadline:
            return
        if self._loop.time() >= deadline:
            self._on_timeout(self._deadline_what)
        else:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def _drop_timer(self) -> None:
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self, what: str) -> None:
        self._fail(UpstreamError("timeout", f"upstream did not answer within the {what} timeout",
                                 response_started=self._got_headers))

    def abort(self) -> None:
        """Drop the connection; its owner has stopped waiting for the response."""
        self.closed = True
        self._drop_timer()
        fut = self._headers_future
        if fut is not None and not fut.done():
            fut.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- request/response API -------------------------------------------------
    def start_request(self, head: bytes, method: str, timeout_s: float) -> asyncio.Future[UpstreamResponse]:
        self._parser = httptools.HttpResponseParser(self)
        self._head = method == "HEAD"
        self._head_reader.start_head()
        self._body.clear()
        self._done = False
        self._got_headers = False
        self._error = None
        self._informational = False
        self._headers_future = self._loop.create_future()
        self._set_deadline(timeout_s, "request")
        assert self.transport is not None
        self.transport.write(head)
        return self._headers_future

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamError("reset", "upstream closed the connection while sending the body",
                                reused=self.reused)
        self.transport.write(data)

    async def drain_ready(self) -> None:
        """Wait while the transport asks us to stop writing (upload back-pressure)."""
        if not self._writable.is_set():
            await self._writable.wait()

    def body_complete_buffered(self) -> bytes | None:
        """The whole body if it has already arrived (the common small-response case)."""
        if self._done and self._error is None:
            return self._body.take_all()
        return None

    def iter_body(self, idle_timeout_s: float) -> ResponseChunks:
        """The rest of the response body, chunk by chunk as it arrives (reading resumes
        as the buffer drains); at most `idle_timeout_s` between chunks, else
        `UpstreamError(timeout)`. A broken or cut body raises its `UpstreamError` after
        the chunks that did arrive."""
        return ResponseChunks(self, idle_timeout_s)

    def _next_buffered(self) -> bytes | None:
        """The next chunk already here (resuming reading once the buffer drained), or None."""
        chunk, resume = self._body.pop()
        if chunk is not None and resume and self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    async def _wait_for_body(self, idle_timeout_s: float) -> None:
        """Wait for more of the body, its end or its failure, at most `idle_timeout_s`."""
        self._waiter = self._loop.create_future()
        self._set_deadline(idle_timeout_s, "idle")
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._cancel_timer()

    @property
    def reusable(self) -> bool:
        return self._done and self._error is None and self.keep_alive and not self.closed


class ResponseChunks:
    """`UpstreamConnection.iter_body`: an async iterator over a response body (an
    async-iterator class: mypyc compiles no async generators). Nothing is held between
    chunks, so a reader that stops early (a `break`, a cancellation) leaves nothing to
    clean up; a cancelled wait drops its waiter and idle deadline on the way out."""

    __slots__ = ("_conn", "_idle_timeout_s")

    def __init__(self, conn: UpstreamConnection, idle_timeout_s: float) -> None:
        self._conn = conn
        self._idle_timeout_s = idle_timeout_s

    def __aiter__(self) -> ResponseChunks:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while True:
            chunk = conn._next_buffered()
            if chunk is not None:
                return chunk
            error = conn._error
            if error is not None:
                raise error
            if conn._done:
                raise StopAsyncIteration
            await conn._wait_for_body(self._idle_timeout_s)


class UpstreamPool:
    """Keep-alive connections per endpoint key (`address:port`), LIFO so hot
    connections are reused and cold ones age out."""

    def __init__(self, idle_timeout_s: float = 60.0) -> None:
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._idle_timeout_s = idle_timeout_s
        self.created = 0

    def acquire_idle(self, key: str) -> UpstreamConnection | None:
        """A pooled keep-alive connection to `key` (`address:port`), if one is fresh."""
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout_s:
                conn.reused = True
                return conn
            conn.abort()
        return None

    async def acquire(self, host: str, port: int, connect_timeout_s: float) -> UpstreamConnection:
        key = f"{host}:{port}"
        conn = self.acquire_idle(key)
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        conn = UpstreamConnection(self, key)
        # A protocol by its methods (not a subclass of asyncio.Protocol): the loop only calls them.
        protocol = cast(asyncio.Protocol, conn)
        try:
            async with asyncio.timeout(connect_timeout_s):
                await loop.create_connection(lambda: protocol, host, port)
        except TimeoutError as late:
            raise UpstreamError("connect", f"connect to {key} timed out", timed_out=True) from late
        except OSError as exc:
            raise UpstreamError("connect", f"connect to {key} failed: {exc.strerror or exc}") from exc
        self.created += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if not conn.reusable:
            conn.abort()
            return
        conn._parser = None
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= _MAX_IDLE_PER_ENDPOINT:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def sweep(self) -> int:
        """Close connections idle longer than the idle timeout; returns how many."""
        now = time.monotonic()
        closed = 0
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.closed or now - conn.idle_since >= self._idle_timeout_s:
                    conn.abort()
                    closed += 1
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return closed

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()

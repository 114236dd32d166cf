"""The gateway's HTTP/1.1 server: an asyncio protocol on httptools (llhttp)
that turns client bytes into `Exchange`s, runs the pipeline's handler for each
in order (keep-alive, pipelining), and writes responses: whole, streamed with
Content-Length, chunked, or close-delimited for HTTP/1.0; HEAD and 1xx rules;
`Expect: 100-continue`; back-pressure both ways; raw tunnels after an upgrade.

It also owns the client-side limits that must hold before a request exists
(URL and header sizes, malformed requests, slow headers, idle keep-alive
connections) and the drain on shutdown. Started by `app.start_gateway`; the
handler is `handling.GatewayHandler`.

Why not aiohttp's server: its per-request objects (Request, CIMultiDict
headers, StreamResponse, signals, middleware wrapping) cost 25-30 us of the
~90 us a request may spend here to meet the throughput bar (see README,
"Performance"); aiohttp still owns the application's lifecycle and clients.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httptools

from .errors import error_body
from .exchange import Exchange
from .forwarding import new_request_id
from .settings import LimitSettings

log = logging.getLogger("vocelio.proxy.server")

Handler = Callable[[Exchange, "HttpConnection"], Awaitable[None]]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_MAX_PIPELINED = 16
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUSES = frozenset({204, 304})
_STATUS_REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    206: "Partial Content", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type", 421: "Misdirected Request",
    422: "Unprocessable Content", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n" for code, reason in _STATUS_REASONS.items()}


def status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} {_STATUS_REASONS.get(status, 'Status')}\r\n"


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request that breaks a limit."""


class RequestBody:
    """A request body arriving from the client, read once by the handler."""

    __slots__ = ("_chunks", "_conn", "_done", "_error", "_expect_continue", "_size", "_waiter")

    def __init__(self, conn: HttpConnection, expect_continue: bool) -> None:
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._expect_continue = expect_continue

    @property
    def complete(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER:
            self._conn.pause_for_body()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: Exception) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._expect_continue:
            self._expect_continue = False
            self._conn.write_raw(_CONTINUE)
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size < _LOW_WATER:
                    self._conn.resume_for_body()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, serves them one at a time in
    arrival order, and is the response writer the handler talks to."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self._limits = server.limits
        self._handler = server.handler
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = "0.0.0.0"
        # Parsing state of the request being read.
        self._url: list[bytes] = []
        self._url_bytes = 0
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._parsing: Exchange | None = None
        self._reject: tuple[int, str] | None = None
        # Serving state.
        self._queue: collections.deque[Exchange] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._fatal: tuple[int, str] | None = None
        self._closing = False
        # A bit per reason: 1 body back-pressure, 2 pipeline depth, 4 tunnel setup, 8 closing, 16 slow reader.
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
        # Housekeeping marks, set by `tick` (no clock reads per request).
        self._reading_head = False
        self._head_since = 0.0
        self._idle_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = peer[0]
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            if self._tunnel is not None:
                self._tunnel.write(data)
            else:
                self._tunnel_buffer.append(data)
                self._pause(4)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            rest = data[exc.args[0]:]
            if rest:
                self._tunnel_buffer.append(rest)
        except httptools.HttpParserError as exc:
            if self._reject is not None:
                self._fail_request(*self._reject)
            else:
                self._fail_request(400, f"Malformed HTTP request: {exc}")

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
        for ex in (self._parsing, *self._queue):
            if ex is not None and isinstance(ex.body, RequestBody):
                ex.body.fail(ConnectionResetError("the client closed the connection"))
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable = False
        if self._tunnel is not None:
            self._tunnel.pause_reading()
        else:
            # A client that does not read its answers gets no new ones (pipelined floods).
            self._pause(16)

    def resume_writing(self) -> None:
        self._writable = True
        if self._tunnel is not None:
            self._tunnel.resume_reading()
        else:
            self._resume(16)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = []
        self._url_bytes = 0
        self._headers = []
        self._header_bytes = 0
        self._reading_head = True
        self._head_since = 0.0
        self._idle_since = 0.0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_bytes += len(url)
        if self._url_bytes > self._limits.max_url_bytes:
            self._reject = (414, f"The URL exceeds {self._limits.max_url_bytes} bytes")
            raise _Rejected

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self._limits.max_header_bytes:
            self._reject = (431, f"Request headers exceed {self._limits.max_header_bytes} bytes")
            raise _Rejected
        if len(self._headers) >= self._limits.max_headers:
            self._reject = (431, f"More than {self._limits.max_headers} request headers")
            raise _Rejected
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._reading_head = False
        parser = self._parser
        headers = self._headers
        lookup: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            prior = lookup.get(key)
            lookup[key] = value if prior is None else f"{prior}, {value}"
        length_text = lookup.get("content-length")
        length = int(length_text) if length_text is not None else None
        has_body = "transfer-encoding" in lookup or bool(length)
        body = RequestBody(self, lookup.get("expect", "").lower() == "100-continue") if has_body else None
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        ex = Exchange(parser.get_method().decode("ascii"), url.decode("latin-1"), parser.get_http_version(),
                      headers, lookup, self._peer, parser.should_keep_alive(), body,
                      length if "transfer-encoding" not in lookup else None, parser.should_upgrade())
        self._parsing = ex
        if self._task is None:
            self._task = self._loop.create_task(self._serve(ex))
        else:
            self._queue.append(ex)
            if len(self._queue) >= _MAX_PIPELINED:
                self._pause(2)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is not None and isinstance(ex.body, RequestBody):
            ex.body.feed(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        if ex is not None and isinstance(ex.body, RequestBody):
            ex.body.finish()
        self._parsing = None

    # -- serving --------------------------------------------------------------
    async def _serve(self, ex: Exchange) -> None:
        while True:
            self._response_open = False
            self._keep = True
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
                    self.send(ex, 500, [("Content-Type", "application/json")], body)
                else:
                    self.abort()
            if ex.status == 0 or self._response_open:
                # The handler returned without finishing its response: the stream is unusable.
                self.abort()
                return
            if not self._keep or self._closing or self._transport is None or self._transport.is_closing():
                self.close()
                return
            if not self._queue:
                break
            ex = self._queue.popleft()
            if len(self._queue) < _MAX_PIPELINED:
                self._resume(2)
        self._task = None
        if self._fatal is not None:
            self._send_fatal()

    def _fail_request(self, status: int, message: str) -> None:
        """A request could not be parsed: answer it after the ones before it, then close."""
        self._fatal = (status, message)
        self._pause(8)
        if self._task is None:
            self._send_fatal()

    def _send_fatal(self) -> None:
        assert self._fatal is not None
        status, message = self._fatal
        ex = Exchange("GET", "/", "1.1", [], {}, self._peer, False, None, None, False)
        self.send(ex, status, [("Content-Type", "application/json")],
                  error_body(status, message, new_request_id(), time.time()))
        self.server.rejected(status)
        self.close()

    # -- the response writer --------------------------------------------------
    @property
    def date(self) -> str:
        return self.server.date

    def _framing(self, ex: Exchange, status: int, length: int | None) -> str:
        """Connection and length headers for the response head; decides keep-alive."""
        body_read = ex.body is None or ex.body.complete
        keep = ex.keep_alive and body_read and not self._closing and not ex.upgrade
        self._chunked = False
        if status < 200 or status in _NO_BODY_STATUSES:
            framing = ""
        elif length is not None:
            framing = f"Content-Length: {length}\r\n"
        elif ex.version == "1.1":
            self._chunked = True
            framing = "Transfer-Encoding: chunked\r\n"
        else:
            keep = False
            framing = ""
        self._keep = keep
        if not keep:
            return framing + "Connection: close\r\n"
        if ex.version == "1.0":
            return framing + "Connection: keep-alive\r\n"
        return framing

    def send(self, ex: Exchange, status: int, headers: list[tuple[str, str]], body: bytes,
             length: int | None = None) -> None:
        """A whole response. For HEAD, `length` may give the length a GET would have."""
        ex.status = status
        head_only = ex.method == "HEAD" or status in _NO_BODY_STATUSES
        framing = self._framing(ex, status, len(body) if length is None or not head_only else length)
        text = status_line(status) + "".join([f"{k}: {v}\r\n" for k, v in headers]) + framing + "\r\n"
        data = text.encode("latin-1")
        if body and not head_only:
            data += body
        self.write_raw(data)

    def start(self, ex: Exchange, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        """The head of a streamed response; `length` None streams chunked (close-delimited on HTTP/1.0)."""
        ex.status = status
        self._head_only = ex.method == "HEAD" or status in _NO_BODY_STATUSES
        framing = self._framing(ex, status, length)
        if self._head_only:
            self._chunked = False
        text = status_line(status) + "".join([f"{k}: {v}\r\n" for k, v in headers]) + framing + "\r\n"
        self.write_raw(text.encode("latin-1"))
        self._response_open = True

    def write(self, data: bytes) -> None:
        if not data or self._head_only:
            return
        self.write_raw(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    def finish(self) -> None:
        if self._chunked and not self._head_only:
            self.write_raw(b"0\r\n\r\n")
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
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

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
        self._resume(4)
        if self._transport is None or self._transport.is_closing():
            self._tunnel_done.set_result(None)
        return self._tunnel_done

    def tunnel_write(self, data: bytes) -> None:
        self.write_raw(data)

    def tunnel_pause(self) -> None:
        self._pause(4)

    def tunnel_resume(self) -> None:
        self._resume(4)

    # -- flow control ------------------------------------------------------------
    def pause_for_body(self) -> None:
        self._pause(1)

    def resume_for_body(self) -> None:
        if self._reading_paused & 1:
            self._resume(1)

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
        return self._task is None and not self._reading_head and self._parsing is None

    def tick(self, now: float, header_timeout_s: float, idle_timeout_s: float) -> None:
        """Close connections that are slow to send a head or idle too long (called each second)."""
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

    def shutdown(self) -> None:
        """Drain: close now if idle, else after the response being written."""
        self._closing = True
        if self.idle and not self._upgraded:
            self.close()


class HttpServer:
    """The listening socket(s), the live connections, the per-second housekeeping
    (date header, header and idle timeouts) and the drain on shutdown."""

    def __init__(self, handler: Handler, limits: LimitSettings, *, header_timeout_s: float = 10.0,
                 idle_timeout_s: float = 75.0, on_reject: Callable[[int], None] | None = None) -> None:
        self.handler = handler
        self.limits = limits
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpConnection] = set()
        self.date = email.utils.formatdate(usegmt=True)
        self._on_reject = on_reject
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._all_closed = asyncio.Event()

    def forget(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

    def rejected(self, status: int) -> None:
        if self._on_reject is not None:
            self._on_reject(status)

    async def listen(self, host: str, port: int, backlog: int = 1024) -> int:
        self._server = await self.loop.create_server(lambda: HttpConnection(self), host, port, backlog=backlog,
                                                     reuse_address=True)
        self._ticker = self.loop.create_task(self._tick_forever(), name="http-housekeeping")
        return int(self._server.sockets[0].getsockname()[1])

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.date = email.utils.formatdate(usegmt=True)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.tick(now, self.header_timeout_s, self.idle_timeout_s)

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting, let in-flight responses finish for up to `timeout_s`, then abort the rest."""
        if self._server is not None:
            self._server.close()
        self._all_closed.clear()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for conn in list(self.connections):
            conn.abort()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


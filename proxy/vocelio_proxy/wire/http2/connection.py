"""The gateway's HTTP/2 server connection: the asyncio shell around h2's
sans-I/O `H2Connection` (server side). Each request stream becomes one
`Exchange` served by the same pipeline handler as HTTP/1.1, with a
`StreamWriter` as its response writer. Created by `server.HttpConnection`
when TLS negotiated ALPN `h2` or (with `http2.cleartext`) a connection opens
with the HTTP/2 preface; it then owns the transport.

What it guarantees per connection (docs/http2.md):
- backpressure both ways: a request body opens its flow-control window only as
  the pipeline reads it (`StreamBody`); response bytes go out only as the
  client's windows allow, and `drain` waits until a stream's unsent bytes are
  under the low watermark; a stream stalled for `client_send_timeout_s` is
  reset and its handler released; reading pauses while the client does not
  take what was written (so PING and SETTINGS floods cannot grow the output);
- every stream ends: a handler that returns without finishing, a client reset
  (the handler is cancelled: upstream work, in-flight counts and breaker
  slots are released), a lost connection (all handlers cancelled);
- abuse ends the connection with GOAWAY ENHANCE_YOUR_CALM (`rules.FrameMeter`:
  rapid reset, CONTINUATION flood, control frame floods; h2/hpack: HPACK bombs
  over `max_header_list_size`); streams beyond `max_concurrent_streams` are
  refused with REFUSED_STREAM; malformed request heads are stream errors;
- drain (`shutdown`): GOAWAY with the last stream id, in-flight streams finish,
  then the connection closes. Time is read only by the server's housekeeping
  tick (`tick`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from vocelio_proxy.policy.error_envelope import error_body
from vocelio_proxy.policy.forwarded_headers import new_request_id
from vocelio_proxy.wire.exchange import BodyError, Exchange
from vocelio_proxy.wire.http1.body import BodyBuffer
from vocelio_proxy.wire.http2.hpack_bounds import BoundedEncoder
from vocelio_proxy.wire.http2.rules import (
    FrameMeter,
    H2Limits,
    MalformedRequest,
    request_head,
    response_fields,
    trailer_fields,
)

if TYPE_CHECKING:
    from vocelio_proxy.wire.server import HttpServer
    from vocelio_proxy.wire.tunnel import UpgradableWriter

log = logging.getLogger("vocelio.proxy.http2")

StreamHandler = Callable[[Exchange, "UpgradableWriter"], Awaitable[None]]

#: `drain` returns once a stream has fewer unsent bytes than this.
_LOW_WATER = 64 * 1024
_HEAD_ONLY_STATUSES = frozenset({204, 304})


class _Server(H2Connection):
    """h2's connection, with two differences:
    - a stream beyond the concurrency limit is admitted by h2 (so HPACK state and
      stream states stay exact) and then refused by the shell with REFUSED_STREAM
      (RFC 9113 §5.1.2: a stream error), where h2 alone would end the whole connection;
    - the client's GOAWAY does not close h2's state machine: h2 would answer every
      later frame (the DATA of a stream still uploading, a PING) with a connection
      PROTOCOL_ERROR, where RFC 9113 §6.8 lets streams up to the last stream id
      complete. The shell drains instead (`ConnectionTerminated`)."""

    def __init__(self, config: H2Configuration, limit: int) -> None:
        super().__init__(config)
        # The client's SETTINGS_HEADER_TABLE_SIZE never grows the encoder's table past 4 KiB.
        self.encoder = BoundedEncoder()
        self.stream_limit = limit
        self.over_limit: set[int] = set()
        self._admitting = False
        #: The highest stream id received when the client's first GOAWAY arrived (None: none
        #: yet): read here, frame by frame, because a HEADERS in the same read follows it.
        self.client_goaway_at: int | None = None
        #: The last stream id named by the drain's GOAWAY (None: no drain), set by the shell.
        self.drain_last: int | None = None

    @property
    def last_served(self) -> int | None:
        """The highest stream id that may still be served (None: no GOAWAY either way)."""
        client, drain = self.client_goaway_at, self.drain_last
        if client is None:
            return drain
        return client if drain is None else min(client, drain)

    def _terminate_connection(self, error_code: Any) -> None:
        # h2's GOAWAY for a connection error names the highest stream id received: never more
        # than a GOAWAY already sent (RFC 9113 §6.8), never a stream refused after one.
        last = self.last_served
        highest = self.highest_inbound_stream_id
        if last is None or last >= highest:
            super()._terminate_connection(error_code)
            return
        self.highest_inbound_stream_id = last
        try:
            super()._terminate_connection(error_code)
        finally:
            self.highest_inbound_stream_id = highest

    @property
    def open_inbound_streams(self) -> int:
        if self._admitting:
            return 0
        return super().open_inbound_streams

    def _receive_goaway_frame(self, frame: Any) -> Any:
        if self.client_goaway_at is None:
            self.client_goaway_at = self.highest_inbound_stream_id
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code  # an unknown code (RFC 9113 §7), as h2 keeps it
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def _receive_headers_frame(self, frame: Any) -> Any:
        # len(streams) bounds the open count from above: the exact (O(n)) count only near the limit.
        if (frame.stream_id not in self.streams and len(self.streams) >= self.stream_limit
                and super().open_inbound_streams >= self.stream_limit):
            self.over_limit.add(frame.stream_id)
            self._admitting = True
            try:
                return super()._receive_headers_frame(frame)
            finally:
                self._admitting = False
        return super()._receive_headers_frame(frame)


class _Refusal:
    """A stream handler that answers a request the wire refuses with the JSON envelope
    (as the HTTP/1.1 server answers a `WireError`), without the pipeline."""

    __slots__ = ("message", "status")

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message

    async def __call__(self, ex: Exchange, out: UpgradableWriter) -> None:
        body = error_body(self.status, self.message, new_request_id(), time.time())
        out.send(ex, self.status, [("Content-Type", "application/json")], body)


class StreamBody:
    """One stream's request body: chunks as DATA arrives; the flow-control window is
    opened (`acknowledge_received_data`) only when the pipeline takes a chunk. Holds
    its `BodyBuffer` rather than extending it: `http1.body` is compiled with mypyc
    (docs/performance.md) and a compiled class cannot have a Python subclass."""

    __slots__ = ("_buffer", "_conn", "_stream_id", "_waiter", "expect_continue", "stalled_since")

    def __init__(self, conn: Http2Connection, stream_id: int, limit: int) -> None:
        self._buffer = BodyBuffer(limit=limit)
        self._conn = conn
        self._stream_id = stream_id
        self._waiter: asyncio.Future[None] | None = None
        #: The client sent `Expect: 100-continue`: a 100 goes out when the pipeline first reads.
        self.expect_continue = False
        #: Since when the pipeline has been waiting for bytes that do not come (the tick's mark).
        self.stalled_since = 0.0

    @property
    def complete(self) -> bool:
        """The whole body has arrived (`exchange.BodySource`)."""
        return self._buffer.done

    @property
    def done(self) -> bool:
        return self._buffer.done

    @property
    def error(self) -> BaseException | None:
        """Why the body cannot be completed (raised to the reader after the buffered chunks)."""
        return self._buffer.error

    @property
    def size(self) -> int:
        """Bytes buffered now (not yet taken by the pipeline)."""
        return self._buffer.size

    def clear(self) -> None:
        self._buffer.clear()

    def feed(self, data: bytes) -> None:
        self.stalled_since = 0.0
        buffer = self._buffer
        buffer.push(data)
        if buffer.over_budget:
            buffer.fail(BodyError(413, f"Request body exceeds {buffer.limit} bytes"))
        self._wake()

    def finish(self) -> None:
        self._buffer.finish()
        self._wake()

    def fail(self, error: BaseException) -> None:
        self._buffer.fail(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        buffer = self._buffer
        if self.expect_continue:
            self.expect_continue = False
            # RFC 9110 §10.1.1: no 100 once the body is arriving or has ended.
            if not buffer.received and not buffer.done and buffer.error is None:
                self._conn.send_continue(self._stream_id)
        while True:
            chunk, _ = buffer.pop()
            if chunk is not None:
                self._conn.consumed(self._stream_id, len(chunk))
                yield chunk
                continue
            if buffer.error is not None:
                raise buffer.error
            if buffer.done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class StreamWriter:
    """The response writer of one stream (`exchange.ResponseWriter`, and an
    `UpgradableWriter` that refuses to become a tunnel: HTTP/2 has no upgrades)."""

    __slots__ = ("_conn", "_drain_waiter", "blocked_since", "ended", "ex", "head_only", "pending", "reset",
                 "sent_end", "started", "stream_id", "task", "trailers")

    def __init__(self, conn: Http2Connection, stream_id: int, ex: Exchange) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.ex = ex
        self.pending = bytearray()
        self.started = False
        self.head_only = False
        #: The pipeline finished the response (the end goes out once `pending` is sent).
        self.ended = False
        self.sent_end = False
        #: The stream was reset (either side) or the connection is gone.
        self.reset = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.blocked_since = 0.0
        self.task: asyncio.Task[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    @property
    def date(self) -> str:
        return self._conn.server.date

    def _head(self, ex: Exchange, status: int, headers: list[tuple[str, str]], length: int | None,
              end: bool) -> None:
        if self.started or self.reset:
            return
        self.started = True
        ex.status = status
        fields = response_fields(status, headers, length)
        ex.sent_bytes += sum(len(k) + len(v) + 4 for k, v in fields)
        self._conn.send_headers(self, fields, end)

    def send(self, ex: Exchange, status: int, headers: list[tuple[str, str]], body: bytes,
             length: int | None = None) -> None:
        head_only = ex.method == "HEAD" or status in _HEAD_ONLY_STATUSES
        if head_only:
            self.head_only = True
            self._head(ex, status, headers, length if length is not None else len(body)
                       if ex.method == "HEAD" else None, True)
            self.ended = self.sent_end = True
            return
        # An empty body is the END_STREAM on the HEADERS frame: no Content-Length, so a
        # gRPC "trailers-only" answer (grpc-status in the only HEADERS) looks like one.
        self._head(ex, status, headers, len(body) if body else None, not body)
        if body:
            self.write(body)
            self.finish()
        else:
            self.ended = self.sent_end = True

    def start(self, ex: Exchange, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        self.head_only = ex.method == "HEAD" or status in _HEAD_ONLY_STATUSES
        self._head(ex, status, headers, length if status not in _HEAD_ONLY_STATUSES else None, self.head_only)
        if self.head_only:
            self.ended = self.sent_end = True

    def write(self, data: bytes) -> None:
        if not data or self.head_only or self.ended or self.reset:
            return
        self.pending += data
        self.ex.sent_bytes += len(data)
        self._conn.unsent += len(data)
        self._conn.want(self)

    def finish(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._conn.want(self)

    def finish_with_trailers(self, trailers: list[tuple[str, str]]) -> None:
        if self.ended:
            return
        fields = trailer_fields(trailers)
        if fields and not self.head_only:
            self.trailers = fields
        self.finish()

    async def drain(self) -> None:
        conn = self._conn
        while not self.reset and (len(self.pending) >= _LOW_WATER or not conn.writable
                                  or (conn.unsent > conn.unsent_budget and self.pending)):
            self._drain_waiter = self._conn.loop.create_future()
            if not self.blocked_since:
                self.blocked_since = self._conn.now
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        self.blocked_since = 0.0
        if self.reset:
            raise ConnectionResetError("the client reset the stream")

    def wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """The pipeline is done with this stream (after its answer): an answer not
        finished is cut; a finished one goes out whole."""
        if not self.ended:
            self.abort()

    def abort(self) -> None:
        self._conn.reset_stream(self, ErrorCodes.INTERNAL_ERROR if self.started else ErrorCodes.CANCEL)

    # -- tunnels: none on HTTP/2 (`Exchange.upgrade` is always False) --------------
    def tunnel_write(self, data: bytes) -> None:
        pass

    def tunnel_pause(self) -> None:
        pass

    def tunnel_resume(self) -> None:
        pass

    def start_tunnel(self, ex: Exchange, head: bytes, peer: asyncio.Transport) -> asyncio.Future[None]:
        peer.close()
        self.abort()
        done: asyncio.Future[None] = self._conn.loop.create_future()
        done.set_result(None)
        return done


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 client connection (server side)."""

    def __init__(self, server: HttpServer, handler: StreamHandler, limits: H2Limits, peer: str) -> None:
        self.server = server
        self.loop = server.loop
        self._handler = handler
        self._limits = limits
        self._max_body = server.limits.max_body_bytes
        self._peer = peer
        # Outbound fields are built by `rules.response_fields`/`trailer_fields` (lower-case
        # tokens, no connection-specific fields, no CR/LF/NUL): h2's second pass is skipped.
        config = H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True,
                                 normalize_inbound_headers=True, validate_outbound_headers=False,
                                 normalize_outbound_headers=False)
        self._h2 = _Server(config, limits.max_concurrent_streams)
        self._h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
            SettingCodes.ENABLE_PUSH: 0,
        })
        # Enforced from the first HEADERS frame, not only once the client acknowledged it.
        self._h2.decoder.max_header_list_size = limits.max_header_list_size
        self._meter = FrameMeter(limits)
        self._streams: dict[int, StreamWriter] = {}
        self._sending: dict[int, StreamWriter] = {}
        self._transport: asyncio.Transport | None = None
        self.writable = True
        self._reading_paused = False
        self._closing = False
        self._draining = False
        self._flush_scheduled = False
        #: Response bytes written by the pipeline and not yet sent (all streams); above the
        #: budget a stream's `drain` waits (as HTTP/1.1's connection budget).
        self.unsent = 0
        self.unsent_budget = server.limits.max_connection_buffer_bytes
        # Lingering close after an error GOAWAY: input is dropped until the client goes
        # quiet (`lingering_timeout_s`) or `lingering_time_s` passed (`tick`).
        self._lingering = False
        self._linger_heard = False
        self._linger_since = 0.0
        self._linger_heard_at = 0.0
        #: When the output (the GOAWAY, answers before it) was all written during a lingering
        #: close (0: still going out); the lingering timers count from then.
        self._linger_out = 0.0
        #: When a close that could not linger (TLS: no half-close) began (0: none).
        self._closed_at = 0.0
        #: The time of the last housekeeping tick (the budgets' clock).
        self.now = time.monotonic()
        self._idle_since = 0.0
        self._send_since = 0.0
        #: Streams served on this connection (the requests counter).
        self.streams_served = 0

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._h2.initiate_connection()
        extra = self._limits.connection_window_size - 65535
        if extra > 0:
            self._h2.increment_flow_control_window(extra)
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            self._linger_heard = True  # dropped; the tick ends a lingering close
            return
        verdict = self._meter.feed(data, self.now)
        if verdict is not None:
            self._calm(verdict)
            return
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:
            # h2 queued a GOAWAY with the right error code.
            log.debug("HTTP/2 protocol error from %s: %s", self._peer, exc)
            self._end_all()
            return
        for event in events:
            self._event(event)
            if self._closing:
                return
        self.flush()

    def eof_received(self) -> bool | None:
        # The client closed its side: asyncio closes the transport once the write buffer is
        # out. A client that does not take it is ended by the tick after the send timeout.
        if not self._closing:
            self._closing = True
            self._closed_at = self.now
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.writable = True
        self.server.forget(self)
        for stream in list(self._streams.values()):
            self._gone(stream)
        self._streams.clear()
        self._sending.clear()

    def pause_writing(self) -> None:
        self.writable = False
        # A client that does not take what was written gets nothing more (ACKs included).
        if not self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable = True
        self._send_since = 0.0
        if self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = False
            self._transport.resume_reading()
        self.flush()
        for stream in list(self._streams.values()):
            stream.wake()

    # -- events ------------------------------------------------------------------
    def _event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._request(event)
        elif isinstance(event, DataReceived):
            self._data(event)
        elif isinstance(event, StreamEnded):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None and isinstance(stream.ex.body, StreamBody):
                stream.ex.body.finish()
        elif isinstance(event, StreamReset):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None:
                stream.reset = True
                self._gone(stream)
            if not event.remote_reset:
                # h2 reset the stream for the client's error (DATA on a closed stream...): it
                # ends the stream's work like a client reset and spends the same budget
                # ("MadeYouReset"); client resets are counted from their frames.
                verdict = self._meter.stream_error(self.now)
                if verdict is not None:
                    self._calm(verdict)
        elif isinstance(event, (WindowUpdated, RemoteSettingsChanged)):
            pass  # flushed after the batch
        elif isinstance(event, ConnectionTerminated):
            # The client is going away: no new streams; close once the open ones ended.
            self._draining = True
            if not self._streams:
                self._close_now()

    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id or 0
        h2 = self._h2
        over_limit = stream_id in h2.over_limit
        if over_limit:
            h2.over_limit.discard(stream_id)
        last = h2.last_served
        if last is not None and stream_id > last:
            # Opened after a GOAWAY (the gateway's drain, or the client's own): never served, so
            # the drain ends. Each refusal spends the reset budget, so HEADERS spun into refusals
            # end the connection (a client racing the drain's GOAWAY has at most its in-flight
            # streams refused, far under the budget).
            self._reset_id(stream_id, ErrorCodes.REFUSED_STREAM)
            verdict = self._meter.stream_error(self.now)
            if verdict is not None:
                self._calm(verdict)
            return
        if over_limit:
            self._reset_id(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        try:
            head = request_head(cast(list[tuple[bytes, bytes]], event.headers or []), self._limits.max_headers,
                                event.stream_ended is not None)
        except MalformedRequest as exc:
            log.debug("malformed HTTP/2 request from %s: %s", self._peer, exc)
            self._reset_id(stream_id, ErrorCodes.PROTOCOL_ERROR)
            verdict = self._meter.stream_error(self.now)
            if verdict is not None:
                self._calm(verdict)
            return
        ended = event.stream_ended is not None
        ex = Exchange(head.method, head.target, "2", head.headers, head.lookup, self._peer, True, None,
                      head.content_length, False)
        ex.head_bytes = head.head_bytes
        stream = StreamWriter(self, stream_id, ex)
        if not ended:
            body = ex.body = StreamBody(self, stream_id, self._max_body)
            body.expect_continue = head.lookup.get("expect", "").lower() == "100-continue"
        self._streams[stream_id] = stream
        self._idle_since = 0.0
        self.streams_served += 1
        handler = self._handler
        max_url = self.server.limits.max_url_bytes
        if len(head.target) > max_url:
            # As the HTTP/1.1 reader's 414: no upstream, router or log gets a longer target.
            handler = _Refusal(414, f"The URL exceeds {max_url} bytes")
            self.server.rejected(414)  # counted as the HTTP/1.1 reader's refusals are
        stream.task = self.loop.create_task(self._serve(stream, handler))

    def _data(self, event: DataReceived) -> None:
        stream_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        data = event.data or b""
        stream = self._streams.get(stream_id)
        body = stream.ex.body if stream is not None else None
        if (not isinstance(body, StreamBody) or body.error is not None or stream is None or stream.reset
                or stream.task is None or stream.task.done()):
            # Nobody will read it (no stream, a broken body, the handler is done): the window
            # is given back now and nothing is buffered.
            self.consumed(stream_id, size)
            return
        padding = size - len(data)
        if padding:
            self.consumed(stream_id, padding)
        if data:
            body.feed(data)

    def consumed(self, stream_id: int, size: int) -> None:
        """`size` body bytes were read (or dropped): open the windows by as much."""
        if size <= 0 or self._closing:
            return
        try:
            self._h2.acknowledge_received_data(size, stream_id)
        except H2Error:
            # The stream is closed: its bytes still count for the connection window.
            with contextlib.suppress(H2Error):
                self._h2.increment_flow_control_window(size)
        self.flush()

    # -- serving -------------------------------------------------------------------
    async def _serve(self, stream: StreamWriter, handler: StreamHandler) -> None:
        ex = stream.ex
        try:
            await handler(ex, stream)
        except asyncio.CancelledError:
            pass  # the client reset the stream or left: the handler released what it held
        except Exception:
            log.exception("unhandled error in the request pipeline (HTTP/2)")
            if not stream.started and not stream.reset:
                # As on HTTP/1.1: the envelope when nothing was sent yet.
                body = error_body(500, "The gateway failed to handle the request",
                                  ex.request_id or new_request_id(), time.time())
                stream.send(ex, 500, [("Content-Type", "application/json")], body)
        finally:
            self._stream_done(stream)

    def _stream_done(self, stream: StreamWriter) -> None:
        """The handler returned: the stream must end whatever it did."""
        if not stream.reset and not stream.ended:
            self.reset_stream(stream, ErrorCodes.INTERNAL_ERROR if stream.started else ErrorCodes.CANCEL)
        body = stream.ex.body
        if isinstance(body, StreamBody) and not stream.reset:
            unread = body.size
            body.clear()
            self.consumed(stream.stream_id, unread)
        if stream.reset or stream.sent_end:
            self._forget(stream)
        self.flush()

    def _forget(self, stream: StreamWriter) -> None:
        self._streams.pop(stream.stream_id, None)
        self._sending.pop(stream.stream_id, None)
        if stream.sent_end and not stream.reset and isinstance(stream.ex.body, StreamBody) \
                and not stream.ex.body.done:
            # Answered before the request body ended: stop the client sending it (RFC 9113 §8.1).
            self._reset_id(stream.stream_id, ErrorCodes.NO_ERROR)
        if not self._streams:
            self._idle_since = 0.0
            if self._draining:
                self._close_now()

    def _gone(self, stream: StreamWriter) -> None:
        """The stream is over for the client: its handler is cancelled, a reader of its
        body gets ConnectionResetError, a `drain` raises."""
        stream.reset = True
        self._drop_pending(stream)
        body = stream.ex.body
        if isinstance(body, StreamBody):
            # Buffered bytes nobody will read: freed, and given back to the connection window.
            unread = body.size
            body.clear()
            body.fail(ConnectionResetError("the client reset the stream"))
            self.consumed(stream.stream_id, unread)
        stream.wake()
        self._sending.pop(stream.stream_id, None)
        task = stream.task
        if task is not None and not task.done():
            task.cancel()
        else:
            self._streams.pop(stream.stream_id, None)

    # -- writing -------------------------------------------------------------------
    def send_headers(self, stream: StreamWriter, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self._h2.send_headers(stream.stream_id, fields, end_stream=end)
        except H2Error as exc:
            log.debug("HTTP/2 stream %d: headers not sent: %s", stream.stream_id, exc)
            self.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
            return
        if end:
            stream.sent_end = True
        self.flush()

    def _drop_pending(self, stream: StreamWriter) -> None:
        """A reset stream's unsent bytes will never be sent: out of memory and the budget."""
        self.unsent -= len(stream.pending)
        stream.pending.clear()

    def send_continue(self, stream_id: int) -> None:
        """An interim 100 (Continue) on a stream whose client waits for it."""
        with contextlib.suppress(H2Error):
            self._h2.send_headers(stream_id, [(b":status", b"100")])
        self.flush()

    def reset_stream(self, stream: StreamWriter, code: ErrorCodes) -> None:
        if stream.reset:
            return
        stream.reset = True
        self._drop_pending(stream)
        self._reset_id(stream.stream_id, code)
        body = stream.ex.body
        if isinstance(body, StreamBody):
            unread = body.size
            body.clear()
            body.fail(ConnectionResetError("the stream was reset"))
            self.consumed(stream.stream_id, unread)
        stream.wake()
        self._sending.pop(stream.stream_id, None)
        task = stream.task
        if task is None or task.done():
            self._forget(stream)
        self.flush()

    def _reset_id(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(H2Error):
            self._h2.reset_stream(stream_id, code)
        self.flush()

    def want(self, stream: StreamWriter) -> None:
        """`stream` has bytes or its end to send."""
        self._sending[stream.stream_id] = stream
        self.flush()

    def flush(self) -> None:
        """Send what is due once this loop iteration is over: the frames of every
        stream written to meanwhile go out in one write (not one per frame)."""
        if not self._flush_scheduled and self._transport is not None and not self._closing:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        """Send what the windows allow, stream by stream, while the client takes it."""
        self._flush_scheduled = False
        if self._transport is None or self._closing:
            return
        h2 = self._h2
        pushed = 0
        for stream in list(self._sending.values()):
            if stream.reset or stream.sent_end:
                self._sending.pop(stream.stream_id, None)
                continue
            if not self.writable:
                break
            try:
                pushed += self._push(h2, stream)
            except H2Error as exc:
                log.debug("HTTP/2 stream %d: data not sent: %s", stream.stream_id, exc)
                self.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
            if stream.sent_end:
                self._sending.pop(stream.stream_id, None)
                if stream.task is None or stream.task.done():
                    self._forget(stream)
            if pushed > _LOW_WATER:
                # Out now: the transport says when the client stops taking it (pause_writing).
                self._send_now()
                pushed = 0
        self._send_now()

    def _push(self, h2: H2Connection, stream: StreamWriter) -> int:
        pending = stream.pending
        stream_id = stream.stream_id
        pushed = 0
        while pending:
            window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size, len(pending))
            if window <= 0:
                break
            h2.send_data(stream_id, bytes(pending[:window]))
            del pending[:window]
            pushed += window
        self.unsent -= pushed
        if len(pending) < _LOW_WATER:
            stream.wake()
            if pushed or not pending:
                stream.blocked_since = 0.0
        if pending and not stream.blocked_since:
            # Bytes the client's window holds back, whether or not a handler waits in
            # `drain` (a whole answer given to `send` has no handler left to wait): the
            # tick resets the stream once the client took nothing for the send timeout.
            stream.blocked_since = self.now
        if not pending and stream.ended and not stream.sent_end:
            if stream.trailers:
                h2.send_headers(stream_id, stream.trailers, end_stream=True)
            else:
                h2.end_stream(stream_id)
            stream.sent_end = True
        return pushed

    def _send_now(self) -> None:
        data = self._h2.data_to_send()
        transport = self._transport
        if data and transport is not None and not transport.is_closing() and not self._lingering:
            transport.write(data)

    # -- the end ----------------------------------------------------------------------
    def _calm(self, reason: str) -> None:
        """The client abuses the connection: GOAWAY ENHANCE_YOUR_CALM, every stream ends."""
        log.warning("HTTP/2 connection from %s closed: %s", self._peer, reason)
        with contextlib.suppress(H2Error):
            self._h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self._h2.last_served)
        self._end_all()

    def _end_all(self) -> None:
        self._send_now()
        self._closing = True
        for stream in list(self._streams.values()):
            self._gone(stream)
        transport = self._transport
        if transport is None:
            return
        if self.server.lingering_time_s > 0 and transport.can_write_eof() and not transport.is_closing():
            # A lingering close (as HTTP/1.1's): the client is still sending, and closing now
            # would reset the connection and destroy the GOAWAY before the client reads it.
            try:
                transport.write_eof()
            except OSError:  # the client reset the connection already: nothing to linger for
                transport.abort()
                return
            self._lingering = self._linger_heard = True
            self._linger_since = self._linger_heard_at = self.now
            self._linger_out = 0.0 if transport.get_write_buffer_size() else self.now
            self.server.lingering_closes += 1
            if self._reading_paused:
                self._reading_paused = False
                transport.resume_reading()
            return
        # close() waits for the write buffer: the tick aborts once the client has not taken it
        # within the send timeout (a client that stopped reading would hold the slot forever).
        self._closed_at = self.now
        transport.close()

    def _close_now(self) -> None:
        """GOAWAY NO_ERROR and a lingering close: a client's frames already in flight
        (a PING after its own GOAWAY, a request racing the idle timeout) must not make
        the kernel reset the connection before the client has read the GOAWAY."""
        # The last stream named: never above a GOAWAY already sent (RFC 9113 §6.8), never a
        # stream refused after a GOAWAY (h2's default is the highest stream id received).
        with contextlib.suppress(H2Error):
            self._h2.close_connection(ErrorCodes.NO_ERROR, last_stream_id=self._h2.last_served)
        self._end_all()

    def shutdown(self) -> None:
        """Drain: GOAWAY naming the last stream that will be served, let the open
        streams finish, then close (h2 cannot send on streams after its own GOAWAY,
        so the first GOAWAY is written here and h2's final one when the last ends)."""
        if self._lingering:
            if self._transport is not None:
                self._transport.close()
            return
        if self._draining or self._closing:
            if not self._streams:
                self._close_now()
            return
        self._draining = True
        last = self._h2.highest_inbound_stream_id
        self._h2.drain_last = last
        if not self._streams:
            self._close_now()
            return
        frame = GoAwayFrame(0)
        frame.last_stream_id = last
        frame.error_code = ErrorCodes.NO_ERROR
        self._send_now()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame.serialize())

    def _linger_tick(self, now: float) -> None:
        """As HTTP/1.1's lingering close: the output still going out must be taken within
        the send timeout (else abort: close() would wait for it forever); once it is out,
        the lingering time and the client's silence end the connection."""
        transport = self._transport
        if transport is None:
            return
        server = self.server
        if self._linger_heard:
            self._linger_heard = False
            self._linger_heard_at = now
        if not self._linger_out:
            if transport.get_write_buffer_size():
                if now - self._linger_since > server.send_timeout_s:
                    transport.abort()
                return
            self._linger_out = self._linger_heard_at = now
        if transport.is_closing():
            return
        if now - self._linger_out > server.lingering_time_s or now - self._linger_heard_at > server.lingering_timeout_s:
            transport.close()

    def _closed_tick(self, now: float) -> None:
        """A close without lingering waits for its write buffer: bounded by the send timeout."""
        transport = self._transport
        if transport is not None and self._closed_at and now - self._closed_at > self.server.send_timeout_s:
            transport.abort()

    def kill(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def abort(self) -> None:
        self.kill()

    def tick(self, now: float, header_timeout_s: float, idle_timeout_s: float) -> None:
        """The connection's timeouts (the server's housekeeping tick): a header block
        left open, a client that takes nothing, streams stalled on their windows, idle."""
        self.now = now
        if self._lingering:
            self._linger_tick(now)
            return
        if self._closing:
            self._closed_tick(now)
            return
        if self._transport is None:
            return
        send_timeout = self.server.send_timeout_s
        since = self._meter.block_since
        if since is not None and now - since > header_timeout_s:
            self._calm(f"a header block stayed open over {header_timeout_s:g} s")
            return
        if self.writable:
            self._send_since = 0.0
        elif not self._send_since:
            self._send_since = now
        elif now - self._send_since > send_timeout:
            self.kill()
            return
        self._stream_timeouts(now, send_timeout, self.server.body_timeout_s)
        if self._streams:
            self._idle_since = 0.0
        elif not self._idle_since:
            self._idle_since = now
        elif now - self._idle_since > idle_timeout_s:
            self._close_now()

    def _stream_timeouts(self, now: float, send_timeout: float, body_timeout: float) -> None:
        """Streams stalled on the client's window (reset) or on its body (408)."""
        for stream in list(self._streams.values()):
            if stream.blocked_since and now - stream.blocked_since > send_timeout:
                # The client never opened its window: the stream is freed.
                self.reset_stream(stream, ErrorCodes.CANCEL)
                continue
            body = stream.ex.body
            if isinstance(body, StreamBody) and not body.done and body.error is None and not body.size:
                # Nothing buffered, so the window is open: the client is the one not sending.
                if not body.stalled_since:
                    body.stalled_since = now
                elif now - body.stalled_since > body_timeout:
                    body.fail(BodyError(408, f"The request body did not arrive within {body_timeout:g} s"))
            elif isinstance(body, StreamBody):
                body.stalled_since = 0.0

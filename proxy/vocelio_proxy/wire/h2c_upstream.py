"""The upstream HTTP/2 client over cleartext with prior knowledge (h2c), for
services that declare `upstream_protocol: h2c` (gRPC): a pool of a few
connections per endpoint, each multiplexing many streams, on the `h2`
library's sans-I/O state machine.

What it guarantees, whatever the upstream sends:

* bounded: at most `H2cLimits.connections_per_endpoint` connections per
  endpoint and `streams_per_connection` streams on each (the peer's own
  SETTINGS_MAX_CONCURRENT_STREAMS lowers it); a request that finds no free
  stream waits for one within its connect budget, then fails as `connect`;
* memory: a response body is read ahead only as far as the stream's
  flow-control window (bytes are acknowledged to the upstream as the gateway
  hands them on, so a slow client holds the upstream back, never the
  gateway's memory); the connection window covers every stream's window, so
  one stalled stream never blocks the others; header blocks are capped
  (`max_header_list_size`, h2's CONTINUATION backlog) and control frames an
  upstream makes the gateway answer while not reading are capped by
  `_MAX_UNREAD_OUTPUT` (the connection is dropped beyond it);
* failures: an upstream that breaks the protocol, goes away or resets the
  connection fails that connection's streams only, each with an
  `upstream.UpstreamError` (reset, protocol) that the pipeline records like
  an HTTP/1.1 upstream failure; a GOAWAY fails only the streams it did not
  process (and no new stream is opened on that connection);
* cancellation: `H2cStream.reset` sends RST_STREAM(CANCEL) for a stream the
  client gave up on and frees its slot and its unread window.

Deadlines are the caller's (`asyncio.timeout` around `response` and each body
read, as the pipeline does); the connect has its own. Hop-by-hop fields never
reach the upstream (`request_headers`); `te: trailers` is kept.

Owned by the proxy application (one `H2cPool` per process, closed on shutdown);
used by `pipeline.h2c_forwarding` and the active health checker."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from vocelio_proxy.wire.http2.hpack_bounds import BoundedEncoder
from vocelio_proxy.wire.upstream import UpstreamError

__all__ = ["H2cConnection", "H2cLimits", "H2cPool", "H2cStream", "request_headers"]

#: Control-frame bytes (SETTINGS/PING acks, RST_STREAM, WINDOW_UPDATE) the gateway
#: may owe an upstream that does not read them before the connection is dropped.
_MAX_UNREAD_OUTPUT = 1024 * 1024
#: Connection-specific fields (RFC 9113 8.2.2) and the gateway's own
#: hop-by-hop list: never forwarded on HTTP/2.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host",
    "http2-settings", "proxy-authenticate", "proxy-authorization",
})


@dataclass(frozen=True, slots=True)
class H2cLimits:
    """Bounds of the h2c pool (settings of the proxy; defaults as Envoy's order of size)."""

    connections_per_endpoint: int = 4
    streams_per_connection: int = 128
    #: Receive window per stream: the most response bytes the gateway holds per stream.
    stream_window: int = 256 * 1024
    max_header_list_size: int = 64 * 1024
    idle_timeout_s: float = 60.0


def request_headers(method: str, scheme: str, authority: str, path: str,
                    headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 request header block: pseudo-fields first, then `headers` with
    connection-specific fields and names listed in `Connection` dropped, names
    lower-cased (HTTP/2 requires it) and `te` kept only as `trailers`."""
    listed = {name.strip().lower() for k, v in headers if k.lower() == "connection" for name in v.split(",")}
    block = [(b":method", method.encode("latin-1")), (b":scheme", scheme.encode("latin-1")),
             (b":authority", authority.encode("latin-1")), (b":path", path.encode("latin-1"))]
    te_trailers = False
    for name, value in headers:
        lower = name.lower()
        if lower == "te":
            te_trailers = te_trailers or "trailers" in {t.strip().lower() for t in value.split(",")}
            continue
        if lower in _HOP_BY_HOP or lower in listed or lower.startswith(":"):
            continue
        block.append((lower.encode("latin-1"), value.encode("latin-1")))
    if te_trailers:
        block.append((b"te", b"trailers"))
    return block


def _error_code(code: int) -> h2.errors.ErrorCodes | int:
    try:
        return h2.errors.ErrorCodes(code)
    except ValueError:
        return code


def _decoded(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class _ClientConnection(h2.connection.H2Connection):
    """h2's client state machine, except that a GOAWAY leaves the state machine
    open: after a graceful one (NO_ERROR) the upstream still serves the streams up
    to `last_stream_id` (RFC 9113 6.8; gRPC servers drain like that), which h2
    would refuse as frames on a closed connection; after an error one, the frames
    that came with it in the same read must not turn a reset into a protocol
    error. `H2cConnection` decides what the GOAWAY ends (no new stream either way)."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        # The upstream's SETTINGS_HEADER_TABLE_SIZE never grows the encoder's table past 4 KiB.
        self.encoder = BoundedEncoder()

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        event = h2.events.ConnectionTerminated()
        event.error_code = _error_code(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class H2cStream:
    """One request/response exchange on an `H2cConnection`."""

    def __init__(self, conn: H2cConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        loop = asyncio.get_running_loop()
        self._response: asyncio.Future[tuple[int, list[tuple[str, str]]]] = loop.create_future()
        self._chunks: deque[tuple[bytes, int]] = deque()
        #: Flow-controlled bytes received and not yet handed on (acknowledged when they are).
        self.buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._window: asyncio.Event = asyncio.Event()
        self._window.set()
        self.ended = False
        self.error: UpstreamError | None = None
        #: The upstream's trailer fields (None until they arrive; gRPC's grpc-status).
        self.trailers: list[tuple[str, str]] | None = None
        self.request_ended = False
        self.released = False
        self.response_started = False

    @property
    def key(self) -> str:
        return self._conn.key

    @property
    def connection(self) -> H2cConnection:
        return self._conn

    # -- events from the connection ------------------------------------------------
    def _on_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.response_started = True
        if not self._response.done():
            self._response.set_result((status, headers))

    def _on_data(self, data: bytes, flow: int) -> None:
        self._chunks.append((data, flow))
        self.buffered += flow
        self._wake()

    def _on_end(self) -> None:
        self.ended = True
        if not self._response.done():
            self._fail(UpstreamError("protocol", "upstream ended the stream without a response"))
            return
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        if not self._response.done():
            self._response.set_exception(error)
            self._response.exception()  # seen: an abandoned request must not warn
        self._window.set()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the caller's side ------------------------------------------------------------
    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send request body bytes as the upstream's flow control allows (waits for
        window and for the socket to take bytes; the caller bounds the wait)."""
        view = memoryview(data)
        while view:
            if self.error is not None:
                raise self.error
            allowed = self._conn.send_window(self.stream_id)
            if allowed <= 0:
                self._window.clear()
                await self._window.wait()
                continue
            size = min(allowed, len(view))
            self._conn.send_data(self.stream_id, bytes(view[:size]), end_stream and size == len(view))
            view = view[size:]
            await self._conn.writable()
        if end_stream:
            if not data:
                self._conn.end_stream(self.stream_id)
            self.request_ended = True

    def end_request(self) -> None:
        """End the request body (an empty DATA frame with END_STREAM)."""
        if self.error is not None:
            raise self.error
        if not self.request_ended:
            self.request_ended = True
            self._conn.end_stream(self.stream_id)

    async def response(self) -> tuple[int, list[tuple[str, str]]]:
        """The response status and header fields (interim answers skipped)."""
        return await self._response

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The response body as it arrives; bytes are acknowledged to the upstream
        when the consumer asks for more. Ends at END_STREAM; raises the stream's
        `UpstreamError` when it was cut. The caller bounds each wait."""
        while True:
            if self._chunks:
                data, flow = self._chunks.popleft()
                yield data
                self.buffered -= flow
                self._conn.acknowledge(self.stream_id, flow)
                continue
            if self.error is not None:
                raise self.error
            if self.ended:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def reset(self) -> None:
        """Give up on the stream: RST_STREAM(CANCEL) unless it already ended both
        ways, then release it."""
        if not self.released and self.error is None and not (self.ended and self.request_ended):
            self._conn.reset_stream(self.stream_id)
        self.release()

    def release(self) -> None:
        """Free the stream's slot (and the window of bytes never handed on)."""
        if self.released:
            return
        if not (self.ended and self.request_ended) and self.error is None:
            # Not finished both ways: the upstream must hear that the gateway is done.
            self._conn.reset_stream(self.stream_id)
        self.released = True
        if self.buffered:
            self._conn.acknowledge(self.stream_id, self.buffered)
            self.buffered = 0
        self._chunks.clear()
        self._conn.stream_released(self)


class H2cConnection(asyncio.Protocol):
    """One h2c connection to an endpoint, carrying up to `capacity` streams."""

    def __init__(self, pool: H2cPool, key: str) -> None:
        self._pool = pool
        self.key = key
        self._limits = pool.limits
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                           validate_inbound_headers=True, normalize_inbound_headers=True)
        self._h2 = _ClientConnection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2cStream] = {}
        self.closed = False
        self.going_away = False
        self.idle_since = time.monotonic()
        self.reserved = 0
        self._writable = asyncio.Event()
        self._writable.set()

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limits = self._limits
        self._h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
        })
        # h2 takes initial values as already in force (no ACK changes them), so the
        # decoder's bound is set here: the limit is enforced from the first header block.
        self._h2.decoder.max_header_list_size = limits.max_header_list_size
        self._h2.initiate_connection()
        # The connection window holds every stream's window: a stream whose client
        # reads slowly keeps its own bytes, never the other streams' room.
        extra = limits.stream_window * limits.streams_per_connection - 65_535
        if extra > 0:
            self._h2.increment_flow_control_window(min(extra, 2**31 - 1 - 65_535))
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY; send it, then fail this connection's streams only.
            self._flush()
            self._fail_all(UpstreamError("protocol", f"upstream broke HTTP/2: {type(exc).__name__}: {exc}",
                                         response_started=True))
            return
        for event in events:
            self._on_event(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(UpstreamError("reset", "upstream closed the connection" + (f": {exc}" if exc else ""),
                                     response_started=True))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- h2 events ---------------------------------------------------------------------
    def _on_event(self, event: h2.events.Event) -> None:  # noqa: C901 - one dispatch table
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                headers = _decoded(event.headers or [])
                status = 0
                for name, value in headers:
                    if name == ":status":
                        status = int(value) if value.isdigit() else 0
                stream._on_response(status, [(k, v) for k, v in headers if not k.startswith(":")])
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            flow = event.flow_controlled_length or 0
            if stream is None or stream.released:
                self._h2.acknowledge_received_data(flow, event.stream_id)
            else:
                stream._on_data(event.data or b"", flow)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.trailers = _decoded(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._on_end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                code = event.error_code
                name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
                stream._fail(UpstreamError("reset", f"upstream reset the stream ({name})",
                                           response_started=stream.response_started))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.going_away = True
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id, stream in list(self.streams.items()):
                if stream_id > last:
                    # Never processed by the upstream (RFC 9113 6.8).
                    stream._fail(UpstreamError("reset", "upstream went away before the stream was processed"))
            if event.error_code not in (None, h2.errors.ErrorCodes.NO_ERROR):
                self._fail_all(UpstreamError("reset", "upstream closed the connection with an error",
                                             response_started=True))
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            for stream in self.streams.values():
                stream._window.set()

    # -- what streams call --------------------------------------------------------------
    def send_window(self, stream_id: int) -> int:
        if self.closed:
            return 0
        try:
            return min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
        except (h2.exceptions.ProtocolError, KeyError):
            return 0

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        try:
            self._h2.send_data(stream_id, data, end_stream=end_stream)
        except h2.exceptions.StreamClosedError as exc:
            raise UpstreamError("reset", "upstream closed the stream while the body was being sent") from exc
        except h2.exceptions.ProtocolError as exc:
            raise UpstreamError("reset", f"the upstream stream cannot take the body: {exc}") from exc
        self._flush()

    def end_stream(self, stream_id: int) -> None:
        try:
            self._h2.end_stream(stream_id)
        except h2.exceptions.StreamClosedError as exc:
            raise UpstreamError("reset", "upstream closed the stream before the body ended") from exc
        except h2.exceptions.ProtocolError as exc:
            raise UpstreamError("reset", f"the upstream stream cannot be ended: {exc}") from exc
        self._flush()

    async def writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def acknowledge(self, stream_id: int, size: int) -> None:
        if self.closed or size <= 0:
            return
        try:
            self._h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        self._flush()

    def reset_stream(self, stream_id: int) -> None:
        if self.closed:
            return
        try:
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            return
        self._flush()

    def stream_released(self, stream: H2cStream) -> None:
        self.streams.pop(stream.stream_id, None)
        if not self.streams:
            self.idle_since = time.monotonic()
            if self.going_away:
                self.close()
        self._pool._stream_freed(self)

    # -- the pool's side ------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        remote = self._h2.remote_settings.max_concurrent_streams
        return min(self._limits.streams_per_connection, remote)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.going_away and self.transport is not None

    def has_room(self) -> bool:
        return self.usable and len(self.streams) + self.reserved < self.capacity

    def open_stream(self, block: list[tuple[bytes, bytes]], end_stream: bool) -> H2cStream:
        """Start a stream with the request header block `block`."""
        if not self.usable:
            raise UpstreamError("reset", "upstream connection closed before the stream opened")
        stream_id = self._h2.get_next_available_stream_id()
        stream = H2cStream(self, stream_id)
        self.streams[stream_id] = stream
        try:
            self._h2.send_headers(stream_id, block, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            self.streams.pop(stream_id, None)
            raise UpstreamError("protocol", f"the request cannot be sent over HTTP/2: {exc}") from exc
        stream.request_ended = end_stream
        self._flush()
        return stream

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        transport = self.transport
        if not data or transport is None or self.closed:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > _MAX_UNREAD_OUTPUT:
            # An upstream that makes the gateway answer (pings, settings, resets) but
            # never reads: its connection goes, with its streams.
            self._fail_all(UpstreamError("protocol", "upstream stopped reading the connection",
                                         response_started=True))

    def _fail_all(self, error: UpstreamError) -> None:
        if self.closed:
            return
        self.closed = True
        self._writable.set()
        for stream in list(self.streams.values()):
            stream._fail(error)
        if self.transport is not None:
            self.transport.abort()
        self._pool._connection_gone(self)

    def close(self) -> None:
        """Close the connection (shutdown, idle sweep): GOAWAY, then drop it."""
        if self.closed:
            return
        try:
            self._h2.close_connection()
            if self.transport is not None:
                self.transport.write(self._h2.data_to_send())
        except h2.exceptions.ProtocolError:
            pass
        self._fail_all(UpstreamError("reset", "the gateway closed the upstream connection", response_started=True))


class H2cPool:
    """h2c connections per endpoint key (`address:port`), bounded, shared by streams."""

    def __init__(self, limits: H2cLimits | None = None) -> None:
        self.limits = limits or H2cLimits()
        self._conns: dict[str, list[H2cConnection]] = {}
        self._connecting: dict[str, int] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self.created = 0

    def _pick(self, key: str) -> H2cConnection | None:
        best = None
        for conn in self._conns.get(key, ()):
            if conn.has_room() and (best is None or len(conn.streams) < len(best.streams)):
                best = conn
        return best

    async def open_stream(self, host: str, port: int, block: list[tuple[bytes, bytes]], end_stream: bool,
                          connect_timeout_s: float) -> H2cStream:
        """Open a stream to `host:port` carrying the header block `block`: on a
        connection with room, on a new one while the endpoint has fewer than the
        bound, or on the first to free a slot within `connect_timeout_s`."""
        key = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout_s
        while True:
            conn = self._pick(key)
            if conn is not None:
                return conn.open_stream(block, end_stream)
            count = len(self._conns.get(key, ())) + self._connecting.get(key, 0)
            if count < self.limits.connections_per_endpoint:
                conn = await self._connect(key, host, port, deadline - loop.time())
                if conn.has_room():
                    return conn.open_stream(block, end_stream)
                continue
            left = deadline - loop.time()
            if left <= 0:
                raise UpstreamError("connect", f"no free stream to {key} (every connection is at its limit)")
            waiter = loop.create_future()
            queue = self._waiters.setdefault(key, deque())
            queue.append(waiter)
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                raise UpstreamError("connect", f"no free stream to {key} in time "
                                               "(every connection is at its limit)") from None
            finally:
                if waiter in queue:
                    queue.remove(waiter)
                if not queue:
                    self._waiters.pop(key, None)

    async def _connect(self, key: str, host: str, port: int, timeout_s: float) -> H2cConnection:
        loop = asyncio.get_running_loop()
        self._connecting[key] = self._connecting.get(key, 0) + 1
        try:
            async with asyncio.timeout(max(timeout_s, 0.001)):
                _, protocol = await loop.create_connection(lambda: H2cConnection(self, key), host, port)
        except TimeoutError as exc:
            raise UpstreamError("connect", f"connect to {key} timed out", timed_out=True) from exc
        except OSError as exc:
            raise UpstreamError("connect", f"connect to {key} failed: {exc.strerror or exc}") from exc
        finally:
            left = self._connecting[key] - 1
            if left:
                self._connecting[key] = left
            else:
                del self._connecting[key]
        self.created += 1
        if not protocol.closed:
            self._conns.setdefault(key, []).append(protocol)
        return protocol

    def _stream_freed(self, conn: H2cConnection) -> None:
        queue = self._waiters.get(conn.key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _connection_gone(self, conn: H2cConnection) -> None:
        conns = self._conns.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[conn.key]
        # A waiter may now open a connection of its own.
        self._stream_freed(conn)

    def sweep(self) -> int:
        """Close connections with no stream for longer than the idle timeout; returns how many."""
        now = time.monotonic()
        stale = [conn for conns in self._conns.values() for conn in conns
                 if not conn.streams and now - conn.idle_since >= self.limits.idle_timeout_s]
        for conn in stale:
            conn.close()
        return len(stale)

    def connection_count(self, key: str | None = None) -> int:
        if key is not None:
            return len(self._conns.get(key, ()))
        return sum(len(conns) for conns in self._conns.values())

    def stream_count(self) -> int:
        return sum(len(conn.streams) for conns in self._conns.values() for conn in conns)

    def open_streams(self) -> list[H2cStream]:
        """Every stream open now (for status and tests)."""
        return [stream for conns in self._conns.values() for conn in conns for stream in conn.streams.values()]

    def close(self) -> None:
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.close()
        self._conns.clear()

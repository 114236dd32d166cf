"""The upstream side of a protocol upgrade (WebSocket and any other `Upgrade`):
sends the upgrade request on a fresh connection, reads the answer, and after a
101 relays raw bytes to the client's connection with back-pressure both ways.
The gateway does not parse frames: like Envoy and nginx it joins two byte
streams once both sides agreed to switch. Used by `proxying` for upgrade
requests; the client side is `server.HttpConnection.start_tunnel`.

A tunnel obeys an idle timeout: bytes either way are activity (upstream to
client are seen here in `data_received`; client to upstream through
`ActivityTransport`, the upstream transport as the client side is handed it);
with no activity for `idle_timeout_s` both sides are closed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools

from .upstream import UpstreamError

if TYPE_CHECKING:
    from .server import HttpConnection

_MAX_REFUSAL_BODY = 64 * 1024


class UpgradeAnswer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class UpgradeUpstream(asyncio.Protocol):
    """One upstream connection carrying an upgrade request, then the tunnel."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[UpgradeAnswer] = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._status = 0
        self._switched = False
        self._pending: list[bytes] = []
        self._client: HttpConnection | None = None
        # The idle timer: one lazily re-armed handle per tunnel, moved only when it fires.
        self._loop = asyncio.get_running_loop()
        self._last_activity = 0.0
        self._idle_timeout_s = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        #: True once the tunnel was closed for being idle.
        self.idle_closed = False

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._client is not None:
            self._last_activity = self._loop.time()
            self._client.tunnel_write(data)
            return
        if self._switched:
            self._pending.append(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[exc.args[0]:]
            if rest:
                self._pending.append(rest)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("protocol", f"invalid upstream answer to an upgrade: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_idle_timer()
        if self._client is not None:
            self._client.close()
            return
        if self._status and not self._switched and not self.answer.done():
            # A close-delimited refusal.
            self.answer.set_result(UpgradeAnswer(self._status, self._headers, b"".join(self._body)))
            return
        self._fail(UpstreamError("reset", "upstream closed the connection during the upgrade"))

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.tunnel_pause()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.tunnel_resume()

    # -- httptools callbacks ------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._headers = []
            return
        self._status = status
        if status == 101:
            self._switched = True
            if not self.answer.done():
                self.answer.set_result(UpgradeAnswer(101, self._headers, b""))

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes <= _MAX_REFUSAL_BODY:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status and not self._switched and not self.answer.done():
            self.answer.set_result(UpgradeAnswer(self._status, self._headers, b"".join(self._body)))

    # -- the tunnel ---------------------------------------------------------------
    def _fail(self, error: UpstreamError) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)
            self.answer.exception()  # read by the awaiting handler, or by nobody after a cancel
        if self.transport is not None:
            self.transport.abort()

    def attach(self, client: HttpConnection) -> None:
        """Start relaying upstream bytes to the client (after the 101 head was written)."""
        self._client = client
        for chunk in self._pending:
            client.tunnel_write(chunk)
        self._pending.clear()

    def client_side(self, idle_timeout_s: float) -> ActivityTransport:
        """The upstream transport to hand to the client side of the tunnel (its writes
        count as activity), with the idle timer started."""
        assert self.transport is not None
        self._idle_timeout_s = idle_timeout_s
        self.mark_activity()
        self._idle_timer = self._loop.call_at(self._last_activity + idle_timeout_s, self._check_idle)
        return ActivityTransport(self.transport, self)

    def mark_activity(self) -> None:
        self._last_activity = self._loop.time()

    def stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _check_idle(self) -> None:
        self._idle_timer = None
        due = self._last_activity + self._idle_timeout_s
        if self._loop.time() < due:
            self._idle_timer = self._loop.call_at(due, self._check_idle)
            return
        self.idle_closed = True
        # Abort both sides: a graceful close would wait on a peer that has stopped reading.
        client = self._client
        if client is not None:
            client.abort()
        if self.transport is not None:
            self.transport.abort()


class ActivityTransport(asyncio.Transport):
    """The upstream transport of a tunnel as the client side sees it: every write is
    tunnel activity (resets the idle timer); everything else is passed through."""

    def __init__(self, inner: asyncio.Transport, tunnel: UpgradeUpstream) -> None:
        super().__init__()
        self._inner = inner
        self._tunnel = tunnel

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self._tunnel.mark_activity()
        self._inner.write(data)

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()


async def open_upgrade(host: str, port: int, head: bytes, connect_timeout_s: float,
                       answer_timeout_s: float) -> tuple[asyncio.Transport, UpgradeUpstream, UpgradeAnswer]:
    """Connect, send the upgrade request head and wait for the upstream's answer."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout_s):
            transport, protocol = await loop.create_connection(UpgradeUpstream, host, port)
    except TimeoutError as exc:
        raise UpstreamError("connect", f"connect to {host}:{port} timed out") from exc
    except OSError as exc:
        raise UpstreamError("connect", f"connect to {host}:{port} failed: {exc.strerror or exc}") from exc
    transport.write(head)
    try:
        async with asyncio.timeout(answer_timeout_s):
            answer = await protocol.answer
    except TimeoutError as exc:
        transport.abort()
        raise UpstreamError("timeout", "upstream did not answer the upgrade in time") from exc
    except BaseException:
        transport.abort()
        raise
    return transport, protocol, answer

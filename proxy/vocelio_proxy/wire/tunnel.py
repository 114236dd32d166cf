"""The upstream side of a protocol upgrade (WebSocket and any other `Upgrade`):
sends the upgrade request on a fresh connection, reads the answer, and after a
101 relays raw bytes to the client's connection with back-pressure both ways.
The gateway does not parse frames: like Envoy and nginx it joins two byte
streams once both sides agreed to switch. Used by `proxying` for upgrade
requests; the client side is `server.HttpConnection.start_tunnel` (a `TunnelClient`).

The answer to the upgrade request is read by the same rules as every upstream
answer (`http1.answers.UpstreamHeadReader`, `http1.framing.upstream_body_framing`):
a head over the upstream limits, with both Content-Length and
Transfer-Encoding, several Content-Lengths, a status outside 100-599, an
interim answer announcing a body, or invalid syntax is a 502. A refusal (any
final answer but 101) is relayed with its whole body when that body fits
`UPGRADE_REFUSAL_MAX_BODY`; a larger or truncated one is a 502, never a shorter
body that looks complete.

A tunnel obeys an idle timeout: bytes either way are activity (upstream to
client are seen here in `data_received`; client to upstream through
`ActivityTransport`, the upstream transport as the client side is handed it);
with no activity for `idle_timeout_s` both sides are closed."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httptools

from vocelio_proxy.wire.exchange import Exchange, ResponseWriter, TunnelClient
from vocelio_proxy.wire.http1.answers import UpstreamHeadReader
from vocelio_proxy.wire.http1.framing import (
    BY_LENGTH,
    NO_BODY,
    UNTIL_CLOSE,
    WireError,
    parse_content_length,
    upstream_body_framing,
)
from vocelio_proxy.wire.http1.limits import UPGRADE_REFUSAL_MAX_BODY
from vocelio_proxy.wire.upstream import UpstreamError


class UpgradableWriter(ResponseWriter, Protocol):
    """A `ResponseWriter` that can hand its connection over to a tunnel: writes the
    101 `head`, then relays raw bytes between the client and `peer` (the upstream
    side) until either closes (`server.HttpConnection`)."""

    def start_tunnel(self, ex: Exchange, head: bytes, peer: asyncio.Transport) -> asyncio.Future[None]: ...


class UpgradeAnswer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class UpgradeUpstream(asyncio.Protocol):
    """One upstream connection carrying an upgrade request, then the tunnel.
    `head_request`: the upgrade request's method is HEAD (its refusal has no body)."""

    def __init__(self, head_request: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[UpgradeAnswer] = asyncio.get_running_loop().create_future()
        # The answer head's fields and limits (the rules of every upstream answer).
        self._head_reader = UpstreamHeadReader()
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = head_request
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._status = 0
        # How the refusal's body is delimited (http1.framing), once its head is read.
        self._framing = NO_BODY
        self._switched = False
        self._pending: list[bytes] = []
        self._client: TunnelClient | None = None
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
            if not self._head_reader.in_body:
                # The head is still incomplete after this read: bound what llhttp buffers.
                self._head_reader.head_read(len(data))
        except WireError as exc:
            self._fail(UpstreamError("protocol", f"invalid upstream answer to an upgrade: {exc.message}"))
        except httptools.HttpParserUpgrade as exc:
            rest = data[exc.args[0]:]
            if rest:
                self._pending.append(rest)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            reason = cause.message if isinstance(cause, WireError) else str(exc)
            self._fail(UpstreamError("protocol", f"invalid upstream answer to an upgrade: {reason}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_idle_timer()
        if self._client is not None:
            self._client.close()
            return
        if self._status and not self._switched and self._framing == UNTIL_CLOSE and not self.answer.done():
            # A close-delimited refusal ends here; any other cut short is not relayed.
            self._answer_refusal()
            return
        self._fail(UpstreamError("reset", "upstream closed the connection during the upgrade"))

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.tunnel_pause()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.tunnel_resume()

    # -- httptools callbacks ---------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_reader.on_header(name, value)

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        fields = self._head_reader.fields
        # The rules of every upstream answer (raises WireError: a 502).
        kind, _ = upstream_body_framing(status, self._head_request, parser.get_http_version, fields)
        self._head_reader.in_body = True
        if 100 <= status < 200 and status != 101:
            return  # interim: the final head comes next (on_message_complete starts it)
        self._status = status
        self._framing = kind
        if status == 101:
            self._switched = True
            if not self.answer.done():
                self.answer.set_result(UpgradeAnswer(101, fields, b""))
            return
        if kind == BY_LENGTH:
            for name, value in fields:
                if name.lower() == "content-length" and parse_content_length(value) > UPGRADE_REFUSAL_MAX_BODY:
                    raise WireError(502, "upstream refusal of an upgrade with a body over the relay limit")
        elif kind == NO_BODY and self._head_request:
            # llhttp cannot be told the request was HEAD: the answer is complete now.
            self._answer_refusal()

    def on_body(self, body: bytes) -> None:
        if self.answer.done():
            return
        self._body_bytes += len(body)
        if self._body_bytes > UPGRADE_REFUSAL_MAX_BODY:
            raise WireError(502, "upstream refusal of an upgrade with a body over the relay limit")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._status:
            self._head_reader.start_head(interim=True)  # after an interim answer
            return
        if not self._switched and not self.answer.done():
            self._answer_refusal()

    def _answer_refusal(self) -> None:
        if not self.answer.done():  # (or abandoned: the answer timed out)
            self.answer.set_result(UpgradeAnswer(self._status, self._head_reader.fields, b"".join(self._body)))

    # -- the tunnel ---------------------------------------------------------------
    def _fail(self, error: UpstreamError) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)
            self.answer.exception()  # read by the awaiting handler, or by nobody after a cancel
        if self.transport is not None:
            self.transport.abort()

    def attach(self, client: TunnelClient) -> None:
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
            transport, protocol = await loop.create_connection(
                lambda: UpgradeUpstream(head.startswith(b"HEAD ")), host, port)
    except TimeoutError as exc:
        raise UpstreamError("connect", f"connect to {host}:{port} timed out", timed_out=True) from exc
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

"""Red-team tests of how the gateway's HTTP/2 connections end: the client's GOAWAY
(the connection drains), the lingering close that every close now is, and the
server's drain meeting both. Each attack is followed by a count of what it could
hold: the connection's slot (`HttpServer.connections`), file descriptors, the
pipeline's in-flight gauge, endpoint in-flight counts (`hostile.settled`)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hpack import Encoder
from hyperframe.frame import DataFrame, GoAwayFrame, PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, poll, service
from tests.harness.h2_tools import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RawH2,
    tls_contexts,
)
from tests.harness.hostile import Resources, resources, settled
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.settings import Http2Settings, LimitSettings
from vocelio_proxy.wire.http2.connection import Http2Connection
from vocelio_proxy.wire.server import HttpServer

KiB = 1024
#: The client's windows: the gateway's output is never held back by flow control, only by TCP.
_WIDE = 8 << 20


async def _gone_and_settled(gw: Gateway, before: Resources) -> None:
    """The connection is gone and every counter is back where it was (fds, in-flight, slots)."""
    await poll(lambda: not gw.server.connections, "the connection is gone")
    await settled(gw.app, before)


class Upstream:
    """/api/big?n=N answers N bytes; /api/slow answers once released; anything else reads the body, "ok"."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.paths: list[str] = []
        #: Body sizes of the requests answered "ok".
        self.uploaded: list[int] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.path.startswith("/api/big"):
            return web.Response(body=b"b" * int(request.query.get("n", "1024")))
        if request.path.startswith("/api/slow"):
            self.started += 1
            await self.release.wait()
            return web.Response(text="slow")
        self.uploaded.append(len(await request.read()))
        return web.Response(text="ok")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    yield up
    up.release.set()


async def _gateway(gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, up: Upstream,
                   http2: dict[str, object] | None = None, idle_s: float = 75.0, **limits: object) -> Gateway:
    server = await upstream_factory(up)
    svc = service("svc", server.endpoint(), prefixes=["/api"], rewrite=None)
    settings = {"client_send_timeout_s": 1.0, "lingering_time_s": 1.0, "lingering_timeout_s": 0.5, **limits}
    return await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True, **(http2 or {})),
                                 limits=LimitSettings(**settings), client_idle_timeout_s=idle_s)


def _deaf_client(port: int) -> socket.socket:
    """A blocking socket that will never read: a tiny receive buffer and segment size keep
    what the kernels hold of the gateway's output small (~40 KiB), so the rest stays in
    the gateway's own write buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
    sock.connect(("127.0.0.1", port))
    return sock


def _closing_with_unsent_output(server: HttpServer) -> bool:
    """The attack's precondition: a connection is closing with part of the answer still
    in the gateway's write buffer."""
    return any(conn._transport.get_write_buffer_size() for conn in server.connections
               if isinstance(conn, Http2Connection) and conn._closing and conn._transport is not None)


def _closing(server: HttpServer) -> bool:
    return any(conn._closing for conn in server.connections if isinstance(conn, Http2Connection))


def _wide_open() -> bytes:
    settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: _WIDE})
    return PREFACE + settings.serialize() + WindowUpdateFrame(0, window_increment=_WIDE).serialize()


@pytest.mark.parametrize("close", ["h2c-lingering", "h2c-not-lingering", "tls"])
async def test_a_close_whose_output_the_client_never_reads_still_ends(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream, close: str) -> None:
    """The client asks for an answer larger than the kernels hold, says GOAWAY and never
    reads. The answer ends (its last bytes in the gateway's write buffer) and the drain
    closes the connection: lingering (h2c), not lingering (`lingering_time_s: 0`), or a
    TLS close (no half-close; close_notify). The send timeout must end it, where a plain
    close() waits for the buffer to be written (forever; TLS: asyncio's 30 s shutdown
    timeout), holding the slot and the socket."""
    lingering_time_s = 1.0 if close == "h2c-lingering" else 0.0
    gw = await _gateway(gateway_factory, upstream_factory, upstream, lingering_time_s=lingering_time_s)
    before = resources(gw.app)
    server, port, ctx = (gw.server, gw.port, None) if close != "tls" else await _tls_listener(gw)
    sock: socket.socket = _deaf_client(port)
    try:
        if ctx is not None:
            # The handshake blocks: in a thread, so the gateway's loop can answer it.
            sock = await asyncio.to_thread(ctx.wrap_socket, sock, server_hostname="127.0.0.1")
        sock.sendall(_wide_open() + _encoder_headers(1, f"/api/big?n={64 * KiB}")
                     + GoAwayFrame(0, last_stream_id=0).serialize())
        if ctx is None:
            await poll(lambda: _closing_with_unsent_output(server), "the drain closed with output unsent")
        else:
            # The TLS layer's size leaves out the TCP transport under it: closing is what is seen.
            await poll(lambda: _closing(server), "the drain closed the connection")
        assert server.lingering_closes == int(lingering_time_s > 0)
        # send timeout (1 s) + lingering time (1 s) + ticks: never "when the client reads".
        await poll(lambda: not server.connections, "the closing connection ended", deadline_s=6.0)
    finally:
        sock.close()
        if server is not gw.server:
            await server.shutdown(1.0)
    await settled(gw.app, before)


def _refused(frames: list[object]) -> set[int]:
    return {f.stream_id for f in frames if isinstance(f, RstStreamFrame) and f.error_code == REFUSED_STREAM}


def _goaways(frames: list[object]) -> list[tuple[int, int]]:
    return [(f.error_code, f.last_stream_id) for f in frames if isinstance(f, GoAwayFrame)]


async def test_streams_opened_after_the_clients_goaway_are_refused_and_the_drain_ends(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """The client says GOAWAY while a stream is open, then keeps opening streams (in the
    same packet as its GOAWAY, and later). Each is refused (REFUSED_STREAM: never reaches
    the upstream), so the drain ends when stream 1 does: the client cannot keep a drained
    connection alive by opening streams. The gateway's GOAWAY names stream 1 as the last
    one processed, and HPACK stays in sync (the refused heads are still decoded)."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    try:
        await raw.read_until(lambda fs: any(isinstance(f, SettingsFrame) for f in fs))
        raw.send(raw.headers(1, "/api/slow"), GoAwayFrame(0, last_stream_id=0), raw.headers(3, "/api/after"))
        assert await raw.drain()
        await raw.read_until(lambda fs: 3 in _refused(fs))
        for sid in range(5, 45, 2):
            raw.send(raw.headers(sid, f"/api/after-{sid}", extra=[("x-n", str(sid))]))
        assert await raw.drain()
        await raw.read_until(lambda fs: _refused(fs) >= set(range(3, 45, 2)))
        assert gw.server.connections, "the connection drains while stream 1 is open"
        upstream.release.set()
        assert await raw.closed_cleanly()
        frames = raw.frames()
        assert b"slow" in b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
        assert _goaways(frames) == [(0, 1)]
        assert not [p for p in upstream.paths if p.startswith("/api/after")]
    finally:
        raw.close()
    await _gone_and_settled(gw, before)


async def _drain_refusing_stream_3(gw: Gateway, raw: RawH2, upstream: Upstream) -> asyncio.Task[None]:
    """Stream 1 in flight at the upstream, the server draining (its GOAWAY names stream 1),
    and stream 3, opened after that GOAWAY, refused. Returns the drain's task."""
    raw.send(raw.headers(1, "/api/slow"))
    await poll(lambda: upstream.started == 1, "stream 1 reached the upstream")
    drain = asyncio.create_task(gw.server.shutdown(5.0))
    await raw.read_until(lambda fs: bool(_goaways(fs)))
    raw.send(raw.headers(3, "/api/after"))
    assert await raw.drain()
    await raw.read_until(lambda fs: 3 in _refused(fs))
    return drain


async def test_the_gateways_last_goaway_never_names_a_stream_above_its_drain_goaway(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """RFC 9113 §6.8: an endpoint MUST NOT increase the last stream id it sent. The drain's
    GOAWAY names stream 1; a stream the client opened meanwhile is refused; the GOAWAY that
    closes the connection after stream 1 must still name 1 (h2's default, the highest
    stream id received, would name the refused one: the client would think it processed)."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    raw = await RawH2.open(gw.port)
    drain: asyncio.Task[None] | None = None
    try:
        drain = await _drain_refusing_stream_3(gw, raw, upstream)
        upstream.release.set()
        assert await raw.closed_cleanly()
        assert [last for _, last in _goaways(raw.frames())] == [1, 1]
        await asyncio.wait_for(drain, 5.0)
    finally:
        raw.close()
        if drain is not None and not drain.done():
            drain.cancel()


async def _tls_listener(gw: Gateway) -> tuple[HttpServer, int, ssl.SSLContext]:
    """A TLS (ALPN h2) listener over the gateway's handler and limits: (server, port, client context)."""
    server_ctx, client_ctx = tls_contexts()
    tls = HttpServer(gw.server.handler, gw.server.limits, http2=Http2Settings())
    port = await tls.listen("127.0.0.1", 0, ssl=server_ctx)
    return tls, port, client_ctx


async def _open(port: int, tls: ssl.SSLContext | None) -> RawH2:
    if tls is None:
        return await RawH2.open(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    raw = RawH2(reader, writer)
    writer.write(PREFACE + SettingsFrame(0).serialize())
    return raw


@pytest.mark.parametrize("over", ["h2c", "tls"])
async def test_frames_after_the_clients_goaway_never_end_in_a_reset(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream, over: str) -> None:
    """The client's GOAWAY (no stream open) with a PING and a request already in flight
    behind it: over h2c and over TLS the gateway answers GOAWAY NO_ERROR naming no stream
    and ends with an orderly close (FIN or TLS close), never a reset that could destroy
    the GOAWAY before the client reads it; the request in flight is never served."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    server, port, ctx = (gw.server, gw.port, None) if over == "h2c" else await _tls_listener(gw)
    try:
        rounds, resets = 10, 0
        for _ in range(rounds):
            raw = await _open(port, ctx)
            try:
                await raw.read_until(lambda fs: any(isinstance(f, SettingsFrame) for f in fs))
                raw.send(GoAwayFrame(0, last_stream_id=0, error_code=0xFF), PingFrame(0, opaque_data=b"inflight"),
                         raw.headers(1, "/api/late"))
                await raw.drain()
                await raw.read_until(lambda fs: bool(_goaways(fs)))
                raw.send(PingFrame(0, opaque_data=b"late\0\0\0\0"), raw.headers(3, "/api/later"))
                await raw.drain()
                if over == "h2c":
                    raw.writer.write_eof()
                resets += not await raw.closed_cleanly()
                assert _goaways(raw.frames()) == [(0, 0)]
            finally:
                raw.close()
        assert resets == 0
        assert not [p for p in upstream.paths if p.startswith("/api/late")]
        await poll(lambda: not server.connections, "every connection is gone")
    finally:
        if server is not gw.server:
            await server.shutdown(1.0)


async def test_a_client_that_keeps_sending_during_the_lingering_close_is_ended_by_the_lingering_time(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """Lingering reads and drops what the client sends; a client that never stops (a PING
    every 100 ms, never closing) is ended by `lingering_time_s`, not kept forever."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream, lingering_time_s=1.0, lingering_timeout_s=0.5)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    loop = asyncio.get_running_loop()
    try:
        await raw.read_until(lambda fs: any(isinstance(f, SettingsFrame) for f in fs))
        raw.send(GoAwayFrame(0))
        await raw.read_until(lambda fs: bool(_goaways(fs)))
        started = loop.time()
        while await raw.drain() and loop.time() - started < 8.0:
            raw.send(PingFrame(0, opaque_data=b"stillhere"[:8]))
            if not gw.server.connections:
                break
            await asyncio.sleep(0.1)  # the client's pace: a PING every 100 ms until it is ended
        elapsed = loop.time() - started
        # lingering_time_s (1 s) + ticks; the client was never silent for lingering_timeout_s.
        assert elapsed < 3.0, f"the lingering close lasted {elapsed:.1f} s"
    finally:
        raw.close()
    await _gone_and_settled(gw, before)


async def test_the_servers_drain_ends_lingering_connections_within_its_timeout(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """Connections lingering when the server drains (one whose client keeps sending, one
    whose client never reads its last answer) are counted and ended: the first at once,
    the second by the drain's deadline; the drain returns within its timeout, and no
    connection is left."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream, lingering_time_s=60.0, lingering_timeout_s=60.0,
                        client_send_timeout_s=60.0)
    chatty = await RawH2.open(gw.port)
    deaf = _deaf_client(gw.port)
    pinger: asyncio.Task[None] | None = None
    try:
        await chatty.read_until(lambda fs: any(isinstance(f, SettingsFrame) for f in fs))
        chatty.send(GoAwayFrame(0))
        await chatty.read_until(lambda fs: bool(_goaways(fs)))

        async def ping() -> None:
            while await chatty.drain():
                chatty.send(PingFrame(0))
                await asyncio.sleep(0.05)  # the client's pace: a PING every 50 ms until it is closed
        pinger = asyncio.create_task(ping())
        deaf.sendall(_wide_open() + _encoder_headers(1, f"/api/big?n={64 * KiB}")
                     + GoAwayFrame(0, last_stream_id=0).serialize())
        await poll(lambda: _closing_with_unsent_output(gw.server), "the deaf connection closes with output unsent")
        assert gw.server.lingering_closes == 2
        loop = asyncio.get_running_loop()
        started = loop.time()
        drain = asyncio.create_task(gw.server.shutdown(2.0))
        # The lingering connection whose output is out is closed by the drain at once (not at
        # its deadline); the one the client does not read is ended by the deadline.
        assert len(gw.server.connections) == 2
        await poll(lambda: len(gw.server.connections) == 1, "the drain closed the chatty connection", deadline_s=1.0)
        assert _closing_with_unsent_output(gw.server), "the one left is the deaf client's"
        assert not drain.done()
        await asyncio.wait_for(drain, 5.0)
        assert loop.time() - started < 2.8
        await poll(lambda: not gw.server.connections, "no connection is left", deadline_s=1.0)
    finally:
        if pinger is not None:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
        chatty.close()
        deaf.close()


def _encoder_headers(sid: int, path: str) -> bytes:
    raw = RawH2.__new__(RawH2)  # only its HPACK encoder: the deaf client's socket is not asyncio's
    raw.encoder = Encoder()
    return bytes(raw.headers(sid, path).serialize())


async def test_a_goaway_while_the_answer_waits_for_the_clients_window_ends_by_the_send_timeout(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """The client asks for 200 KiB, says GOAWAY and never opens its window (65535 bytes).
    The stream waits on flow control for the send timeout, is reset, and the drain ends
    the connection: the upstream request, in-flight counts and the slot are released."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    try:
        raw.send(raw.headers(1, f"/api/big?n={200 * KiB}"), GoAwayFrame(0))
        assert await raw.closed_cleanly(6.0)
        frames = raw.frames()
        got = sum(len(f.data) for f in frames if isinstance(f, DataFrame))
        assert got == 65535
        assert [f.error_code for f in frames if isinstance(f, RstStreamFrame)] == [CANCEL]
        assert _goaways(frames) == [(0, 1)]
    finally:
        raw.close()
    await _gone_and_settled(gw, before)


@pytest.mark.parametrize("code", [0, 1, 2, 0xFF], ids=["no-error", "protocol-error", "internal-error", "unknown"])
async def test_a_second_goaway_with_any_error_code_lets_the_open_upload_complete(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream, code: int) -> None:
    """GOAWAY with any error code, then a second GOAWAY (with a lower last stream id),
    then WINDOW_UPDATE, SETTINGS and the rest of an upload: the stream still completes
    (answer whole, HPACK in sync for a refused stream's head in between), the gateway's
    one GOAWAY names it, nothing is reset and the connection closes in order."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    try:
        first, rest = DataFrame(1, data=b"x" * 1000), DataFrame(1, data=b"y" * 500)
        rest.flags.add("END_STREAM")
        raw.send(raw.headers(1, "/api/upload", end=False, method="POST", extra=[("x-same", "v")]), first,
                 GoAwayFrame(0, last_stream_id=0, error_code=code))
        assert await raw.drain()
        raw.send(GoAwayFrame(0, last_stream_id=0, error_code=code), WindowUpdateFrame(0, window_increment=1000),
                 WindowUpdateFrame(1, window_increment=1000), SettingsFrame(0),
                 raw.headers(3, "/api/refused", extra=[("x-same", "v")]), rest)
        assert await raw.drain()
        assert await raw.closed_cleanly()
        frames = raw.frames()
        body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
        assert body == b"ok"
        assert _goaways(frames) == [(0, 1)]
        assert _refused(frames) == {3}
        assert [f.stream_id for f in frames if isinstance(f, RstStreamFrame)] == [3]
    finally:
        raw.close()
    assert [p for p in upstream.paths if p.startswith("/api/")] == ["/api/upload"]
    await _gone_and_settled(gw, before)


@pytest.mark.parametrize("goaway", ["the-clients", "the-drains", "the-clients-at-the-stream-limit"])
async def test_a_client_that_spins_streams_after_a_goaway_ends_with_enhance_your_calm(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream, goaway: str) -> None:
    """Every stream opened after a GOAWAY (the client's own, or the drain's) is refused and
    spends the reset budget: HEADERS spun into refusals (HPACK work, a RST each) while one
    stream keeps the drain open end the connection with ENHANCE_YOUR_CALM, not at the
    drain's deadline. (A client racing the drain's GOAWAY has at most its in-flight
    streams refused, far under the budget.) Also when the open streams are at the
    concurrency limit: the refusal after a GOAWAY is the one that counts."""
    at_limit = goaway.endswith("limit")
    gw = await _gateway(gateway_factory, upstream_factory, upstream,
                        http2={"max_resets": 50, "max_concurrent_streams": 1 if at_limit else 100})
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    drain: asyncio.Task[None] | None = None
    try:
        raw.send(raw.headers(1, "/api/slow"))
        if goaway.startswith("the-clients"):
            raw.send(GoAwayFrame(0))
        else:
            await poll(lambda: upstream.started == 1, "stream 1 reached the upstream")
            drain = asyncio.create_task(gw.server.shutdown(30.0))
            await raw.read_until(lambda fs: bool(_goaways(fs)))
        for sid in range(3, 2003, 2):
            raw.send(raw.headers(sid, "/api/spin"))
            if not await raw.drain():
                break
        await raw.read_until_closed(10)
        frames = raw.frames()
        assert _goaways(frames)[-1] == (ENHANCE_YOUR_CALM, 1)
        assert len(_refused(frames)) <= 51
        if drain is not None:
            await asyncio.wait_for(drain, 5.0)
    finally:
        raw.close()
        if drain is not None and not drain.done():
            drain.cancel()
    assert not [p for p in upstream.paths if p.startswith("/api/spin")]
    await _gone_and_settled(gw, before)


async def test_window_updates_after_the_clients_goaway_let_the_answer_complete(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """The client says GOAWAY while 200 KiB wait on its window, then opens the windows: the
    whole answer arrives, then the gateway's GOAWAY naming the stream and an orderly close."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream, client_send_timeout_s=10.0)
    raw = await RawH2.open(gw.port)
    size = 200 * KiB
    try:
        raw.send(raw.headers(1, f"/api/big?n={size}"), GoAwayFrame(0))
        await raw.read_until(lambda fs: sum(len(f.data) for f in fs if isinstance(f, DataFrame)) == 65535)
        raw.send(WindowUpdateFrame(0, window_increment=size), WindowUpdateFrame(1, window_increment=size))
        assert await raw.closed_cleanly()
        frames = raw.frames()
        assert sum(len(f.data) for f in frames if isinstance(f, DataFrame)) == size
        assert _goaways(frames) == [(0, 1)]
    finally:
        raw.close()
    await poll(lambda: not gw.server.connections, "the connection is gone")


async def test_a_reset_after_the_clients_goaway_releases_the_stream_and_ends_the_drain(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """GOAWAY with a stream waiting on a slow upstream, then RST_STREAM for it: the upstream
    request is cancelled (in-flight counts released) and the drain ends the connection."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    try:
        raw.send(raw.headers(1, "/api/slow"), GoAwayFrame(0))
        await poll(lambda: upstream.started == 1, "stream 1 reached the upstream")
        raw.send(RstStreamFrame(1, error_code=CANCEL))
        assert await raw.closed_cleanly()
        assert _goaways(raw.frames()) == [(0, 1)]
    finally:
        raw.close()
    await _gone_and_settled(gw, before)


async def test_a_protocol_error_after_the_drains_goaway_names_no_stream_above_it(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """RFC 9113 §6.8 for h2's own GOAWAY too: after the drain's GOAWAY (stream 1) and a
    refused stream 3, a connection error (WINDOW_UPDATE of 0 on the connection) ends the
    connection with GOAWAY PROTOCOL_ERROR that still names stream 1."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    raw = await RawH2.open(gw.port)
    drain: asyncio.Task[None] | None = None
    try:
        drain = await _drain_refusing_stream_3(gw, raw, upstream)
        raw.send(WindowUpdateFrame(0, window_increment=0))
        await raw.read_until_closed()
        assert _goaways(raw.frames()) == [(0, 1), (PROTOCOL_ERROR, 1)]
        await asyncio.wait_for(drain, 5.0)
    finally:
        raw.close()
        if drain is not None and not drain.done():
            drain.cancel()


async def test_a_client_that_half_closes_without_reading_its_last_answer_is_ended_by_the_send_timeout(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """The client's FIN (no GOAWAY) after its request, its answer's last bytes still in the
    gateway's write buffer (under the high-water mark: the connection looks writable), and
    it never reads: asyncio closes the transport after the buffer, which never empties. The
    send timeout ends it, not the idle timeout (here 60 s) or never."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream, idle_s=60.0)
    before = resources(gw.app)
    sock = _deaf_client(gw.port)
    try:
        sock.sendall(_wide_open() + _encoder_headers(1, f"/api/big?n={64 * KiB}"))
        await poll(lambda: _unsent_output(gw.server) and not _open_streams(gw.server), "the answer ended, unsent")
        sock.shutdown(socket.SHUT_WR)
        await poll(lambda: not gw.server.connections, "the half-closed connection ended", deadline_s=6.0)
        assert gw.server.connections == set()
    finally:
        sock.close()
    await settled(gw.app, before)


def _unsent_output(server: HttpServer) -> bool:
    return any(conn._transport.get_write_buffer_size() for conn in server.connections
               if isinstance(conn, Http2Connection) and conn._transport is not None)


def _open_streams(server: HttpServer) -> int:
    return sum(len(conn._streams) for conn in server.connections if isinstance(conn, Http2Connection))


async def test_data_on_streams_refused_after_the_goaway_gives_the_connection_window_back(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """After its GOAWAY the client opens streams with bodies (refused) and sends more DATA on
    them than the whole connection window (1 MiB): those bytes are given back, so the upload
    still open on stream 1 completes; no flow-control error ends the connection."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    try:
        raw.send(raw.headers(1, "/api/upload", end=False, method="POST"), DataFrame(1, data=b"a" * 1000),
                 GoAwayFrame(0))
        chunk = b"z" * 16384
        for sid in range(3, 19, 2):  # 8 streams x 192 KiB: 1.5 MiB, each under its stream window
            raw.send(raw.headers(sid, "/api/refused", end=False, method="POST"))
            for _ in range(12):
                raw.send(DataFrame(sid, data=chunk))
            assert await raw.drain()
        await raw.read_until(lambda fs: _refused(fs) >= set(range(3, 19, 2)))
        rest = DataFrame(1, data=b"b" * 16384)
        rest.flags.add("END_STREAM")
        for _ in range(10):  # 1000 + 11 x 16 KiB: within stream 1's window (256 KiB)
            raw.send(DataFrame(1, data=b"b" * 16384))
        raw.send(rest)
        assert await raw.drain()
        assert await raw.closed_cleanly()
        frames = raw.frames()
        body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
        assert body == b"ok"
        assert _goaways(frames) == [(0, 1)]
    finally:
        raw.close()
    assert not [p for p in upstream.paths if p.startswith("/api/refused")]
    assert upstream.uploaded == [1000 + 11 * 16384]
    await _gone_and_settled(gw, before)


async def test_an_upload_racing_the_drains_goaway_is_refused_without_ending_the_connection(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream) -> None:
    """A client that had not read the drain's GOAWAY yet opens a stream and sends its whole
    body (16 DATA frames): the stream is refused once, its DATA in flight is dropped (the
    window given back), and that race spends one reset, not one per frame: a small reset
    budget does not end the connection, stream 1 still completes in order."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream, http2={"max_resets": 5})
    raw = await RawH2.open(gw.port)
    drain: asyncio.Task[None] | None = None
    try:
        raw.send(raw.headers(1, "/api/slow"))
        await poll(lambda: upstream.started == 1, "stream 1 reached the upstream")
        drain = asyncio.create_task(gw.server.shutdown(5.0))
        await raw.read_until(lambda fs: bool(_goaways(fs)))
        raw.send(raw.headers(3, "/api/racing", end=False, method="POST"),
                 *(DataFrame(3, data=b"r" * 16384) for _ in range(16)))
        assert await raw.drain()
        await raw.read_until(lambda fs: 3 in _refused(fs))
        upstream.release.set()
        assert await raw.closed_cleanly()
        frames = raw.frames()
        assert _goaways(frames) == [(0, 1), (0, 1)]
        assert b"slow" in b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
        await asyncio.wait_for(drain, 5.0)
    finally:
        raw.close()
        if drain is not None and not drain.done():
            drain.cancel()

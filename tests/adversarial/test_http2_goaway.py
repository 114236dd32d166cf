"""Red-team tests of how the gateway's HTTP/2 connections end: the client's GOAWAY
(the connection drains), the lingering close that every close now is, and the
server's drain meeting both. Each attack is followed by a count of what it could
hold: the connection's slot (`HttpServer.connections`), file descriptors, the
pipeline's in-flight gauge, endpoint in-flight counts (`hostile.settled`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hpack import Encoder
from hyperframe.frame import DataFrame, GoAwayFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, poll, service
from tests.harness.h2_tools import PREFACE, RawH2
from tests.harness.hostile import resources, settled
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.settings import Http2Settings, LimitSettings
from vocelio_proxy.wire.http2.connection import Http2Connection

REFUSED_STREAM = 7
KiB = 1024
#: The client's windows: the gateway's output is never held back by flow control, only by TCP.
_WIDE = 8 << 20


class Upstream:
    """/api/big?n=N answers N bytes; /api/slow answers once released; anything else "ok"."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.paths: list[str] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.path.startswith("/api/big"):
            return web.Response(body=b"b" * int(request.query.get("n", "1024")))
        if request.path.startswith("/api/slow"):
            self.started += 1
            await self.release.wait()
            return web.Response(text="slow")
        await request.read()
        return web.Response(text="ok")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    yield up
    up.release.set()


async def _gateway(gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, up: Upstream,
                   **limits: object) -> Gateway:
    server = await upstream_factory(up)
    svc = service("svc", server.endpoint(), prefixes=["/api"], rewrite=None)
    settings = {"client_send_timeout_s": 1.0, "lingering_time_s": 1.0, "lingering_timeout_s": 0.5, **limits}
    return await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True),
                                 limits=LimitSettings(**settings))


def _deaf_client(port: int) -> socket.socket:
    """A blocking socket that will never read: a tiny receive buffer and segment size keep
    what the kernels hold of the gateway's output small (~40 KiB), so the rest stays in
    the gateway's own write buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
    sock.connect(("127.0.0.1", port))
    return sock


def _closing_with_unsent_output(gw: Gateway) -> bool:
    """The attack's precondition: the connection is closing with part of the answer still
    in the gateway's write buffer."""
    for conn in gw.server.connections:
        if isinstance(conn, Http2Connection) and conn._closing and conn._transport is not None:
            return bool(conn._transport.get_write_buffer_size())
    return False


def _wide_open() -> bytes:
    settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: _WIDE})
    return PREFACE + settings.serialize() + WindowUpdateFrame(0, window_increment=_WIDE).serialize()


@pytest.mark.parametrize("lingering_time_s", [1.0, 0.0], ids=["lingering", "not-lingering"])
async def test_a_close_whose_output_the_client_never_reads_still_ends(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, upstream: Upstream,
        lingering_time_s: float) -> None:
    """The client asks for an answer larger than the kernels hold, says GOAWAY and never
    reads. The answer ends (its last bytes in the gateway's write buffer) and the drain
    closes the connection, lingering or not (`lingering_time_s: 0`, as a TLS connection,
    which cannot half-close): the send timeout must end it, where a plain close() waits
    for the buffer to be written, forever, holding the slot and the socket."""
    gw = await _gateway(gateway_factory, upstream_factory, upstream, lingering_time_s=lingering_time_s)
    lingering = lingering_time_s > 0
    before = resources(gw.app)
    raw = RawH2.__new__(RawH2)  # only its HPACK encoder: this client's socket is not asyncio's
    raw.encoder = Encoder()
    sock = _deaf_client(gw.port)
    try:
        sock.sendall(_wide_open() + raw.headers(1, f"/api/big?n={64 * KiB}").serialize()
                     + GoAwayFrame(0, last_stream_id=0).serialize())
        await poll(lambda: _closing_with_unsent_output(gw), "the drain closed with output unsent")
        assert gw.server.lingering_closes == int(lingering)
        # send timeout (1 s) + lingering time (1 s) + ticks: never "when the client reads".
        await poll(lambda: not gw.server.connections, "the closing connection ended", deadline_s=6.0)
    finally:
        sock.close()
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
    await poll(lambda: not gw.server.connections, "the connection is gone")
    await settled(gw.app, before)


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
        raw.send(raw.headers(1, "/api/slow"))
        await poll(lambda: upstream.started == 1, "stream 1 reached the upstream")
        drain = asyncio.create_task(gw.server.shutdown(5.0))
        await raw.read_until(lambda fs: bool(_goaways(fs)))
        raw.send(raw.headers(3, "/api/after"))
        assert await raw.drain()
        await raw.read_until(lambda fs: 3 in _refused(fs))
        upstream.release.set()
        assert await raw.closed_cleanly()
        assert [last for _, last in _goaways(raw.frames())] == [1, 1]
        await asyncio.wait_for(drain, 5.0)
    finally:
        raw.close()
        if drain is not None and not drain.done():
            drain.cancel()

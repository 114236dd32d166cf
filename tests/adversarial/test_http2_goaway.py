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
from hyperframe.frame import GoAwayFrame, SettingsFrame, WindowUpdateFrame

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

    async def __call__(self, request: web.Request) -> web.StreamResponse:
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
                                 limits=LimitSettings(**settings))  # type: ignore[arg-type]


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

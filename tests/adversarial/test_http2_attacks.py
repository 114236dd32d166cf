"""The known HTTP/2 attacks against the gateway, with raw frames (hyperframe,
hpack) over a raw socket, each followed by a count of what it could leak: file
descriptors, RSS, the pipeline's in-flight gauge, endpoint in-flight counts and
breaker probe slots (`hostile.settled`). Bounds are the `http2` settings
(docs/http2.md)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import psutil
import pytest
from aiohttp import web
from hpack import Decoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, poll, service
from tests.harness.h2_tools import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2Client,
    RawH2,
    tls_contexts,
)
from tests.harness.hostile import resources, settled
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.settings import Http2Settings, LimitSettings
from vocelio_proxy.wire.server import HttpServer

MiB = 1 << 20


class Slow:
    """An upstream whose /api/slow answers only when released (counts what reached it)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.cancelled = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/api/slow"):
            self.started += 1
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return web.Response(text="slow")
        if request.path.startswith("/api/big"):
            return web.Response(body=b"b" * 2 * MiB)
        await request.read()
        return web.Response(text="ok")


@pytest.fixture
async def slow() -> AsyncIterator[Slow]:
    up = Slow()
    yield up
    up.release.set()


async def _gateway(gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow,
                   limits: LimitSettings | None = None, **http2: object) -> Gateway:
    up = await upstream_factory(slow)
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    return await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True, **http2),
                                 limits=limits or LimitSettings())


async def _ended_with(raw: RawH2, code: int) -> int:
    """The gateway sent GOAWAY `code` and closed the connection; returns the code it sent."""
    await raw.read_until_closed(10)
    goaways = [f for f in raw.frames() if isinstance(f, GoAwayFrame)]
    assert goaways, f"no GOAWAY; got {raw.frames()[-5:]}"
    assert goaways[-1].error_code == code
    return int(goaways[-1].error_code)


async def _still_serves(gw: Gateway) -> None:
    client = await H2Client.open(gw.port)
    try:
        answer = await client.request("/api/ok")
        assert answer.status == 200
    finally:
        await client.close()


async def test_rapid_reset_releases_upstream_work_and_ends_with_enhance_your_calm(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow, max_resets=50)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    for sid in range(1, 2001, 2):
        raw.send(raw.headers(sid, "/api/slow"), RstStreamFrame(sid, error_code=CANCEL))
        if not await raw.drain():
            break
    assert await _ended_with(raw, ENHANCE_YOUR_CALM) == ENHANCE_YOUR_CALM
    raw.close()
    # The budget stopped it: at most the budget's worth of streams were started.
    assert slow.started <= 51
    await settled(gw.app, before)
    await _still_serves(gw)


async def test_streams_the_gateway_must_reset_for_client_errors_spend_the_same_budget(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    """"MadeYouReset": the client makes the server reset streams (here DATA after END_STREAM):
    each reset ends that stream's upstream work, and the resets are budgeted like client resets."""
    gw = await _gateway(gateway_factory, upstream_factory, slow, max_resets=50)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    for sid in range(1, 2001, 2):
        raw.send(raw.headers(sid, "/api/slow"), DataFrame(sid, data=b"x"))
        if not await raw.drain():
            break
    assert await _ended_with(raw, ENHANCE_YOUR_CALM) == ENHANCE_YOUR_CALM
    raw.close()
    assert slow.started <= 51
    await settled(gw.app, before)
    await _still_serves(gw)


async def test_cancelled_streams_under_the_budget_release_their_upstream_requests(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    for sid in range(1, 21, 2):
        raw.send(raw.headers(sid, "/api/slow"))
    await raw.drain()
    await poll(lambda: slow.started == 10, "ten requests reached the upstream")
    assert resources(gw.app).in_flight == before.in_flight + 10
    for sid in range(1, 21, 2):
        raw.send(RstStreamFrame(sid, error_code=CANCEL))
    await raw.drain()
    # The connection stays open; the in-flight work is released.
    await settled(gw.app, before, fd_slack=8)
    raw.send(raw.headers(21, "/api/ok"))
    frames = await raw.read_until(lambda fs: any(isinstance(f, DataFrame) and f.stream_id == 21
                                                 and "END_STREAM" in f.flags for f in fs))
    assert not any(isinstance(f, GoAwayFrame) for f in frames)
    raw.close()


async def test_a_continuation_flood_is_cut_at_the_header_block_cap(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow, max_header_block_bytes=65536)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    first = raw.headers(1, "/api/ok")
    first.flags.discard("END_HEADERS")
    raw.send(first)
    for _ in range(2000):  # 32 MiB if nothing stopped it
        raw.send(ContinuationFrame(1, data=b"\x00" * 16384))
        if not await raw.drain():
            break
    assert await _ended_with(raw, ENHANCE_YOUR_CALM) == ENHANCE_YOUR_CALM
    raw.close()
    after = await settled(gw.app, before)
    assert after.rss - before.rss < 16 * MiB


async def test_an_hpack_bomb_is_refused_at_the_header_list_size(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow, max_header_list_size=32768)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    frame = raw.headers(1, "/api/ok", extra=[("x-bomb", "a" * 4000)])
    # Index 62 is the 4 KB field just added to the dynamic table: each byte decodes to 4 KB.
    frame.data += b"\xbe" * 4000  # 4 KB encoded, 16 MB decoded
    raw.send(frame)
    await raw.drain()
    await _ended_with(raw, ENHANCE_YOUR_CALM)
    raw.close()
    after = await settled(gw.app, before)
    assert after.rss - before.rss < 16 * MiB
    assert slow.started == 0
    await _still_serves(gw)


async def test_streams_beyond_the_concurrency_limit_are_refused_and_the_rest_are_served(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow, max_concurrent_streams=5)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    for sid in range(1, 11, 2):
        raw.send(raw.headers(sid, "/api/slow"))
    await raw.drain()
    await poll(lambda: slow.started == 5, "five streams reached the upstream")
    raw.send(raw.headers(11, "/api/slow"))
    frames = await raw.read_until(lambda fs: any(isinstance(f, RstStreamFrame) and f.stream_id == 11 for f in fs))
    [refused] = [f for f in frames if isinstance(f, RstStreamFrame) and f.stream_id == 11]
    assert refused.error_code == REFUSED_STREAM
    assert slow.started == 5
    slow.release.set()
    frames = await raw.read_until(lambda fs: sum(isinstance(f, DataFrame) and "END_STREAM" in f.flags
                                                 for f in fs) == 5)
    assert not any(isinstance(f, GoAwayFrame) for f in frames)
    raw.close()
    # Five upstream requests ran at once: their keep-alive connections stay pooled (both ends
    # are in this process: the gateway's and the upstream's descriptor of each).
    await settled(gw.app, before, fd_slack=4 + 2 * 5)


async def test_a_client_that_never_opens_its_window_is_freed_by_the_send_timeout(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow,
                        limits=LimitSettings(client_send_timeout_s=1.0))
    before = resources(gw.app)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    raw = RawH2(reader, writer)
    writer.write(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize())
    raw.send(raw.headers(1, "/api/big"))
    await raw.drain()
    await poll(lambda: resources(gw.app).in_flight == before.in_flight + 1, "the request is in flight")
    frames = await raw.read_until(lambda fs: any(isinstance(f, RstStreamFrame) and f.stream_id == 1 for f in fs),
                                  deadline_s=10)
    [reset] = [f for f in frames if isinstance(f, RstStreamFrame)]
    assert reset.error_code == CANCEL
    await settled(gw.app, before, fd_slack=8)
    raw.close()


@pytest.mark.parametrize("kind", ["settings", "ping", "window_update", "empty_data", "priority", "goaway"])
async def test_control_frame_floods_end_with_enhance_your_calm(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow, kind: str) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow, max_control_frames=500)
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    raw.send(raw.headers(1, "/api/slow", end=False, method="POST"))
    frame: Frame = {
        "settings": SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 10}),
        "ping": PingFrame(0, opaque_data=b"12345678"),
        "window_update": WindowUpdateFrame(0, window_increment=1),
        "empty_data": DataFrame(1),
        "priority": PriorityFrame(3, depends_on=0, stream_weight=10),
        # The stream stays open, so the connection drains instead of closing after the first.
        "goaway": GoAwayFrame(0, last_stream_id=1),
    }[kind]
    for _ in range(20):
        raw.send(*([frame] * 500))
        if not await raw.drain():
            break
    assert await _ended_with(raw, ENHANCE_YOUR_CALM) == ENHANCE_YOUR_CALM
    raw.close()
    await settled(gw.app, before)


async def test_a_wrong_preface_over_tls_ends_the_connection(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow)
    server_ctx, client_ctx = tls_contexts()
    tls = HttpServer(gw.server.handler, gw.server.limits, http2=Http2Settings())
    port = await tls.listen("127.0.0.1", 0, ssl=server_ctx)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="127.0.0.1")
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert ssl_object.selected_alpn_protocol() == "h2"
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" + b"\x00" * 64)
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        raw = RawH2(reader, writer)
        raw.received += data
        # Closed without an HTTP/1.1 answer (RFC 9113 §3.4: a GOAWAY may be omitted when the
        # peer is clearly not speaking HTTP/2; if one is sent it says PROTOCOL_ERROR).
        assert not data.startswith(b"HTTP/1.1")
        assert all(f.error_code == PROTOCOL_ERROR for f in raw.frames() if isinstance(f, GoAwayFrame))
    finally:
        await tls.shutdown(1.0)


@pytest.mark.parametrize(("extra", "what"), [
    ([("X-Upper", "1")], "an upper-case field name"),
    ([("connection", "keep-alive")], "a connection-specific field"),
    ([("te", "gzip")], "TE other than trailers"),
    ([(":status", "200")], "a response pseudo-header in a request"),
    ([("x-a", "1\r\nx-injected: 2")], "CR LF in a value"),
    ([("host", "other.example")], "Host that differs from :authority"),
])
async def test_headers_invalid_in_http2_are_a_stream_error_and_never_reach_the_upstream(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow,
        extra: list[tuple[str, str]], what: str) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow)
    raw = await RawH2.open(gw.port)
    raw.send(raw.headers(1, "/api/slow", extra=extra))
    await raw.drain()
    frames = await raw.read_until(lambda fs: any(isinstance(f, (RstStreamFrame, GoAwayFrame)) for f in fs))
    ends = [f for f in frames if isinstance(f, (RstStreamFrame, GoAwayFrame))]
    assert ends[0].error_code == PROTOCOL_ERROR, what
    assert slow.started == 0, what
    raw.close()
    await _still_serves(gw)


def test_rss_reading_works() -> None:
    assert psutil.Process().memory_info().rss > 0


async def test_a_request_body_that_stops_arriving_gets_408_and_releases_the_stream(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    gw = await _gateway(gateway_factory, upstream_factory, slow,
                        limits=LimitSettings(client_body_timeout_s=0.5))
    before = resources(gw.app)
    raw = await RawH2.open(gw.port)
    raw.send(raw.headers(1, "/api/upload", end=False, method="POST", extra=[("content-length", "100")]),
             DataFrame(1, data=b"x" * 10))
    await raw.drain()
    frames = await raw.read_until(lambda fs: any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in fs),
                                  deadline_s=10)
    [head] = [f for f in frames if isinstance(f, HeadersFrame)]
    assert dict(Decoder().decode(head.data, raw=True))[b":status"] == b"408"
    await settled(gw.app, before)
    await _still_serves(gw)
    raw.close()


async def test_a_partial_preface_is_held_only_for_the_header_timeout(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, slow: Slow) -> None:
    up = await upstream_factory(slow)
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True),
                               client_header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(PREFACE[:10])
    data = await asyncio.wait_for(reader.read(), 5)  # closed by the gateway, well before the idle timeout
    writer.close()
    assert data.startswith(b"HTTP/1.1 408")

"""The gateway's HTTP/2 server as clients see it: h2c with prior knowledge and
TLS with ALPN h2, through the same pipeline as HTTP/1.1 (routing, the upstream,
the envelope, the access log), request bodies with backpressure, streamed
responses, trailers, and no connection-specific header ever sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hyperframe.frame import DataFrame, GoAwayFrame, PingFrame, RstStreamFrame, SettingsFrame

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, poll, service
from tests.harness.h2_tools import PREFACE, Answer, H2Client, RawH2, tls_contexts, write_ca
from tests.harness.hostile import RecordingUpstreamFactory
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.settings import Http2Settings, LimitSettings
from vocelio_proxy.wire.exchange import Exchange
from vocelio_proxy.wire.http2.connection import Http2Connection
from vocelio_proxy.wire.server import HttpServer


@pytest.fixture
async def h2_gateway(gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory) -> Gateway:
    async def upstream(request: web.Request) -> web.StreamResponse:
        if request.path == "/api/stream":
            resp = web.StreamResponse(headers={"Connection": "keep-alive", "Keep-Alive": "timeout=5",
                                               "X-Up": "1"})
            await resp.prepare(request)
            for i in range(20):
                await resp.write(b"%d-" % i * 1000)
            await resp.write_eof()
            return resp
        body = await request.read()
        return web.json_response({"path": request.path_qs, "method": request.method, "body": len(body),
                                  "host": request.host, "cookie": request.headers.get("Cookie"),
                                  "headers": sorted(request.headers)},
                                 headers={"Connection": "keep-alive", "Upgrade": "h2c", "Proxy-Connection": "x"})

    up = await upstream_factory(upstream)
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    return await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))


@pytest.fixture
async def h2c(h2_gateway: Gateway) -> AsyncIterator[H2Client]:
    client = await H2Client.open(h2_gateway.port)
    yield client
    await client.close()


_FORBIDDEN = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"}


async def test_an_h2c_request_is_proxied_through_the_pipeline(h2c: H2Client) -> None:
    answer = await h2c.request("/api/items?q=1", headers=[("cookie", "a=1"), ("cookie", "b=2")])
    assert answer.status == 200
    import json
    seen = json.loads(answer.body)
    assert seen["path"] == "/api/items?q=1"
    assert seen["host"] == "gw.test"
    assert seen["cookie"] == "a=1; b=2"
    assert answer.header("x-request-id")
    assert not {k for k, _ in answer.headers} & _FORBIDDEN


async def test_a_streamed_response_arrives_whole_without_connection_headers(h2c: H2Client) -> None:
    answer = await h2c.request("/api/stream")
    assert answer.status == 200
    assert answer.body == b"".join(b"%d-" % i * 1000 for i in range(20))
    assert answer.header("x-up") == "1"
    assert not {k for k, _ in answer.headers} & _FORBIDDEN


async def test_a_request_body_larger_than_the_windows_reaches_the_upstream(h2c: H2Client) -> None:
    body = b"x" * (900 * 1024)  # over the stream's window (256 KiB); under the upstream's 1 MiB cap
    sid = h2c.start("/api/upload", "POST", [("content-length", str(len(body)))], more=True)
    import json

    async def send() -> None:
        # Send as the windows allow (the gateway opens them as the pipeline reads).
        view = memoryview(body)
        while view:
            window = h2c.conn.local_flow_control_window(sid)
            size = min(window, h2c.conn.max_outbound_frame_size, len(view))
            if size <= 0:
                h2c._changed.clear()
                await asyncio.wait_for(h2c._changed.wait(), 5)
                continue
            h2c.conn.send_data(sid, bytes(view[:size]), end_stream=size == len(view))
            view = view[size:]
            h2c.flush()

    await send()
    answer = await h2c.wait(sid, deadline_s=10)
    assert answer.status == 200
    assert json.loads(answer.body)["body"] == len(body)


async def test_many_concurrent_streams_share_one_connection(h2c: H2Client) -> None:
    sids = [h2c.start(f"/api/n{i}") for i in range(50)]
    answers = await asyncio.gather(*(h2c.wait(sid, deadline_s=10) for sid in sids))
    assert [a.status for a in answers] == [200] * 50


async def test_a_gateway_error_is_the_json_envelope_on_its_stream(h2c: H2Client) -> None:
    answer = await h2c.request("/nowhere")
    assert answer.status == 404
    assert b'"error"' in answer.body
    again = await h2c.request("/api/after")
    assert again.status == 200


async def test_head_has_headers_and_no_body(h2c: H2Client) -> None:
    answer = await h2c.request("/health", "HEAD")
    assert answer.status == 200
    assert answer.body == b""


async def test_tls_with_alpn_h2_serves_http2_and_http_1_1_still_works(h2_gateway: Gateway) -> None:
    server_ctx, client_ctx = tls_contexts()
    tls = HttpServer(h2_gateway.server.handler, h2_gateway.server.limits, http2=Http2Settings())
    port = await tls.listen("127.0.0.1", 0, ssl=server_ctx)
    try:
        client = await H2Client.open(port, client_ctx)
        try:
            answer = await client.request("/api/tls")
            assert answer.status == 200
        finally:
            await client.close()
        h1 = ssl.create_default_context()
        h1.check_hostname = False
        h1.verify_mode = ssl.CERT_NONE
        h1.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=h1)
        writer.write(b"GET /api/h1 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert data.startswith(b"HTTP/1.1 200")
    finally:
        await tls.shutdown(1.0)


async def test_cleartext_http2_is_off_unless_enabled(gateway_factory: GatewayFactory,
                                                     upstream_factory: UpstreamFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 4")


async def test_drain_sends_goaway_and_finishes_the_stream_in_flight(gateway_factory: GatewayFactory,
                                                                    upstream_factory: UpstreamFactory) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="finished")

    up = await upstream_factory(slow)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)]),
                               http2=Http2Settings(cleartext=True))
    # A raw client: h2's own client state machine drops streams once it reads a GOAWAY.
    raw = await RawH2.open(gw.port)
    try:
        raw.send(raw.headers(1, "/api/slow"))
        await poll(lambda: up.hits, "the request reached the upstream")
        stopping = asyncio.get_running_loop().create_task(gw.server.shutdown(5.0))
        frames = await raw.read_until(lambda fs: any(isinstance(f, GoAwayFrame) for f in fs))
        [goaway] = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaway.last_stream_id == 1
        assert goaway.error_code == 0
        # A stream opened after the GOAWAY is refused; the one in flight goes on.
        raw.send(raw.headers(3, "/api/late"))
        frames = await raw.read_until(lambda fs: any(isinstance(f, RstStreamFrame) and f.stream_id == 3 for f in fs))
        assert [f.error_code for f in frames if isinstance(f, RstStreamFrame)] == [7]  # REFUSED_STREAM
        release.set()
        frames = await raw.read_until(lambda fs: any(isinstance(f, DataFrame) and "END_STREAM" in f.flags
                                                     for f in fs))
        assert b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1) == b"finished"
        await raw.read_until_closed()
        await stopping
    finally:
        raw.close()


async def test_a_request_body_opens_its_window_only_as_the_pipeline_reads_it() -> None:
    read_one = asyncio.Event()
    got: list[int] = []

    async def handler(ex: Exchange, out: Any) -> None:
        await read_one.wait()
        assert ex.body is not None
        async for chunk in ex.body.chunks():
            got.append(len(chunk))
            break
        out.send(ex, 200, [], b"read")
        read_one.clear()

    window = 65535
    server = HttpServer(handler, LimitSettings(), http2=Http2Settings(cleartext=True, initial_window_size=window))
    port = await server.listen("127.0.0.1", 0)
    client = await H2Client.open(port)
    try:
        sid = client.start("/upload", "POST", more=True)
        await client.barrier()
        # The client may send exactly one window; the gateway buffers it and opens nothing more.
        sent = 0
        while (room := min(client.conn.local_flow_control_window(sid), client.conn.max_outbound_frame_size)) > 0:
            client.conn.send_data(sid, b"x" * room)
            sent += room
        client.flush()
        await client.barrier()
        assert sent == window
        assert client.conn.local_flow_control_window(sid) == 0
        read_one.set()
        answer = await client.wait(sid)
        assert answer.status == 200
        assert got
        # What the pipeline read (and only that) was given back to the client.
        await client.barrier()
        assert 0 < sum(got) <= window
    finally:
        await client.close()
        await server.shutdown(1.0)


async def _curl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec("curl", "-sS", "--max-time", "10", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def test_curl_over_tls_and_with_prior_knowledge_reaches_a_strict_http1_backend(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory, tmp_path: Path) -> None:
    up = await recording_upstream()
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    server_ctx, ca, _, _ = write_ca(str(tmp_path))
    tls = HttpServer(gw.server.handler, gw.server.limits, http2=Http2Settings())
    port = await tls.listen("127.0.0.1", 0, ssl=server_ctx)
    try:
        code, out, err = await _curl("--http2", "--cacert", ca, "-w", "\\n%{http_version} %{http_code}",
                                     "-H", "Cookie: a=1", "-H", "Cookie: b=2", "--data-binary", "hello",
                                     f"https://127.0.0.1:{port}/api/tls?x=1")
        assert code == 0, err
        assert out.rsplit("\n", 1)[1] == "2 200"
        code, out, err = await _curl("--http2-prior-knowledge", "-w", "\\n%{http_version} %{http_code}",
                                     f"http://127.0.0.1:{gw.port}/api/h2c")
        assert code == 0, err
        assert out.rsplit("\n", 1)[1] == "2 200"
    finally:
        await tls.shutdown(1.0)
    assert up.protocol_errors == []
    first, second = [r for r in up.requests if r.target.startswith("/api")]  # (health checks aside)
    assert (first.method, first.target, first.body) == ("POST", "/api/tls?x=1", b"hello")
    assert first.header("host") == [f"127.0.0.1:{port}"]
    assert first.header("cookie") == ["a=1; b=2"]
    assert first.header("content-length") == ["5"]
    assert (second.method, second.target) == ("GET", "/api/h2c")
    assert second.header("host") == [f"127.0.0.1:{gw.port}"]
    # No HTTP/2 pseudo-header leaks into the HTTP/1.1 request.
    assert not any(name.startswith(":") for name, _ in first.headers + second.headers)


async def test_the_access_log_and_metrics_record_the_http_version(gateway_factory: GatewayFactory,
                                                                  upstream_factory: UpstreamFactory) -> None:
    import io
    import json
    sink = io.BytesIO()
    up = await upstream_factory()
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True),
                               access_log_sink=sink, access_log=True)
    client = await H2Client.open(gw.port)
    try:
        assert (await client.request("/api/logged")).status == 200
    finally:
        await client.close()
    status, _, _ = await gw.get("/api/h1")
    assert status == 200

    def lines() -> list[dict[str, Any]]:
        gw.app[keys.ACCESS_LOG].flush()
        return [json.loads(line) for line in sink.getvalue().splitlines() if b"/api/" in line]

    await poll(lambda: len(lines()) == 2, "two access-log lines")
    assert [(e["path"], e["http_version"]) for e in lines()] == [("/api/logged", "2"), ("/api/h1", "1.1")]
    metrics = gw.app[keys.METRICS]
    assert metrics.requests_by_protocol.values[("2",)] == 1
    assert metrics.requests_by_protocol.values[("1.1",)] >= 1


async def test_a_handler_that_returns_without_finishing_its_answer_ends_the_stream() -> None:
    async def handler(ex: Exchange, out: Any) -> None:
        if ex.path == "/started":
            out.start(ex, 200, [], None)
            out.write(b"partial")
        elif ex.path == "/raises":
            raise RuntimeError("a bug in the pipeline")

    server = HttpServer(handler, LimitSettings(), http2=Http2Settings(cleartext=True))
    port = await server.listen("127.0.0.1", 0)
    client = await H2Client.open(port)
    try:
        answers = [await client.request(p) for p in ("/silent", "/started", "/raises")]
        assert [a.reset for a in answers[:2]] == [8, 2]  # CANCEL before an answer, INTERNAL_ERROR during one
        assert answers[2].status == 500  # as on HTTP/1.1: a pipeline bug before any answer is the envelope
        assert b'"status_code": 500' in answers[2].body
        assert (await client.request("/silent")).reset == 8  # the connection is still usable
    finally:
        await client.close()
        await server.shutdown(1.0)


async def test_an_idle_http2_connection_is_closed_with_goaway(gateway_factory: GatewayFactory,
                                                              upstream_factory: UpstreamFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]),
                               http2=Http2Settings(cleartext=True), client_idle_timeout_s=0.5)
    raw = await RawH2.open(gw.port)
    try:
        await raw.read_until_closed(deadline_s=5)
        goaways = [f for f in raw.frames() if isinstance(f, GoAwayFrame)]
        assert [g.error_code for g in goaways] == [0]
    finally:
        raw.close()
    await poll(lambda: not gw.server.connections, "the connection is gone")


async def test_frames_after_a_client_goaway_end_in_a_lingering_close_never_a_reset(h2_gateway: Gateway) -> None:
    """A client may send frames after its own GOAWAY (h2spec 7: a GOAWAY with an unknown
    error code, then a PING). The gateway answers GOAWAY NO_ERROR and closes by lingering:
    frames already in flight are read and dropped, so the kernel never resets the
    connection and destroys the GOAWAY before the client reads it."""
    server = h2_gateway.server
    before = server.lingering_closes
    rounds, resets = 20, 0
    for _ in range(rounds):
        raw = await RawH2.open(h2_gateway.port)
        try:
            await raw.read_until(lambda fs: any(isinstance(f, SettingsFrame) for f in fs))
            goaway = GoAwayFrame(0)
            goaway.error_code = 0xFF  # unknown codes MUST NOT trigger special behaviour (RFC 9113 §7)
            raw.send(goaway)
            await raw.drain()
            raw.send(PingFrame(0, opaque_data=b"h2spec\0\0"))
            await raw.drain()
            await raw.read_until(lambda fs: any(isinstance(f, GoAwayFrame) for f in fs))
            raw.send(PingFrame(0, opaque_data=b"late\0\0\0\0"))  # in flight while the gateway closes
            await raw.drain()
            raw.writer.write_eof()  # the client's close ends the lingering at once
            resets += not await raw.closed_cleanly()
            assert [g.error_code for g in raw.frames() if isinstance(g, GoAwayFrame)] == [0]
        finally:
            raw.close()
    assert resets == 0
    assert server.lingering_closes - before == rounds
    await poll(lambda: not server.connections, "every connection is gone")


async def test_a_drain_meeting_a_connection_the_client_already_closed_raises_nothing(h2_gateway: Gateway) -> None:
    """The client closed (the event loop has not seen it yet): the drain's GOAWAY reaches a
    closed socket, whose reset arrives before the lingering close's half-close, which then
    fails (ENOTCONN). The connection is dropped and the drain goes on."""
    server = h2_gateway.server
    client = socket.create_connection(("127.0.0.1", h2_gateway.port))
    received = bytearray()

    def settled() -> bool:
        """The gateway's SETTINGS and its ACK of ours were read (so the close sends FIN, not RST)."""
        with contextlib.suppress(BlockingIOError):
            received.extend(client.recv(65536))
        frames = RawH2.parse(bytes(received))
        return len([f for f in frames if isinstance(f, SettingsFrame)]) >= 2
    try:
        client.sendall(PREFACE + SettingsFrame(0).serialize())
        client.setblocking(False)
        await poll(settled, "the SETTINGS exchange")
        assert any(isinstance(c, Http2Connection) for c in server.connections)
    finally:
        client.close()  # no event-loop turn between this close and the drain below
    await server.shutdown(1.0)
    await poll(lambda: not server.connections, "the connection is gone")


async def test_a_stream_still_uploading_after_the_clients_goaway_completes(h2_gateway: Gateway) -> None:
    """RFC 9113 §6.8: streams up to the GOAWAY's last stream id may still complete. A
    client that says GOAWAY while its upload is under way sends the rest of the body,
    gets the whole answer, and then the gateway's GOAWAY NO_ERROR and an orderly close."""
    raw = await RawH2.open(h2_gateway.port)
    try:
        first, rest = DataFrame(1), DataFrame(1)
        first.data, rest.data = b"x" * 1000, b"y" * 500
        rest.flags.add("END_STREAM")
        goaway = GoAwayFrame(0)
        raw.send(raw.headers(1, "/api/upload", end=False, method="POST"), first, goaway)
        await raw.drain()
        raw.send(PingFrame(0, opaque_data=b"stillup!"), rest)
        assert await raw.drain()
        assert await raw.closed_cleanly()
        frames = raw.frames()
        body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
        assert json.loads(body)["body"] == 1500
        assert [f.opaque_data for f in frames if isinstance(f, PingFrame) and "ACK" in f.flags] == [b"stillup!"]
        assert [(g.error_code, g.last_stream_id) for g in frames if isinstance(g, GoAwayFrame)] == [(0, 1)]
        assert not [f for f in frames if isinstance(f, RstStreamFrame)]
    finally:
        raw.close()
    await poll(lambda: not h2_gateway.server.connections, "the connection is gone")


async def test_a_client_that_expects_100_continue_gets_it_when_the_body_is_read(h2c: H2Client) -> None:
    import json
    sid = h2c.start("/api/expect", "POST", [("expect", "100-continue"), ("content-length", "5")], more=True)
    await h2c.wait_informational(sid)
    h2c.conn.send_data(sid, b"hello", end_stream=True)
    h2c.flush()
    answer = await h2c.wait(sid)
    assert answer.status == 200
    assert json.loads(answer.body)["body"] == 5


async def test_unsent_response_bytes_of_a_connection_are_bounded_and_a_reset_frees_them() -> None:
    """Streams whose client opens no window: their writers wait in `drain` once the
    connection holds `max_connection_buffer_bytes` unsent; resetting them frees it all."""
    waiting: list[int] = []

    async def handler(ex: Exchange, out: Any) -> None:
        out.start(ex, 200, [], None)
        for _ in range(100):
            out.write(b"z" * 16384)
            waiting.append(1)
            try:
                await out.drain()
            finally:
                waiting.pop()
        out.finish()

    budget = 128 * 1024
    server = HttpServer(handler, LimitSettings(max_connection_buffer_bytes=budget),
                        http2=Http2Settings(cleartext=True))
    port = await server.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = RawH2(reader, writer)
    writer.write(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize())
    try:
        for sid in range(1, 21, 2):
            raw.send(raw.headers(sid, f"/s{sid}"))
        await raw.drain()
        await poll(lambda: len(waiting) == 10, "every writer waits")
        [conn] = list(server.connections)
        assert isinstance(conn, Http2Connection)
        # Writers stop at the budget (plus one stream's low watermark and one write per stream),
        # not at 10 streams x 100 writes.
        assert 0 < conn.unsent <= budget + 64 * 1024 + 10 * 16384
        for sid in range(1, 21, 2):
            raw.send(RstStreamFrame(sid, error_code=8))
        await raw.drain()
        await poll(lambda: not waiting and conn.unsent == 0, "the resets freed every unsent byte")
    finally:
        raw.close()
        await server.shutdown(1.0)


async def test_connect_is_refused_with_405_and_never_tunnels(h2c: H2Client) -> None:
    sid = h2c.conn.get_next_available_stream_id()
    h2c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "db.internal:5432")], end_stream=True)
    h2c.answers[sid] = Answer()
    h2c.flush()
    answer = await h2c.wait(sid)
    assert answer.status == 405
    assert b"CONNECT is not supported" in answer.body


async def test_body_bytes_of_reset_or_answered_streams_go_back_to_the_connection_window() -> None:
    """Bytes buffered for a stream the client resets, or sent after the answer, are given
    back to the connection window: a connection never stalls on bytes nobody will read."""
    hold = asyncio.Event()

    async def handler(ex: Exchange, out: Any) -> None:
        if ex.path == "/early":
            out.send(ex, 200, [], b"early")  # answered without reading the body
            return
        await hold.wait()  # never reads its body
        out.send(ex, 200, [], b"late")

    window = 65535
    server = HttpServer(handler, LimitSettings(), http2=Http2Settings(
        cleartext=True, initial_window_size=window, connection_window_size=4 * window))
    port = await server.listen("127.0.0.1", 0)
    client = await H2Client.open(port)
    try:
        for round_ in range(8):  # 8 windows: twice the connection window
            sid = client.start("/held", "POST", more=True)
            for offset in range(0, window, 16384):
                client.conn.send_data(sid, b"x" * min(16384, window - offset))
            client.flush()
            await client.barrier()
            client.conn.reset_stream(sid, 8)
            client.flush()
            await client.barrier()
            assert client.conn.outbound_flow_control_window >= window, round_
        sid = client.start("/early", "POST", more=True)
        answer = await client.wait(sid)
        assert answer.status == 200
        hold.set()
        assert (await client.request("/after")).status == 200
    finally:
        await client.close()
        await server.shutdown(1.0)


async def test_trailers_end_a_streamed_answer_and_an_empty_answer_is_one_headers_frame() -> None:
    async def handler(ex: Exchange, out: Any) -> None:
        if ex.path == "/streamed":
            out.start(ex, 200, [("content-type", "application/grpc")], None)
            out.write(b"\x00\x00\x00\x00\x02hi")
            out.finish_with_trailers([("grpc-status", "0"), ("grpc-message", "ok"), ("connection", "close")])
        else:
            out.send(ex, 200, [("content-type", "application/grpc"), ("grpc-status", "14")], b"")

    server = HttpServer(handler, LimitSettings(), http2=Http2Settings(cleartext=True))
    port = await server.listen("127.0.0.1", 0)
    client = await H2Client.open(port)
    try:
        streamed = await client.request("/streamed")
        assert streamed.body == b"\x00\x00\x00\x00\x02hi"
        assert streamed.trailers == [("grpc-status", "0"), ("grpc-message", "ok")]
        only = await client.request("/trailers-only")
        assert only.header("grpc-status") == "14"
        assert only.header("content-length") is None
        assert (only.body, only.trailers) == (b"", [])
    finally:
        await client.close()
        await server.shutdown(1.0)

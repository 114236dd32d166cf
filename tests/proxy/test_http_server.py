"""The gateway's HTTP/1.1 server as clients see it on the wire: pipelining,
HTTP/1.0, chunked uploads, 100-continue, HEAD, malformed and slow requests,
idle keep-alive, upgrades the upstream refuses, client disconnects, drain,
and the access-log line. Raw sockets on loopback, real upstreams."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.harness.app_fixtures import Gateway, GatewayFactory, RawUpstreamFactory, UpstreamFactory, poll, service
from tests.harness.waiting import cancelled_while_waiting, poll_async
from vocelio_contract.config import Endpoint, GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.settings import LimitSettings
from vocelio_proxy.wire.exchange import BodyError, Exchange
from vocelio_proxy.wire.http1.heads import CONTINUE
from vocelio_proxy.wire.http1.limits import WireLimits
from vocelio_proxy.wire.server import Handler, HttpConnection, HttpServer, RequestBody

Response = tuple[int, dict[str, str], bytes]


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head_request or status in (100, 101, 204, 304):
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body
            body += chunk[:-2]
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await asyncio.wait_for(reader.read(), 5)


#: Opens a raw connection to the `wire` fixture's gateway.
Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@pytest.fixture
async def wire(gateway_factory: GatewayFactory,
               upstream_factory: UpstreamFactory) -> AsyncIterator[tuple[Gateway, Connect]]:
    """A gateway with one echoing service, and a function that opens raw connections to it."""
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    port = gw.port
    opened: list[asyncio.StreamWriter] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened.append(writer)
        return reader, writer

    yield gw, connect
    for writer in opened:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    writer.write(b"".join(
        f"GET /api/v1/svc/{i} HTTP/1.1\r\nHost: t\r\nX-Request-ID: r{i}\r\n\r\n".encode() for i in range(5)))
    for i in range(5):
        status, headers, body = await read_response(reader)
        assert status == 200
        assert headers["x-request-id"] == f"r{i}"
        assert json.loads(body)["path"] == f"/{i}"


async def test_http_1_0_clients_get_close_unless_they_ask_for_keep_alive(wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    writer.write(b"GET /api/v1/svc/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200
    assert headers["connection"] == "keep-alive"
    writer.write(b"GET /api/v1/svc/b HTTP/1.0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_chunked_uploads_reach_the_upstream_whole(wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    writer.write(b"POST /api/v1/svc/up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 200
    assert json.loads(body)["body"] == 11


async def test_expect_100_continue_gets_an_interim_answer_before_the_body_is_sent(
        wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    writer.write(b"PUT /api/v1/svc/up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = await read_response(reader)
    assert status == 100
    writer.write(b"data")
    status, _, body = await read_response(reader)
    assert status == 200
    assert json.loads(body)["body"] == 4


async def test_head_on_a_gateway_endpoint_has_headers_and_no_body(wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    writer.write(b"HEAD /livez HTTP/1.1\r\nHost: t\r\n\r\nGET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, _ = await read_response(reader, head_request=True)
    assert status == 200
    assert int(headers["content-length"]) > 0
    status, _, body = await read_response(reader)
    assert status == 200
    assert json.loads(body) == {"status": "alive"}


async def test_gateway_endpoints_refuse_other_methods_with_405(wire: tuple[Gateway, Connect]) -> None:
    gw, _ = wire
    status, headers, body = await gw.request("POST", "/health")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(body)["status_code"] == 405


async def test_connect_is_refused(wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 405
    assert json.loads(body)["error"] == "Method not allowed"


async def test_a_malformed_request_gets_a_400_envelope_and_the_connection_closes(wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    writer.write(b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\n\r\nNONSENSE\x01 / HTTP/9\r\n\r\n")
    status, _, _ = await read_response(reader)
    assert status == 200
    status, headers, body = await read_response(reader)
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(body)["status_code"] == 400
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_slow_request_head_gets_408_and_an_idle_connection_is_closed(gateway_factory: GatewayFactory,
                                                                             upstream_factory: UpstreamFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]),
                               client_header_timeout_s=0.5, client_idle_timeout_s=0.5)
    port = gw.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\n")  # the head never ends
    status, _, body = await read_response(reader)
    assert status == 408
    assert json.loads(body)["status_code"] == 408
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the idle timeout
    writer.close()


async def test_an_upgrade_the_upstream_refuses_is_answered_and_closed(gateway_factory: GatewayFactory,
                                                                      upstream_factory: UpstreamFactory) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.json_response({"refused": True}, status=403)

    up = await upstream_factory(refuse)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /api/v1/svc/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 403
    assert json.loads(body) == {"refused": True}
    assert headers["connection"] == "close"
    assert "x-request-id" in headers
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_client_that_disconnects_releases_its_upstream_request(gateway_factory: GatewayFactory) -> None:
    upstream_closed = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /health"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await reader.read()
        elif await reader.read() == b"":  # never answers; waits for the gateway to hang up
            upstream_closed.set()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await gateway_factory(GatewayConfig(services=[service("svc", Endpoint(address="127.0.0.1", port=port))]))
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /api/v1/svc/slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await poll_async("request in flight", _in_flight(gw, 1), 5)
    writer.close()
    await asyncio.wait_for(upstream_closed.wait(), 5)
    assert upstream_closed.is_set()  # the gateway hung up on the upstream without an answer
    await poll_async("request finished", _in_flight(gw, 0), 5)
    assert gw.app[keys.METRICS].in_flight_count == 0
    assert gw.app[keys.METRICS].requests_by_class()[("svc", "GET", "4xx")] == 1  # recorded as 499
    assert gw.app[keys.POOL].idle_count() == 0  # the abandoned connection was not pooled
    server.close()


def _in_flight(gw: Gateway, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(gw.app[keys.METRICS].in_flight_count == count)

    return check


async def test_server_level_refusals_are_counted(wire: tuple[Gateway, Connect]) -> None:
    gw, connect = wire
    reader, writer = await connect()
    writer.write(b"BROKEN\r\n\r\n")
    assert (await read_response(reader))[0] == 400
    assert gw.app[keys.METRICS].requests_by_class()[("gateway", "OTHER", "4xx")] == 1


async def test_each_request_writes_one_json_access_log_line(gateway_factory: GatewayFactory,
                                                            upstream_factory: UpstreamFactory) -> None:
    up = await upstream_factory()
    sink = io.BytesIO()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]), access_log=True,
                               access_log_sink=sink)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b'GET /api/v1/svc/a"b?token=secret HTTP/1.1\r\nHost: t\r\nX-Request-ID: log-1\r\n\r\n')
    assert (await read_response(reader))[0] == 200
    writer.close()
    status, _, _ = await gw.get("/nowhere")
    assert status == 404
    gw.app[keys.ACCESS_LOG].flush()
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["request_id"] == "log-1"
    assert first["status"] == 200
    assert first["service"] == "svc"
    assert first["path"] == '/api/v1/svc/a"b'
    assert "secret" not in sink.getvalue().decode()
    assert first["upstream"] == f"127.0.0.1:{up.port}"
    assert first["attempts"] == 1
    assert lines[1]["status"] == 404
    assert lines[1]["upstream"] is None



async def test_an_upstream_that_dies_mid_body_leaves_the_client_a_truncated_response(
        gateway_factory: GatewayFactory, raw_upstream: RawUpstreamFactory, caplog: pytest.LogCaptureFixture) -> None:
    part = b"x" * 100_000

    def respond(head: bytes) -> bytes | None:
        if head.startswith(b"GET /health"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        # A chunked body that stops without its last chunk, then stalls: the idle timeout ends it.
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(part), part)

    port = await raw_upstream(respond)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", Endpoint(address="127.0.0.1", port=port),
                                                               timeouts={"idle_s": 0.5})]))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /api/v1/svc/big HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    rest = await asyncio.wait_for(reader.read(), 5)  # until the gateway cuts the stream
    assert part[:1000] in rest
    assert not rest.endswith(b"0\r\n\r\n")  # never the terminating chunk of a complete body
    writer.close()
    registry = gw.app[keys.METRICS].registry
    assert registry.get_sample_value("vocelio_upstream_errors_total", {"service": "svc", "kind": "timeout"}) == 1
    assert "unhandled error" not in caplog.text
    assert "mid-response" in caplog.text


async def test_upgrade_requests_get_the_same_header_hygiene(gateway_factory: GatewayFactory,
                                                            upstream_factory: UpstreamFactory) -> None:
    seen: dict[str, str] = {}

    async def ws(request: web.Request) -> web.StreamResponse:
        seen.update(request.headers)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.close()  # the upstream ends the session: the client must see the close
        return sock

    up = await upstream_factory(ws)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    async with gw.session.ws_connect(gw.url + "/api/v1/svc/socket", headers={
            "X-Vocelio-User": "admin", "X-Forwarded-For": "6.6.6.6", "X-Request-ID": "ws-1"}) as sock:
        msg = await sock.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert "X-Vocelio-User" not in seen
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Request-ID"] == "ws-1"
    assert seen["X-Vocelio-Auth-Method"] == "anonymous"


# -- the wire core's guarantees at the server (see docs/security/wire.md) ------------------------------


async def test_pipelined_requests_beyond_the_budget_are_all_answered_in_order(gateway_factory: GatewayFactory,
                                                                            upstream_factory: UpstreamFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]),
                               limits={"max_pipelined_requests": 3, "max_connection_buffer_bytes": 16384})
    requests = []
    for i in range(300):
        if i % 3 == 2:
            body = f"body-{i}".encode() * (i % 7 + 1)
            requests.append(f"POST /api/v1/svc/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                            f"X-Request-ID: r{i}\r\n\r\n".encode() + body)
        elif i % 3 == 1:
            requests.append(f"PUT /api/v1/svc/{i} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                            f"X-Request-ID: r{i}\r\n\r\n3\r\nabc\r\n0\r\n\r\n".encode())
        else:
            requests.append(f"GET /api/v1/svc/{i} HTTP/1.1\r\nHost: t\r\nX-Request-ID: r{i}\r\n\r\n".encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"".join(requests))
    for i in range(300):
        status, headers, body = await read_response(reader)
        assert status == 200
        assert headers["x-request-id"] == f"r{i}"
        echoed = json.loads(body)
        assert echoed["path"] == f"/{i}"
        expected = len(f"body-{i}") * (i % 7 + 1) if i % 3 == 2 else 3 if i % 3 == 1 else 0
        assert echoed["body"] == expected
    writer.close()


async def test_requests_split_at_every_byte_are_read_the_same(wire: tuple[Gateway, Connect]) -> None:
    _, connect = wire
    reader, writer = await connect()
    data = (b"POST /api/v1/svc/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;x=y\r\nabcd\r\n0\r\nX-Trailer: t\r\n\r\n"
            b"GET http://t/api/v1/svc/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
    status, _, body = await read_response(reader)
    assert status == 200
    assert json.loads(body)["body"] == 4
    status, _, body = await read_response(reader)
    echoed = json.loads(body)
    assert status == 200
    assert echoed["path"] == "/b?q=1"
    assert echoed["headers"]["Host"] == "t"


async def _bare_server(handler: Handler, **limits: Any) -> tuple[HttpServer, int]:
    server = HttpServer(handler, LimitSettings(**limits), header_timeout_s=2.0, idle_timeout_s=5.0)
    port = await server.listen("127.0.0.1", 0)
    return server, port


async def test_a_stalled_body_ends_even_when_the_handler_never_reads_it() -> None:
    ended = asyncio.Event()

    async def never_reads(ex: Exchange, out: HttpConnection) -> None:
        try:
            await asyncio.sleep(3600)  # waiting on something else (an upstream, a lock...)
        finally:
            ended.set()

    server, port = await _bare_server(never_reads, client_body_timeout_s=0.4)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial")
        started = asyncio.get_running_loop().time()
        status, headers, body = await read_response(reader)
        assert status == 408
        assert headers["connection"] == "close"
        assert json.loads(body)["status_code"] == 408
        assert asyncio.get_running_loop().time() - started < 2.0
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.wait_for(ended.wait(), 5)  # the handler was cancelled and cleaned up
        writer.close()
        await poll(lambda: not server.connections, "connection forgotten")
    finally:
        await server.shutdown(1.0)


async def test_a_malformed_chunk_ends_a_request_whose_handler_is_busy() -> None:
    ended = asyncio.Event()

    async def busy(ex: Exchange, out: HttpConnection) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()

    server, port = await _bare_server(busy)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await asyncio.sleep(0.1)
        writer.write(b"xyz\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 400
        assert headers["connection"] == "close"
        await asyncio.wait_for(ended.wait(), 5)
        writer.close()
    finally:
        await server.shutdown(1.0)


async def test_a_body_reader_gets_body_error_after_the_body_breaks() -> None:
    class Conn:
        def pause_for_body(self) -> None: ...
        def resume_for_body(self) -> None: ...
        def write_raw(self, data: bytes) -> None: ...

    body = RequestBody(Conn(), False, WireLimits())
    body.feed(b"abc")
    body.fail(BodyError(408, "stalled"))
    got: list[bytes] = []

    async def read_all() -> None:
        async for chunk in body.chunks():
            got.append(chunk)

    with pytest.raises(BodyError) as failure:
        await read_all()
    assert got == [b"abc"]  # what arrived is still delivered first
    assert failure.value.status == 408


class RecordingConn:
    """What a `RequestBody` needs of its connection, recording what it is told."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.resumed = 0

    def pause_for_body(self) -> None: ...

    def resume_for_body(self) -> None:
        self.resumed += 1

    def write_raw(self, data: bytes) -> None:
        self.written.append(data)


async def test_the_100_continue_goes_out_on_the_first_read_of_the_body_and_only_once() -> None:
    conn = RecordingConn()
    body = RequestBody(conn, True, WireLimits())
    chunks = body.chunks()
    assert conn.written == []  # asking for the iterator invites nothing: a handler may answer first
    first = asyncio.ensure_future(anext(chunks))
    await poll(lambda: conn.written == [CONTINUE], "the 100 Continue written")
    body.feed(b"abc")
    assert await asyncio.wait_for(first, 5) == b"abc"
    body.feed(b"def")
    body.finish()
    assert [chunk async for chunk in body.chunks()] == [b"def"]
    assert conn.written == [CONTINUE]


async def test_a_body_reader_cancelled_while_waiting_loses_nothing_and_a_later_reader_goes_on() -> None:
    conn = RecordingConn()
    body = RequestBody(conn, False, WireLimits())
    chunks = body.chunks()
    body.feed(b"early")
    assert await anext(chunks) == b"early"
    assert await cancelled_while_waiting(chunks, lambda: body._waiter is not None, "the reader waits for the client")
    assert body._waiter is None
    body.feed(b"late")
    body.finish()
    # The same iterator (a read-ahead that stopped) and its end, as an async generator gave.
    assert [chunk async for chunk in chunks] == [b"late"]
    assert await anext(body.chunks(), None) is None
    assert conn.resumed == 2  # each chunk taken below the low watermark lets reading resume


async def test_a_client_that_never_takes_its_answers_is_disconnected_after_the_send_timeout() -> None:
    async def big(ex: Exchange, out: HttpConnection) -> None:
        out.start(ex, 200, [("Content-Type", "application/octet-stream")], None)
        block = b"x" * 65536
        while True:
            out.write(block)
            await out.drain()

    server, port = await _bare_server(big, client_send_timeout_s=0.5)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        await poll(lambda: len(server.connections) == 1, "connection accepted")
        await poll(lambda: not server.connections, "the stuck connection was dropped", deadline_s=6)
        assert not server.connections
        sock.close()
    finally:
        await server.shutdown(1.0)

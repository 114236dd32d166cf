"""The upstream HTTP/1.1 reader against exact bytes: chunked, close-delimited,
HEAD, interim 1xx, 204, malformed and ambiguous responses, trailers, bytes
after an answer, and slow heads."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.harness.app_fixtures import GatewayFactory, RawUpstreamFactory, poll, service
from tests.harness.waiting import cancelled_while_waiting
from vocelio_contract.config import Endpoint, GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.wire.upstream import UpstreamError, UpstreamPool, request_head


def gateway_config(port: int) -> GatewayConfig:
    return GatewayConfig(services=[service("raw", Endpoint(address="127.0.0.1", port=port),
                                           health_check={"enabled": False})])


async def test_chunked_responses_are_decoded_and_reframed(raw_upstream: RawUpstreamFactory,
                                                          gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    status, _, body = await gw.get("/api/v1/raw/x")
    assert (status, body) == (200, b"hello world")


async def test_close_delimited_bodies_end_at_eof(raw_upstream: RawUpstreamFactory,
                                                 gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    gw = await gateway_factory(gateway_config(port))
    for _ in range(2):  # the closed connection is not reused
        status, _, body = await gw.get("/api/v1/raw/x")
        assert (status, body) == (200, b"until the end")


async def test_head_responses_keep_content_length_without_a_body(raw_upstream: RawUpstreamFactory,
                                                                 gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    for _ in range(3):  # each on a fresh connection: a head that announced bytes is not reused
        status, headers, body = await gw.request("HEAD", "/api/v1/raw/x")
        assert (status, body, headers["Content-Length"]) == (200, b"", "1234")


async def test_interim_1xx_responses_are_skipped(raw_upstream: RawUpstreamFactory,
                                                 gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 100 Continue\r\n\r\n"
                              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    gw = await gateway_factory(gateway_config(port))
    status, _, body = await gw.request("POST", "/api/v1/raw/x", data=b"abc")
    assert (status, body) == (200, b"ok")


async def test_no_content_responses_have_no_body(raw_upstream: RawUpstreamFactory,
                                                 gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 204 No Content\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    for _ in range(2):
        status, _, body = await gw.request("DELETE", "/api/v1/raw/x")
        assert (status, body) == (204, b"")


async def test_a_malformed_response_is_a_502_envelope(raw_upstream: RawUpstreamFactory,
                                                      gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"NOT HTTP AT ALL\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    status, _, body = await gw.request("POST", "/api/v1/raw/x", data=b"1")
    assert status == 502
    assert b"sent an invalid response" in body  # what happened, never the parser's text


async def test_a_reused_connection_times_out_at_its_own_request_deadline(raw_upstream: RawUpstreamFactory) -> None:
    # The first request answers at once; the second never does. The connection's timer
    # was armed for the first request's long deadline and must not delay the second's.
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None])
    port = await raw_upstream(lambda head: next(answers, None) or b"")
    pool = UpstreamPool()
    try:
        conn = await pool.acquire("127.0.0.1", port, 1.0)
        first = await conn.start_request(request_head("GET", "/a", "t", [], 0), "GET", 60.0)
        assert first.status == 200
        assert conn.body_complete_buffered() == b"ok"
        pool.release(conn)
        again = await pool.acquire("127.0.0.1", port, 1.0)
        assert again is conn
        assert again.reused
        started = time.monotonic()
        with pytest.raises(UpstreamError) as failure:
            await asyncio.wait_for(again.start_request(request_head("GET", "/b", "t", [], 0), "GET", 0.3), 5)
        assert failure.value.kind == "timeout"
        assert 0.25 <= time.monotonic() - started < 2.0
    finally:
        pool.close()


async def test_a_body_reader_stopped_while_waiting_leaves_no_idle_deadline_behind(
        raw_upstream: RawUpstreamFactory) -> None:
    # Ten bytes announced, three sent, then silence: the reader waits under the idle timeout.
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    pool = UpstreamPool()
    try:
        conn = await pool.acquire("127.0.0.1", port, 1.0)
        await conn.start_request(request_head("GET", "/a", "t", [], 0), "GET", 5.0)
        chunks = conn.iter_body(0.2)
        assert await anext(chunks) == b"abc"
        assert await cancelled_while_waiting(chunks, lambda: conn._waiter is not None, "the reader waits for the rest")
        assert conn._waiter is None
        # Past the idle timeout nobody is reading: the abandoned wait's deadline must not
        # fail the connection (its owner decides what happens to it).
        await asyncio.sleep(0.5)
        assert not conn.closed
        with pytest.raises(UpstreamError) as idle:
            await anext(conn.iter_body(0.2))  # a reader again: the idle timeout applies to it
        assert idle.value.kind == "timeout"
    finally:
        pool.close()


# -- which answers leave a connection reusable (the pool never desynchronises) ----------------------

REUSE = {
    "200 with a length": ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
    "204 plain": ("DELETE", b"HTTP/1.1 204 No Content\r\n\r\n", True),
    "204 with a zero length": ("DELETE", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", True),
    "304 plain": ("GET", b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n", True),
    "HEAD with a zero length": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    "100 then 200": ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
    "204 announcing a length": ("DELETE", b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", False),
    "204 announcing chunks": ("DELETE", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    "304 announcing a length": ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", False),
    "304 announcing chunks": ("GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    "HEAD with a length": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", False),
    "HEAD chunked": ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    "HEAD with no length": ("HEAD", b"HTTP/1.1 200 OK\r\n\r\n", False),
    "HEAD answered with a body": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                                          b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    "a 204 followed by more bytes": ("DELETE", b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", False),
}


@pytest.mark.parametrize(("method", "answer", "reusable"), REUSE.values(), ids=REUSE.keys())
async def test_a_connection_is_pooled_again_only_when_its_answer_cannot_have_more_bytes_coming(
        raw_upstream: RawUpstreamFactory, method: str, answer: bytes, reusable: bool) -> None:
    port = await raw_upstream(lambda head: answer)
    pool = UpstreamPool()
    try:
        conn = await pool.acquire("127.0.0.1", port, 1.0)
        response = await conn.start_request(request_head(method, "/a", "t", [], 0), method, 5.0)
        assert response.status in (200, 204, 304)
        await asyncio.sleep(0.05)  # any bytes written with the answer have arrived
        assert conn.reusable is reusable
        pool.release(conn)
        assert pool.idle_count() == (1 if reusable else 0)
    finally:
        pool.close()


@pytest.mark.parametrize("interim", [b"HTTP/1.1 150 Odd\r\nContent-Length: 5\r\n\r\nEVIL!",
                                     b"HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n"],
                         ids=["150 with a length", "100 chunked"])
async def test_an_interim_answer_announcing_a_body_is_a_protocol_error(raw_upstream: RawUpstreamFactory,
                                                                       interim: bytes) -> None:
    port = await raw_upstream(lambda head: interim + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pool = UpstreamPool()
    try:
        conn = await pool.acquire("127.0.0.1", port, 1.0)
        with pytest.raises(UpstreamError) as failure:
            await conn.start_request(request_head("GET", "/a", "t", [], 0), "GET", 5.0)
        assert failure.value.kind == "protocol"
        assert "announces a body" in str(failure.value)
    finally:
        pool.close()


# -- upstream framing per RFC 9112 §6.3 (the core's `upstream_body_framing`) ---------------------------

@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"HTTP/1.1 999 Nonsense\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"Content-Length: 0\r\n\r\n",
], ids=["cl-te", "te-cl", "cl-twice", "cl-list", "status-999", "obs-fold", "huge-header", "too-many-headers"])
async def test_an_upstream_answer_two_readers_could_frame_differently_is_a_502(raw_upstream: RawUpstreamFactory,
                                                                               gateway_factory: GatewayFactory,
                                                                               answer: bytes) -> None:
    port = await raw_upstream(lambda head: answer)
    gw = await gateway_factory(gateway_config(port))
    status, headers, body = await gw.get("/api/v1/raw/x")
    assert status == 502, body
    assert b"sent an invalid response" in body
    assert "X-Big" not in headers
    assert "X-A" not in headers
    assert gw.app[keys.POOL].idle_count() == 0


async def test_upstream_trailers_never_become_response_headers(raw_upstream: RawUpstreamFactory,
                                                               gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                              b"Trailer: Set-Cookie\r\n\r\n2\r\nok\r\n0\r\nSet-Cookie: session=evil\r\n"
                              b"X-Trailer: t\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    for _ in range(2):  # the whole answer arrives in one read, before the head is passed on
        status, headers, body = await gw.get("/api/v1/raw/x")
        assert (status, body) == (200, b"ok")
        assert "Set-Cookie" not in headers
        assert "X-Trailer" not in headers


async def test_bytes_after_a_complete_answer_never_become_a_second_answer(raw_upstream: RawUpstreamFactory,
                                                                          gateway_factory: GatewayFactory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                              b"HTTP/1.1 200 OK\r\nX-Injected: 1\r\nContent-Length: 0\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    status, headers, body = await gw.get("/api/v1/raw/x")
    assert (status, body) == (200, b"ok")
    assert "X-Injected" not in headers
    await poll(lambda: gw.app[keys.POOL].idle_count() == 0, "the connection is not reused")


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip"])
async def test_a_transfer_coding_not_ending_in_chunked_is_read_until_close(raw_upstream: RawUpstreamFactory,
                                                                           gateway_factory: GatewayFactory,
                                                                           coding: bytes) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding
                              + b"\r\nConnection: close\r\n\r\nraw bytes")
    gw = await gateway_factory(gateway_config(port))
    status, _, body = await gw.get("/api/v1/raw/x")
    assert (status, body) == (200, b"raw bytes")
    assert gw.app[keys.POOL].idle_count() == 0


async def test_an_upstream_that_trickles_its_head_times_out(gateway_factory: GatewayFactory) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /health"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await gateway_factory(GatewayConfig(services=[service(
        "raw", Endpoint(address="127.0.0.1", port=port), health_check={"enabled": False},
        timeouts={"request_s": 0.5}, retry={"attempts": 1})]))
    started = time.monotonic()
    status, _, _ = await gw.get("/api/v1/raw/x")
    assert status == 504
    assert time.monotonic() - started < 3
    server.close()
